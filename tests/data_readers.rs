//! Raw-format readers: Criteo (on the real 200-row sample), Avazu, generic CSV/TSV, malformed
//! input, and the min-count threshold.
use mlet::data::{prepare, Dataset, InputFormat, PrepareOptions, Split, SplitRule};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

fn sample_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/criteo-sample/criteo_sample.csv")
}

/// The sample in raw Criteo form: no header, tabs, integer dense values. Returns the rows' columns.
fn write_raw_criteo(path: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(sample_csv()).expect("criteo sample");
    let mut rows = Vec::new();
    let mut out = String::new();
    for line in text.lines().skip(1) {
        let mut cols: Vec<String> = line.split(',').map(str::to_string).collect();
        assert_eq!(cols.len(), 40);
        for c in &mut cols[1..14] {
            if !c.is_empty() {
                *c = (c.parse::<f64>().unwrap() as i64).to_string();
            }
        }
        out.push_str(&cols.join("\t"));
        out.push('\n');
        rows.push(cols);
    }
    fs::write(path, out).unwrap();
    rows
}

fn err_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn criteo_sample_day_split() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("sample.txt");
    let rows = write_raw_criteo(&raw);
    assert_eq!(rows.len(), 200);
    let out = dir.path().join("cache");
    let report = prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &out)).unwrap();
    // floor(200 * 6 / 7) = 171 train; the remaining 29: 14 valid, 15 test.
    assert_eq!(
        (report.rows.train, report.rows.valid, report.rows.test),
        (171, 14, 15)
    );
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.meta.split, SplitRule::Days);
    assert_eq!((ds.num_dense(), ds.num_fields()), (13, 26));
    assert_eq!(ds.meta.field_names[0], "C1");
    assert_eq!(ds.meta.dense_names[12], "I13");

    // Row 0: ,3,260,,17668,,,33,,,,0, -> ln(1 + x), missing = 0.
    let train = ds.split(Split::Train);
    let want = [
        0.0,
        4f64.ln(),
        261f64.ln(),
        0.0,
        17669f64.ln(),
        0.0,
        0.0,
        34f64.ln(),
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    for (got, want) in train.row_dense(0).iter().zip(want) {
        assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
    }
    // Row 1 has I2 = -1, clamped to 0.
    assert_eq!(rows[1][2], "-1");
    assert_eq!(train.row_dense(1)[1], 0.0);
    assert_eq!(train.label[0], 0.0);

    for f in 0..26 {
        let train_values: HashSet<&str> = rows[..171].iter().map(|r| r[14 + f].as_str()).collect();
        assert_eq!(ds.cardinalities()[f], train_values.len() + 1, "field {f}");
        let freq = ds.field_frequencies(f);
        assert_eq!(freq.iter().map(|&c| c as usize).sum::<usize>(), 171);
        assert_eq!(
            freq[0], 0,
            "min_count 1 leaves no training row out of vocabulary"
        );
        // Same value <-> same index, in every split; unseen in training -> 0.
        let mut index_of: HashMap<&str, u32> = HashMap::new();
        for (i, r) in rows[..171].iter().enumerate() {
            let idx = train.row_cat(i)[f];
            assert!(idx > 0);
            assert_eq!(*index_of.entry(&r[14 + f]).or_insert(idx), idx);
        }
        for (split, range) in [(Split::Valid, 171..185), (Split::Test, 185..200)] {
            let d = ds.split(split);
            for (i, r) in rows[range].iter().enumerate() {
                let want = index_of.get(r[14 + f].as_str()).copied().unwrap_or(0);
                assert_eq!(d.row_cat(i)[f], want);
            }
        }
    }
    // The sample has values unseen in training in valid/test (else the check above is vacuous).
    let unseen = (0..14)
        .map(|i| {
            ds.split(Split::Valid)
                .row_cat(i)
                .iter()
                .filter(|&&c| c == 0)
                .count()
        })
        .sum::<usize>();
    assert!(unseen > 0);
    assert_eq!(
        ds.train_frequencies().len(),
        ds.cardinalities().iter().sum::<usize>()
    );
}

