//! Issue 8 item 8: predefined train / valid / test files (FuxiCTR, BARS). Each file's rows go to
//! its split in file order; the vocabulary and `min_count` count the training file alone; the
//! files must share their columns; the fingerprint covers all three; an experiment file with
//! `data: {train, valid, test}` trains and tests on them.
use mlet::config::{parse_runs, DataConfig, RawFormat};
use mlet::data::{
    prepare, write_synthetic, Dataset, InputFormat, PrepareOptions, Split, SplitRule, SynthConfig,
    VocabFile, VocabValue,
};
use mlet::experiments::open_data;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs in the temporary directory: one test moves this process's working directory into a
/// directory that it deletes at its end, where libtorch cannot start.
fn mlet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

/// Writes lines `from..to` (0-based) of `all` into `path`.
fn slice(all: &str, from: usize, to: usize, path: &Path) -> PathBuf {
    let text: String = all
        .lines()
        .skip(from)
        .take(to - from)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// The day split of 3000 lines: floor(6 * 3000 / 7) train, then half of the remaining 429.
const TRAIN: usize = 2571;
const VALID: usize = 214;
const TEST: usize = 215;

/// 3000 synthetic Criteo rows (`all.txt`) cut into the three files of its day split.
fn criteo_files(dir: &Path) -> [PathBuf; 3] {
    let all = dir.join("all.txt");
    let cfg = SynthConfig {
        rows: TRAIN + VALID + TEST,
        seed: 9,
    };
    write_synthetic(&all, &cfg).unwrap();
    let text = fs::read_to_string(&all).unwrap();
    [
        slice(&text, 0, TRAIN, &dir.join("train.txt")),
        slice(&text, TRAIN, TRAIN + VALID, &dir.join("valid.txt")),
        slice(&text, TRAIN + VALID, cfg.rows, &dir.join("test.txt")),
    ]
}

/// (label, ln(1 + max(I1, 0))) of every line of a Criteo file.
fn criteo_rows(path: &Path) -> Vec<(f32, f32)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let i1: f64 = cols[1].parse().unwrap_or(0.0);
            (cols[0].parse().unwrap(), i1.max(0.0).ln_1p() as f32)
        })
        .collect()
}

