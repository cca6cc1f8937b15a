"""Writes the hand-made inputs of tests/prepare_golden.rs (deterministic: a fixed seed, no
dependencies beyond the standard library). `criteo-synth-600.txt` is not made here: it is
`mlet data synth --rows 600 --seed 11`. Run from this directory: python3 make_inputs.py"""
import random

rng = random.Random(20240610)


def zipf_value(prefix, n):
    """A value of a field with about n distinct values, the first ones far more frequent."""
    k = int(n ** rng.random())
    return f"{prefix}{k:x}"


def criteo_edge():
    """Criteo TSV lines: every kind of dense integer (missing, negative, large, signed, padded),
    skewed categories (so that min_count matters), empty and non-UTF-8 values, CRLF endings, and
    malformed lines (only prepared with --skip-bad-lines), ending without a newline."""
    ints = ["", "0", "1", "7", "-1", "-3", "1023", "1024", "65535", "123456789",
            "9223372036854775807", "+5", " 12", "3 ", "00042"]
    lines = []
    for i in range(400):
        label = str(rng.randint(0, 1))
        dense = [rng.choice(ints) if rng.random() < 0.3 else str(rng.randint(0, 2000))
                 for _ in range(13)]
        cats = []
        for f in range(26):
            r = rng.random()
            if r < 0.08:
                cats.append(b"")
            elif r < 0.1:
                cats.append(bytes([0xff, 0x41 + f % 20, 0xfe]))
            else:
                cats.append(zipf_value("%02d" % f, 4 + 40 * f).encode())
        line = "\t".join([label] + dense).encode() + b"\t" + b"\t".join(cats)
        end = b"\r\n" if i % 17 == 3 else b"\n"
        lines.append(line + end)
    bad = [
        b"2" + b"\t" * 39 + b"\n",                      # label 2
        b"1\t1.5" + b"\t" * 38 + b"\n",                 # float in an integer column
        b"\n",                                          # empty line
        b"0\t1\t2\n",                                   # too few columns
        b"0" + b"\t" * 40 + b"\n",                      # too many columns
        b"1\tx" + b"\t" * 38 + b"\n",                   # not a number
    ]
    for j, b in enumerate(bad):
        lines.insert(37 + 53 * j, b)
    with open("criteo-edge.txt", "wb") as f:
        f.write(b"".join(lines))
        f.write(b"1\t2\t3")                              # truncated last line


def mixed_csv():
    """A CSV with a header for a schema of every transform: quoted values (with commas and
    doubled quotes), timestamps, floats (exponents, signs, spaces, -0), an ignored id column, and
    a few malformed lines."""
    header = "id,click,ts,price,age,user,item,city,note"
    rows = [header]
    for i in range(500):
        day = rng.randint(1, 28)
        ts = f"14{rng.randint(1, 12):02d}{day:02d}{rng.randint(0, 23):02d}"
        price = rng.choice(["", "0", "3.5", "-2", "1e3", "2.5E-2", " 7 ", "-0", "12345.678",
                            str(rng.randint(0, 500)), str(rng.random() * 100)])
        age = rng.choice(["", "-0", "0.1", "12", "-7.25", "33", str(rng.randint(18, 90))])
        user = zipf_value("u", 300)
        item = rng.choice([zipf_value("i", 60), '"a,b"', '"say ""hi"""', '""', "plain"])
        city = rng.choice(["Paris", "Zürich", "São Paulo", "", '"Washington, D.C."'])
        note = zipf_value("n", 20)
        rows.append(",".join([str(10_000 + i), str(rng.randint(0, 1)), ts, price, age, user,
                              item, city, note]))
    bad = [
        "9,1,14133100,1,1,u,i,c,n",        # month 13
        "9,0,14010100,abc,1,u,i,c,n",      # not a number
        '9,0,14010100,1,1,"u,i,c,n',       # unclosed quote
        "9,3,14010100,1,1,u,i,c,n",        # label 3
        "9,1,14010100,inf,1,u,i,c,n",      # not finite
    ]
    for j, b in enumerate(bad):
        rows.insert(41 + 97 * j, b)
    with open("mixed.csv", "w", newline="") as f:
        f.write("\n".join(rows) + "\n")


def avazu():
    """Avazu-shaped rows (header, 24 columns, `hour` timestamps)."""
    cols = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
            "site_category", "app_id", "app_domain", "app_category", "device_id", "device_ip",
            "device_model", "device_type", "device_conn_type", "C14", "C15", "C16", "C17",
            "C18", "C19", "C20", "C21"]
    rows = [",".join(cols)]
    for i in range(300):
        vals = [str(10 ** 18 + i * 7919), str(int(rng.random() < 0.2)),
                f"1410{21 + i // 40:02d}{i % 24:02d}"]
        vals += [zipf_value(c[:2], 3 + 5 * k) for k, c in enumerate(cols[3:])]
        rows.append(",".join(vals))
    with open("avazu.csv", "w", newline="") as f:
        f.write("\n".join(rows) + "\n")


criteo_edge()
mixed_csv()
avazu()