fn criteo_line(label: &str, dense: &str, cat: &str) -> String {
    let mut cols = vec![label.to_string()];
    cols.extend((0..13).map(|_| dense.to_string()));
    cols.extend((0..26).map(|i| format!("{cat}{i:02}")));
    cols.join("\t") + "\n"
}

#[test]
fn malformed_input_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let good = criteo_line("1", "5", "ab");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "columns",
            format!("{good}{good}{}\n{good}", "0\t1\t2"),
            "line 3, column 4: expected 40 tab-separated columns, found 3 columns",
        ),
        (
            "integer",
            format!("{good}{good}{good}{}", criteo_line("0", "1.5", "x")),
            "line 4, column 2 (I1): expected an integer",
        ),
        (
            "label",
            format!("{good}{}{good}", criteo_line("2", "1", "x")),
            "line 2, column 1 (label): expected a label 0 or 1, found \"2\"",
        ),
        (
            "truncated",
            format!("{good}{good}{}", &good[..good.len() - 5]),
            "line 3, column 40 (C26): expected a newline at the end of the line",
        ),
        (
            "empty",
            String::new(),
            "line 1, column 1: expected at least one data line",
        ),
    ];
    for (name, text, want) in cases {
        let input = dir.path().join(format!("{name}.txt"));
        fs::write(&input, &text).unwrap();
        let out = dir.path().join(format!("{name}-cache"));
        let mut opts = PrepareOptions::new(&input, InputFormat::Criteo, &out);
        let msg = err_text(prepare(&opts));
        assert!(msg.contains(&input.display().to_string()), "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(!out.exists(), "{name}: no cache after a failure");
        if name != "empty" {
            opts.skip_bad_lines = true;
            let report = prepare(&opts).unwrap();
            let lines = text.lines().count();
            assert_eq!(report.skipped_lines, 1, "{name}");
            assert_eq!(report.rows.total(), lines - 1, "{name}");
            assert_eq!(Dataset::open(&out).unwrap().meta.skipped_lines, 1);
        }
    }
    // Only temporary directories of failed runs would be left; there must be none.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn all_lines_bad_is_an_error_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.txt");
    fs::write(&input, "x\ty\nz\n").unwrap();
    let mut opts = PrepareOptions::new(&input, InputFormat::Criteo, dir.path().join("c"));
    opts.skip_bad_lines = true;
    let msg = err_text(prepare(&opts));
    assert!(
        msg.contains("no data rows") && msg.contains("2 lines"),
        "{msg}"
    );
}

#[test]
fn avazu_reader() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("avazu.csv");
    let mut text = String::from("id,click,hour,C1,banner_pos,site_id,device_ip\n");
    for i in 0..50 {
        text += &format!(
            "{},{},141021{:02},1005,{},site{},ip{}\r\n",
            1000 + i,
            i % 3 % 2,
            i % 24,
            i % 2,
            i % 5,
            i
        );
    }
    fs::write(&input, &text).unwrap();
    let out = dir.path().join("cache");
    let mut opts = PrepareOptions::new(&input, InputFormat::Avazu, &out);
    opts.split = SplitRule::Random {
        valid_fraction: 0.0,
        test_fraction: 0.0,
    };
    let report = prepare(&opts).unwrap();
    assert_eq!(report.rows.train, 50);
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(
        ds.meta.field_names,
        ["C1", "banner_pos", "site_id", "device_ip"]
    );
    assert_eq!(ds.meta.dense_names, ["hour"]);
    assert_eq!(ds.cardinalities(), [2, 3, 6, 51]);
    let train = ds.split(Split::Train);
    for i in 0..50 {
        assert!((train.row_dense(i)[0] - (i % 24) as f32 / 23.0).abs() < 1e-6);
        assert_eq!(train.label[i], (i % 3 % 2) as f32);
    }

    // A bad hour is reported with its column name.
    fs::write(&input, text.replace("14102105", "14102125")).unwrap();
    let msg = err_text(prepare(&opts));
    assert!(
        msg.contains("line 7, column 3 (hour): expected a YYMMDDHH"),
        "{msg}"
    );
    // A missing label column is reported against the header.
    fs::write(&input, "id,hour,C1\n1,14102100,a\n").unwrap();
    let msg = err_text(prepare(&opts));
    assert!(
        msg.contains("line 1 (header): expected a column named \"click\""),
        "{msg}"
    );
}