#[test]
fn criteo_files_become_their_splits_in_file_order() {
    let tmp = tempfile::tempdir().unwrap();
    let [train, valid, test] = criteo_files(tmp.path());
    let out = tmp.path().join("cache");
    let report = prepare(&PrepareOptions::files(
        &train,
        &valid,
        &test,
        InputFormat::Criteo,
        &out,
    ))
    .unwrap();
    assert_eq!(
        (report.rows.train, report.rows.valid, report.rows.test),
        (TRAIN, VALID, TEST)
    );
    let ds = Dataset::open(&out).unwrap();
    for (split, file) in [
        (Split::Train, &train),
        (Split::Valid, &valid),
        (Split::Test, &test),
    ] {
        let d = ds.split(split);
        let want = criteo_rows(file);
        assert_eq!(d.len, want.len(), "{split}");
        for (r, &(label, i1)) in want.iter().enumerate() {
            assert_eq!(d.label[r], label, "{split} row {r}: label");
            assert_eq!(d.row_dense(r)[0], i1, "{split} row {r}: I1");
        }
    }
    // meta.json records the split as predefined, with the files
    assert_eq!(
        ds.meta.split,
        SplitRule::Files {
            valid: valid.clone(),
            test: test.clone()
        }
    );
    assert_eq!(ds.meta.source, train.display().to_string());
    // every field's training counts sum to the training rows: valid/test rows are not counted
    for f in 0..ds.num_fields() {
        let n: u64 = ds.field_frequencies(f).iter().map(|&c| u64::from(c)).sum();
        assert_eq!(n, TRAIN as u64, "field {f}");
    }
    // reference: the day split of the uncut file is the same cache, array for array
    let days = tmp.path().join("days");
    prepare(&PrepareOptions::new(
        tmp.path().join("all.txt"),
        InputFormat::Criteo,
        &days,
    ))
    .unwrap();
    let reference = Dataset::open(&days).unwrap();
    assert_eq!(reference.meta.rows, ds.meta.rows);
    assert_eq!(reference.cardinalities(), ds.cardinalities());
    assert_eq!(reference.train_frequencies(), ds.train_frequencies());
    for split in Split::ALL {
        let (a, b) = (reference.split(split), ds.split(split));
        assert!(
            a.cat == b.cat && a.dense == b.dense && a.label == b.label,
            "{split}"
        );
    }
    // `mlet data stats` shows the split and its files
    let cache = out.to_str().unwrap();
    let stats = mlet(&["data", "stats", cache]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{text}");
    assert!(
        text.contains("split    predefined") && text.contains(&*test.to_string_lossy()),
        "{text}"
    );
    let json = mlet(&["data", "stats", cache, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["split"]["kind"], "files");
    assert_eq!(v["split"]["valid"], valid.to_str().unwrap());
}

const SCHEMA: &str = "label: click\ndense: [price]\ncategorical: [user, city]\n";

/// A CSV predefined split. `u1` and `x` occur twice in train; `u2` and `y` once in train and
/// once more in test; `u3`, `u4` and `z` never in train.
fn csv_files(dir: &Path) -> (PathBuf, [PathBuf; 3]) {
    let schema = dir.join("schema.yaml");
    fs::write(&schema, SCHEMA).unwrap();
    let write = |name: &str, rows: &str| {
        let p = dir.join(name);
        fs::write(&p, format!("click,price,user,city\n{rows}")).unwrap();
        p
    };
    let files = [
        write("train.csv", "1,1.5,u1,x\n0,2,u1,y\n1,0,u2,x\n"),
        write("valid.csv", "0,3,u3,x\n1,1,u1,z\n"),
        write("test.csv", "1,4,u2,x\n0,5,u4,y\n0,0,u1,x\n"),
    ];
    (schema, files)
}

fn prepare_csv(dir: &Path, min_count: u32) -> Dataset {
    let (schema, [train, valid, test]) = csv_files(dir);
    let out = dir.join(format!("cache-min{min_count}"));
    let mut opts = PrepareOptions::files(train, valid, test, InputFormat::Csv { schema }, &out);
    opts.min_count = min_count;
    prepare(&opts).unwrap();
    Dataset::open(&out).unwrap()
}

fn cats(ds: &Dataset, split: Split) -> Vec<Vec<u32>> {
    let d = ds.split(split);
    (0..d.len).map(|r| d.row_cat(r).to_vec()).collect()
}

#[test]
fn csv_vocabulary_comes_from_the_training_file_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = prepare_csv(tmp.path(), 1);
    // user: u1 (2 rows) -> 1, u2 (1 row) -> 2; city: x -> 1, y -> 2. Counting valid and test
    // too would give user 5 rows (u1..u4 + OOV).
    assert_eq!(ds.cardinalities(), &[3, 3]);
    assert_eq!(cats(&ds, Split::Train), [[1, 1], [1, 2], [2, 1]]);
    // values only in valid/test (u3, u4, z) are out of vocabulary
    assert_eq!(cats(&ds, Split::Valid), [[0, 1], [1, 0]]);
    assert_eq!(cats(&ds, Split::Test), [[2, 1], [0, 2], [1, 1]]);
    assert_eq!(ds.split(Split::Test).label, [1.0, 0.0, 0.0]);
    let ln = |x: f32| x.ln_1p();
    assert_eq!(ds.split(Split::Test).dense, [ln(4.0), ln(5.0), ln(0.0)]);
    // training counts only (u1 has 2 train rows, 4 in all)
    assert_eq!(ds.field_frequencies(0), [0, 2, 1]);
    // vocab.json lists the training values alone
    let vocab = VocabFile::of_cache(ds.dir()).unwrap();
    assert_eq!(
        vocab.fields[0].values,
        [
            None,
            Some(VocabValue::Text("u1".into())),
            Some(VocabValue::Text("u2".into()))
        ]
    );
}

#[test]
fn min_count_counts_the_training_file_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = prepare_csv(tmp.path(), 2);
    // u2 and y occur once in train (twice with test): below min_count 2, so OOV everywhere
    assert_eq!(ds.cardinalities(), &[2, 2]);
    assert_eq!(cats(&ds, Split::Train), [[1, 1], [1, 0], [0, 1]]);
    assert_eq!(cats(&ds, Split::Test), [[0, 1], [0, 0], [1, 1]]);
    assert_eq!(ds.field_frequencies(0), [1, 2]);
    assert_eq!(ds.field_frequencies(1), [1, 2]);
}

