//! Hostile inputs that used to panic or give unhelpful errors (issue 8 item 11): every one is
//! now a short error naming what is wrong and what was expected, with a non-zero exit.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mlet(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlet"));
    c.args(args);
    c
}

/// The error text of a command that must fail cleanly (no panic, exit 1).
fn error_of(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn prepare_csv(dir: &Path, data: &[u8], schema: &str) -> String {
    std::fs::write(dir.join("in.csv"), data).unwrap();
    std::fs::write(dir.join("s.yaml"), schema).unwrap();
    let out = mlet(&["-q", "data", "prepare"])
        .arg(dir.join("in.csv"))
        .args(["--format", "csv", "--schema"])
        .arg(dir.join("s.yaml"))
        .arg("--out")
        .arg(dir.join("cache"))
        .output()
        .unwrap();
    error_of(out)
}

const ROWS: &[u8] = b"click,price,user\n1,2.5,a\n0,1.0,b\n1,3.0,a\n0,0.5,c\n";

#[test]
fn embedding_tables_larger_than_memory_are_refused_with_their_size() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = |name: &str, embedding: &str| {
        let path = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: big\ndata: {{synthetic: {{rows: 1500, seed: 1}}, cache: {}}}\n\
                 model: {{kind: dlrm, bottom_mlp: [8], top_mlp: [8]}}\nembedding: {embedding}\n\
                 training: {{batch_size: 64, threads: 1}}\noutput: {}\n",
                tmp.path().join("cache").display(),
                tmp.path().join("runs").display()
            ),
        )
        .unwrap();
        path
    };
    let rows_of = |err: &str| -> u128 {
        let (_, rest) = err.split_once("tables (").unwrap();
        rest.split_once(" rows").unwrap().0.parse().unwrap()
    };
    let huge_d = exp("d", "{dim: 1000000000000}");
    let err = error_of(mlet(&["-q", "train"]).arg(&huge_d).output().unwrap());
    assert!(
        err.contains("d = 1000000000000") && err.contains("PiB"),
        "{err}"
    );
    // the size stated is rows x d x 4 bytes
    let pib = rows_of(&err) * 1_000_000_000_000 * 4 / (1 << 50);
    assert!(err.contains(&format!("need {pib}.")), "{err}");
    assert!(
        err.contains("memory available") && err.contains("embedding.dim"),
        "{err}"
    );

    let huge_k = exp("k", "{dim: 4, kind: mlet, k: 2000000000}");
    let err = error_of(mlet(&["-q", "train"]).arg(&huge_k).output().unwrap());
    assert!(
        err.contains("k = 2000000000") && err.contains("TiB"),
        "{err}"
    );
}

#[test]
fn prepare_refuses_a_pipe_saying_it_needs_a_seekable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cache");
    let mut child = mlet(&["-q", "data", "prepare", "/dev/stdin", "--format", "criteo"])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"0\t1\t\t\t\t\t\t\t\t\t\t\t\t\ta\tb\n");
    drop(stdin);
    let err = error_of(child.wait_with_output().unwrap());
    assert!(
        err.contains("/dev/stdin: not a regular file") && err.contains("seekable"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_huge_or_binary_header_is_quoted_short_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    // a 10 MB header line without the label column, as a broken Avazu download can have
    let mut data = vec![b'x'; 10 << 20];
    data.extend_from_slice(b"\n1,2\n");
    std::fs::write(tmp.path().join("a.csv"), &data).unwrap();
    let out = mlet(&["-q", "data", "prepare"])
        .arg(tmp.path().join("a.csv"))
        .args(["--format", "avazu", "--out"])
        .arg(tmp.path().join("c"))
        .output()
        .unwrap();
    let err = error_of(out);
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    assert!(
        err.contains("named \"click\"") && err.contains("(10485760 bytes)"),
        "{err}"
    );

    // binary: control bytes come out escaped, not raw
    let mut binary: Vec<u8> = (0u8..=255)
        .cycle()
        .take(5000)
        .filter(|&b| b != b'\n')
        .collect();
    binary.extend_from_slice(b"\n1,2\n");
    let err = prepare_csv(tmp.path(), &binary, "label: click\ncategorical: [user]\n");
    assert!(err.len() < 4000, "{} bytes of error", err.len());
    assert!(!err.bytes().any(|b| b < 0x20 && b != b'\n'), "{err:?}");
    assert!(err.contains("\\u{1}"), "{err}");
}

#[test]
fn a_bad_transform_lists_the_allowed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let err = prepare_csv(
        tmp.path(),
        ROWS,
        "label: click\ndense: [{column: price, transform: logg}]\ncategorical: [user]\n",
    );
    assert!(!err.contains("untagged"), "{err}");
    assert!(
        err.contains("dense: transform: unknown variant `logg`") && err.contains("line 2"),
        "{err}"
    );
    for allowed in ["log1p", "identity", "hour_of_day", "day_of_week", "raw"] {
        assert!(err.contains(allowed), "{allowed} missing: {err}");
    }
    let err = prepare_csv(
        tmp.path(),
        ROWS,
        "label: click\ndense: [{column: price, scale: 2}]\ncategorical: [user]\n",
    );
    assert!(err.contains("unknown field `scale`"), "{err}");
    let err = prepare_csv(
        tmp.path(),
        ROWS,
        "label: click\ndense: [[price]]\ncategorical: [user]\n",
    );
    assert!(err.contains("expected a column name"), "{err}");
}

#[test]
fn duplicate_fields_and_header_columns_are_rejected_with_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let err = prepare_csv(
        tmp.path(),
        ROWS,
        "label: click\ndense: [price, price]\ncategorical: [user]\n",
    );
    assert!(
        err.contains("two dense features are named \"price\""),
        "{err}"
    );
    let two = b"click,price,user,price\n1,2.5,a,3\n0,1.0,b,4\n";
    let err = prepare_csv(
        tmp.path(),
        two,
        "label: click\ndense: [price]\ncategorical: [user]\n",
    );
    assert!(
        err.contains("columns 2 and 4 are both named \"price\""),
        "{err}"
    );
    // the same column twice under different names is a choice, and allowed
    let ok = tmp.path().join("ok.yaml");
    std::fs::write(
        &ok,
        "label: click\ndense: [price, {column: price, transform: identity, name: price_raw}]\n\
         categorical: [user]\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("in.csv"), ROWS).unwrap();
    let out = mlet(&["-q", "data", "prepare"])
        .arg(tmp.path().join("in.csv"))
        .args(["--format", "csv", "--schema"])
        .arg(&ok)
        .arg("--out")
        .arg(tmp.path().join("cache-ok"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deeply_nested_yaml_is_rejected_fast() {
    let tmp = tempfile::tempdir().unwrap();
    // took 72 s (100,000 levels) before the depth pre-scan
    let n = 100_000;
    let path = tmp.path().join("deep.yaml");
    std::fs::write(
        &path,
        format!("name: x\nmodel: {}{}\n", "[".repeat(n), "]".repeat(n)),
    )
    .unwrap();
    let started = Instant::now();
    let err = error_of(mlet(&["train"]).arg(&path).output().unwrap());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        err.contains("deep.yaml: not valid YAML: line 2: nested deeper than 128"),
        "{err}"
    );
    let schema = format!("label: click\ndense: {}{}\n", "[".repeat(n), "]".repeat(n));
    let err = prepare_csv(tmp.path(), ROWS, &schema);
    assert!(
        err.contains("invalid CSV schema: line 2: nested deeper"),
        "{err}"
    );
}