#[test]
fn generic_csv_with_schema() {
    let dir = tempfile::tempdir().unwrap();
    // Semicolons, a header, quotes, a weekday derived from a timestamp, remaining -> categorical.
    let schema = dir.path().join("schema.yaml");
    fs::write(
        &schema,
        "delimiter: \";\"\nlabel: y\ndense: [{column: price, transform: identity}, count]\n\
         categorical: [{column: ts, transform: day_of_week}]\nremaining: categorical\n\
         ignore: [note]\n",
    )
    .unwrap();
    let input = dir.path().join("data.csv");
    fs::write(
        &input,
        "ts;y;price;user;count;note\n\
         14102100;1;2.5;\"a;b\";3;x\n\
         14102200;0;-1;c;;y\n\
         14102100;0;1e2;\"a;b\";0;z\n",
    )
    .unwrap();
    let out = dir.path().join("cache");
    let mut opts = PrepareOptions::new(
        &input,
        InputFormat::Csv {
            schema: schema.clone(),
        },
        &out,
    );
    opts.split = SplitRule::Random {
        valid_fraction: 0.0,
        test_fraction: 0.0,
    };
    prepare(&opts).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.meta.format, "csv");
    assert_eq!(ds.meta.dense_names, ["price", "count"]);
    assert_eq!(ds.meta.field_names, ["ts_weekday", "user"]);
    assert_eq!(ds.cardinalities(), [3, 3]); // {Tue, Wed} and {"a;b", c}, plus OOV
    let t = ds.split(Split::Train);
    assert_eq!(t.dense, [2.5, 4f32.ln(), -1.0, 0.0, 100.0, 0.0]);
    assert_eq!(t.label, [1.0, 0.0, 0.0]);
    assert_eq!(t.row_cat(0), t.row_cat(2));
    assert_ne!(t.row_cat(0), t.row_cat(1));

    // Without a header: columns by 1-based number, tab delimiter.
    fs::write(
        &schema,
        "delimiter: tab\nheader: false\nlabel: 2\ndense: [1]\ncategorical: [3, 4]\n",
    )
    .unwrap();
    fs::write(&input, "7\t1\tu1\ti1\n0\t0\tu2\ti1\n3\t1\tu1\ti2\n").unwrap();
    let report = prepare(&opts).unwrap();
    assert_eq!(report.field_names, ["col3", "col4"]);
    assert_eq!(report.cardinalities, [3, 3]);
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.split(Split::Train).dense, [8f32.ln(), 0.0, 4f32.ln()]);

    // Schema errors: unknown name without header, unknown key.
    fs::write(&schema, "header: false\nlabel: y\ncategorical: [1]\n").unwrap();
    assert!(err_text(prepare(&opts)).contains("no header"));
    fs::write(&schema, "label: 1\ncategorical: [2]\ncolour: red\n").unwrap();
    let msg = err_text(prepare(&opts));
    assert!(
        msg.contains("schema.yaml") && msg.contains("colour"),
        "{msg}"
    );
    // Column-count mismatch against the header.
    fs::write(&schema, "label: y\ncategorical: [a]\n").unwrap();
    fs::write(&input, "y,a\n1,x\n0,y,z\n").unwrap();
    let msg = err_text(prepare(&opts));
    assert!(
        msg.contains("line 3, column 3: expected 2 ','-separated columns"),
        "{msg}"
    );
}