#[test]
fn mismatching_columns_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // a CSV test file whose header swaps two columns
    let (schema, [train, valid, test]) = csv_files(dir);
    fs::write(&test, "click,price,city,user\n1,4,x,u2\n").unwrap();
    let opts = PrepareOptions::files(
        &train,
        &valid,
        &test,
        InputFormat::Csv {
            schema: schema.clone(),
        },
        dir.join("c1"),
    );
    let msg = format!("{:#}", prepare(&opts).unwrap_err());
    assert!(
        msg.contains(&format!("{}: line 1, column 3", test.display()))
            && msg.contains("training file's header")
            && msg.contains("\"user\""),
        "{msg}"
    );
    // a header with one column more
    fs::write(&test, "click,price,user,city,extra\n1,4,u2,x,e\n").unwrap();
    let msg = format!("{:#}", prepare(&opts).unwrap_err());
    assert!(
        msg.contains(&format!("{}: line 1, column 5", test.display())),
        "{msg}"
    );
    assert!(!dir.join("c1").exists());

    // a Criteo test file whose third line lacks a column, through the CLI
    let [train, valid, test] = criteo_files(dir);
    let mut text = fs::read_to_string(&test).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let short = lines[2].rsplit_once('\t').unwrap().0.to_string();
    text = text.replacen(lines[2], &short, 1);
    fs::write(&test, text).unwrap();
    let out = mlet(&[
        "data",
        "prepare",
        "--train",
        train.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--format",
        "criteo",
        "--out",
        dir.join("c2").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: line 3, column 40", test.display())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_prepares_three_files_and_rejects_incomplete_or_mixed_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let [train, valid, test] = criteo_files(tmp.path());
    let (train, valid, test) = (
        train.to_str().unwrap(),
        valid.to_str().unwrap(),
        test.to_str().unwrap(),
    );
    let out = tmp.path().join("cache");
    let out = out.to_str().unwrap();
    let ok = mlet(&[
        "data", "prepare", "--train", train, "--valid", valid, "--test", test, "--format",
        "criteo", "--out", out,
    ]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains(out) && stdout.contains("2571 train / 214 valid / 215 test"),
        "{stdout}"
    );
    let quiet = mlet(&[
        "-q", "data", "prepare", "--train", train, "--valid", valid, "--test", test, "--format",
        "criteo", "--out", out,
    ]);
    assert!(quiet.status.success() && quiet.stdout.is_empty());
    // (arguments, what the error must name)
    let cases: [(&[&str], &str); 4] = [
        (&["--train", train, "--valid", valid], "--test"),
        (
            &[train, "--train", train, "--valid", valid, "--test", test],
            "--train",
        ),
        (
            &[
                "--train", train, "--valid", valid, "--test", test, "--split", "days",
            ],
            "--split",
        ),
        (
            &["--train", train, "--valid", valid, "--test", train],
            "three different files",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["data", "prepare", "--format", "criteo", "--out", out];
        all.extend_from_slice(args);
        let o = mlet(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // the cache made by the first call was not touched by the refusals
    assert_eq!(Dataset::open(Path::new(out)).unwrap().meta.rows.test, TEST);
}

fn files_config(files: &[PathBuf; 3], cache: Option<PathBuf>) -> DataConfig {
    DataConfig {
        train: Some(files[0].clone()),
        valid: Some(files[1].clone()),
        test: Some(files[2].clone()),
        format: Some(RawFormat::Criteo),
        cache,
        min_count: 1,
        ..Default::default()
    }
}

/// The only test here that relies on the working directory (default cache names live under
/// `./data-cache`); the others use absolute paths only.
#[test]
fn changing_any_file_prepares_again_or_fails_for_an_explicit_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let before = std::env::current_dir().unwrap();
    std::env::set_current_dir(tmp.path()).unwrap();
    struct Restore(PathBuf);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::env::set_current_dir(&self.0);
        }
    }
    let _restore = Restore(before);
    let files = criteo_files(tmp.path());
    let data = files_config(&files, None);
    // the default name differs from the training file's own cache
    let alone = DataConfig {
        raw: Some(files[0].clone()),
        format: Some(RawFormat::Criteo),
        ..Default::default()
    };
    assert_ne!(data.cache_dir(), alone.cache_dir());
    assert!(
        data.cache_dir()
            .to_string_lossy()
            .contains("train-criteo-files-"),
        "{}",
        data.cache_dir().display()
    );
    assert_eq!(open_data(&data, true).unwrap().meta.rows.valid, VALID);
    let meta = fs::metadata(data.cache_dir().join("meta.json")).unwrap();
    // unchanged files: reused (meta.json not rewritten)
    open_data(&data, true).unwrap();
    assert_eq!(
        fs::metadata(data.cache_dir().join("meta.json"))
            .unwrap()
            .modified()
            .unwrap(),
        meta.modified().unwrap()
    );
    // a shorter valid file: prepared again
    let text = fs::read_to_string(&files[1]).unwrap();
    slice(&text, 0, 100, &files[1]);
    assert_eq!(open_data(&data, true).unwrap().meta.rows.valid, 100);
    // the training file prepared alone is another cache, with its own split
    let single = open_data(&alone, true).unwrap();
    assert_eq!(single.meta.rows.total(), TRAIN);
    assert_eq!(single.meta.split, SplitRule::Days);

    // explicit cache: a changed test file is an error naming it; the cache is left alone
    let cache = tmp.path().join("explicit");
    let data = files_config(&files, Some(cache.clone()));
    assert_eq!(open_data(&data, true).unwrap().meta.rows.test, TEST);
    let text = fs::read_to_string(&files[2]).unwrap();
    slice(&text, 0, 200, &files[2]);
    let msg = format!("{:#}", open_data(&data, true).unwrap_err());
    assert!(
        msg.contains("data.cache") && msg.contains("test file size"),
        "{msg}"
    );
    assert_eq!(Dataset::open(&cache).unwrap().meta.rows.test, TEST);
    // the same files named by relative paths are the same split: no difference
    let rel = |p: &PathBuf| PathBuf::from(p.file_name().unwrap());
    fs::remove_dir_all(&cache).unwrap();
    open_data(&data, true).unwrap();
    let relative = files_config(
        &[rel(&files[0]), rel(&files[1]), rel(&files[2])],
        Some(cache),
    );
    assert_eq!(open_data(&relative, true).unwrap().meta.rows.test, 200);
}

fn experiment(dir: &Path, data: &str) -> String {
    format!(
        "name: files
data:
{data}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 4}}
optimizer: {{kind: sgd, lr: 0.1}}
training: {{epochs: 1, batch_size: 64, seed: 1, threads: 1, log_every: 10}}
output: {out}
runs: [{{name: r}}]
",
        out = dir.join("runs").display()
    )
}

#[test]
fn an_experiment_file_trains_on_the_train_file_and_tests_on_the_test_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let [train, valid, test] = criteo_files(dir);
    let data = format!(
        "  train: {}\n  valid: {}\n  test: {}\n  format: criteo\n  cache: {}",
        train.display(),
        valid.display(),
        test.display(),
        dir.join("cache").display()
    );
    let exp = dir.join("e.yaml");
    fs::write(&exp, experiment(dir, &data)).unwrap();
    let out = mlet(&["-q", "train", exp.to_str().unwrap(), "--max-steps", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("runs/files/r/metrics.json")).unwrap())
            .unwrap();
    let count = |file: &Path| {
        let rows = criteo_rows(file);
        let positives = rows.iter().filter(|r| r.0 == 1.0).count();
        (rows.len() as u64, positives as u64)
    };
    for (split, file) in [("test", &test), ("valid", &valid)] {
        let m = &metrics[split];
        let (rows, positives) = count(file);
        assert_eq!(m["samples"], rows, "{split}: {m}");
        assert_eq!(m["positives"], positives, "{split}: {m}");
        assert!(m["auc"].as_f64().unwrap().is_finite());
    }
    // the resolved config keeps the three files
    let config = fs::read_to_string(dir.join("runs/files/r/config.yaml")).unwrap();
    assert!(config.contains(&*test.to_string_lossy()), "{config}");
}

#[test]
fn experiment_files_reject_incomplete_or_mixed_data_sections() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        (
            "  train: a.txt\n  test: c.txt\n  format: criteo",
            "data.valid: required",
        ),
        (
            "  raw: x.txt\n  train: a.txt\n  valid: b.txt\n  test: c.txt\n  format: criteo",
            "data.train: a predefined split (train, valid, test) replaces `raw`",
        ),
        (
            "  synthetic: {rows: 100, seed: 1}\n  test: c.txt",
            "data.test: a predefined split (train, valid, test) replaces `synthetic`",
        ),
        (
            "  train: a.txt\n  valid: b.txt\n  test: c.txt",
            "data.format: required with data.train",
        ),
    ];
    for (data, needle) in cases {
        let text = experiment(dir, data);
        let msg = format!("{:#}", parse_runs(&text).unwrap_err());
        assert!(msg.contains(needle), "{data}: {msg}");
        // and through the command line, naming the file
        let path = dir.join("bad.yaml");
        fs::write(&path, &text).unwrap();
        let out = mlet(&["train", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("bad.yaml") && err.contains(needle), "{err}");
    }
}