#[test]
fn min_count_maps_rare_values_to_oov() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("d.txt");
    // Field C1 takes value "a" 3 times, "b" twice, "c" once; every other field is constant.
    let mut text = String::new();
    for v in ["a", "b", "a", "c", "b", "a"] {
        text += &criteo_line("0", "1", "k").replacen("k00", v, 1);
    }
    fs::write(&input, &text).unwrap();
    let out = dir.path().join("cache");
    let mut opts = PrepareOptions::new(&input, InputFormat::Criteo, &out);
    opts.split = SplitRule::Random {
        valid_fraction: 0.0,
        test_fraction: 0.0,
    };
    opts.min_count = 3;
    prepare(&opts).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.meta.min_count, 3);
    assert_eq!(ds.cardinalities()[0], 2); // OOV + "a"
    assert_eq!(ds.field_frequencies(0), [3, 3]); // b, c, b -> OOV
    let cats: Vec<u32> = (0..6)
        .map(|i| ds.split(Split::Train).row_cat(i)[0])
        .collect();
    assert_eq!(cats, [1, 0, 1, 0, 0, 1]);
    assert_eq!(ds.field_frequencies(1), [0, 6]);

    opts.min_count = 2;
    prepare(&opts).unwrap(); // replaces the older cache
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.field_frequencies(0), [1, 3, 2]); // most frequent first
}

#[test]
fn random_split_is_deterministic_and_roughly_proportional() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("d.txt");
    let text: String = (0..2000)
        .map(|i| criteo_line(&(i % 2).to_string(), "1", &format!("v{i}-")))
        .collect();
    fs::write(&input, text).unwrap();
    let run = |seed: u64, name: &str| {
        let mut opts = PrepareOptions::new(&input, InputFormat::Criteo, dir.path().join(name));
        opts.split = SplitRule::Random {
            valid_fraction: 0.1,
            test_fraction: 0.2,
        };
        opts.seed = seed;
        prepare(&opts).unwrap();
        let ds = Dataset::open(&dir.path().join(name)).unwrap();
        (ds.meta.rows, ds.split(Split::Test).label.to_vec())
    };
    let (a, a_labels) = run(1, "a");
    let (b, b_labels) = run(1, "b");
    let (c, _) = run(2, "c");
    assert_eq!((a, &a_labels), (b, &b_labels));
    assert_ne!(a, c);
    assert_eq!(a.total(), 2000);
    assert!((150..250).contains(&a.valid), "{a:?}");
    assert!((330..470).contains(&a.test), "{a:?}");
}

#[test]
fn criteo_sample_as_csv_matches_raw_form() {
    // The sample as shipped (commas, header, float dense) through a schema gives the same cache.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("sample.txt");
    write_raw_criteo(&raw);
    let schema = dir.path().join("criteo.yaml");
    let dense: Vec<String> = (1..=13).map(|i| format!("I{i}")).collect();
    fs::write(
        &schema,
        format!(
            "label: label\ndense: [{}]\nremaining: categorical\n",
            dense.join(", ")
        ),
    )
    .unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &a)).unwrap();
    let mut opts = PrepareOptions::new(sample_csv(), InputFormat::Csv { schema }, &b);
    opts.split = SplitRule::Days;
    prepare(&opts).unwrap();
    let (a, b) = (Dataset::open(&a).unwrap(), Dataset::open(&b).unwrap());
    assert_eq!(a.meta.field_names, b.meta.field_names);
    assert_eq!(a.cardinalities(), b.cardinalities());
    assert_eq!(a.train_frequencies(), b.train_frequencies());
    for split in Split::ALL {
        let (x, y) = (a.split(split), b.split(split));
        assert_eq!((x.dense, x.cat, x.label), (y.dense, y.cat, y.label));
    }
}
