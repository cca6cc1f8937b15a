//! The dataset cache: gather round trip, size validation on open, atomic replacement, stats.
use mlet::data::{
    cache_stats, prepare, write_synthetic, Batch, Dataset, InputFormat, PrepareOptions, Split,
    SynthConfig,
};
use std::fs;
use std::path::Path;

fn make_cache(dir: &Path, rows: usize) -> (std::path::PathBuf, Vec<Vec<String>>) {
    let raw = dir.join("raw.txt");
    write_synthetic(&raw, &SynthConfig { rows, seed: 5 }).unwrap();
    let lines = fs::read_to_string(&raw)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    let out = dir.join("cache");
    prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &out)).unwrap();
    (out, lines)
}

#[test]
fn gather_returns_the_rows_written() {
    let dir = tempfile::tempdir().unwrap();
    let (out, lines) = make_cache(dir.path(), 3_500);
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.meta.rows.total(), 3_500);
    let offsets = [
        (Split::Train, 0),
        (Split::Valid, 3_000),
        (Split::Test, 3_250),
    ];
    let mut batch = Batch::default();
    for (split, offset) in offsets {
        let data = ds.split(split);
        let rows = [7usize, 0, 7, data.len - 1, 3];
        data.gather(&rows, &mut batch);
        assert_eq!(batch.size, 5);
        assert_eq!(batch.dense.len(), 5 * 13);
        assert_eq!(batch.cat.len(), 5 * 26);
        for (b, &r) in rows.iter().enumerate() {
            let raw = &lines[offset + r];
            assert_eq!(batch.label[b], raw[0].parse::<f32>().unwrap());
            for j in 0..13 {
                let x = raw[1 + j].parse::<f64>().unwrap_or(0.0).max(0.0);
                assert!((f64::from(batch.dense[b * 13 + j]) - x.ln_1p()).abs() < 1e-5);
            }
            let cats = &batch.cat[b * 26..(b + 1) * 26];
            assert_eq!(
                cats,
                data.row_cat(r)
                    .iter()
                    .map(|&c| i64::from(c))
                    .collect::<Vec<_>>()
            );
            for (f, &c) in cats.iter().enumerate() {
                assert!((c as usize) < ds.cardinalities()[f]);
                if split == Split::Train {
                    assert!(c > 0, "training values are in the vocabulary");
                }
            }
        }
        // Equal raw values <-> equal indices (rows 0 and 7 gathered twice agree).
        assert_eq!(batch.cat[..26], batch.cat[2 * 26..3 * 26]);
        let cap = batch.cat.capacity();
        data.gather_range(1, 3, &mut batch);
        assert_eq!(batch.size, 2);
        assert_eq!(
            batch.cat[..26],
            data.row_cat(1)
                .iter()
                .map(|&c| i64::from(c))
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(batch.cat.capacity(), cap, "allocation kept");
    }
    // Frequencies: per field they sum to the training rows.
    for f in 0..26 {
        let sum: u64 = ds.field_frequencies(f).iter().map(|&c| u64::from(c)).sum();
        assert_eq!(sum, 3_000);
    }
}

#[test]
fn truncated_or_missing_cache_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = make_cache(dir.path(), 700);
    let cat = out.join("valid/cat.u32");
    let len = fs::metadata(&cat).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cat)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let msg = format!("{:#}", Dataset::open(&out).expect_err("error"));
    assert!(
        msg.contains("valid/cat.u32")
            && msg.contains(&format!("expected {len}"))
            && msg.contains("truncated"),
        "{msg}"
    );
    fs::remove_file(&cat).unwrap();
    let msg = format!("{:#}", Dataset::open(&out).expect_err("error"));
    assert!(msg.contains("valid/cat.u32"), "{msg}");
    let msg = format!("{:#}", Dataset::open(dir.path()).expect_err("error"));
    assert!(msg.contains("meta.json"), "{msg}");
}

#[test]
fn prepare_replaces_a_cache_but_not_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = make_cache(dir.path(), 700);
    let raw = dir.path().join("raw.txt");
    let mut opts = PrepareOptions::new(&raw, InputFormat::Criteo, &out);
    opts.min_count = 2;
    prepare(&opts).unwrap();
    assert_eq!(Dataset::open(&out).unwrap().meta.min_count, 2);
    let other = dir.path().join("precious");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes.txt"), "keep").unwrap();
    opts.out = other.clone();
    let msg = format!("{:#}", prepare(&opts).expect_err("error"));
    assert!(msg.contains("refusing"), "{msg}");
    assert!(other.join("notes.txt").exists());
}

#[test]
fn stats_summarise_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = make_cache(dir.path(), 3_500);
    let ds = Dataset::open(&out).unwrap();
    let stats = cache_stats(&ds);
    assert_eq!(stats.fields.len(), 26);
    assert_eq!(stats.rows.train, 3_000);
    let c3 = &stats.fields[2];
    assert_eq!(c3.name, "C3");
    assert_eq!(c3.train_oov_share, 0.0);
    assert!(
        c3.test_oov_share > 0.05,
        "big fields have unseen test values"
    );
    assert!(c3.singletons > 100);
    let c9 = &stats.fields[8];
    assert_eq!(c9.cardinality, 4);
    assert!(c9.top1_share > 0.3);
    let table = stats.to_string();
    assert!(table.contains("C26") && table.contains("singletons"));
    let json: serde_json::Value = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["fields"][8]["cardinality"], 4);
}

fn mlet() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_mlet"))
}

/// `mlet data stats DIR | head -1`: a reader that has gone away ends mlet as it ends any Unix
/// tool (quietly, by SIGPIPE), not with a panic.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = make_cache(dir.path(), 500);
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe; each end is owned once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // the reader is closed before mlet writes a byte
    drop(unsafe { std::fs::File::from_raw_fd(fds[0]) });
    let writer = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    let r = mlet()
        .args(["data", "stats"])
        .arg(&out)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        r.status.success() || r.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        r.status
    );
}

/// Issue 8 item 6: `--out` is replaced only when it is provably a cache, never when it holds
/// anything else or the input itself.
#[test]
fn prepare_never_deletes_user_data_or_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, _) = make_cache(dir.path(), 400);
    let raw = dir.path().join("raw.txt");
    let prepare_cli = |input: &Path, out: &Path| {
        let o = mlet()
            .args(["data", "prepare", "--format", "criteo", "--out"])
            .arg(out)
            .arg(input)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // a project directory that happens to have a meta.json
    let project = dir.path().join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(project.join("meta.json"), r#"{"name": "my project"}"#).unwrap();
    fs::write(project.join("notes.txt"), "keep").unwrap();
    fs::write(project.join("src/main.rs"), "fn main() {}").unwrap();
    let (code, err) = prepare_cli(&raw, &project);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("project") && err.contains("not a dataset cache") && err.contains("refusing"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for f in ["meta.json", "notes.txt", "src/main.rs"] {
        assert!(project.join(f).is_file(), "{f} was deleted");
    }
    // a real cache with one file of the user's added
    fs::write(cache.join("notes.txt"), "mine").unwrap();
    let (code, err) = prepare_cli(&raw, &cache);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds notes.txt"), "{err}");
    assert!(cache.join("notes.txt").is_file());
    fs::remove_file(cache.join("notes.txt")).unwrap();
    // the input inside the output directory (cachein/raw.tsv into cachein)
    let inside = cache.join("raw.tsv");
    fs::copy(&raw, &inside).unwrap();
    let (code, err) = prepare_cli(&inside, &cache);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("contains the input"), "{err}");
    assert!(inside.is_file());
    // ... also when the output is the input's own directory, whatever it holds
    let (code, err) = prepare_cli(&raw, dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("contains the input"), "{err}");
    fs::remove_file(&inside).unwrap();
    // a cache and nothing else is still replaced
    let (code, err) = prepare_cli(&raw, &cache);
    assert_eq!(code, Some(0), "{err}");
    assert!(Dataset::open(&cache).is_ok());
}

/// Overwrites 4 bytes of `file` at value index `i`, returning the old bytes.
fn poke(file: &Path, i: usize, value: [u8; 4]) -> Vec<u8> {
    let old = fs::read(file).unwrap();
    let mut new = old.clone();
    new[4 * i..4 * i + 4].copy_from_slice(&value);
    fs::write(file, new).unwrap();
    old
}

/// Issue 8 item 7: corrupt values fail `Dataset::open`, naming file, split, row and field.
#[test]
fn corrupt_caches_fail_on_open_naming_file_split_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, _) = make_cache(dir.path(), 700);
    let ds = Dataset::open(&cache).unwrap();
    let c3 = ds.cardinalities()[2] as u32;
    drop(ds);
    let nan = f32::NAN.to_le_bytes();
    let cases: [(&str, usize, [u8; 4], &[&str]); 6] = [
        (
            "train/label.f32",
            5,
            2.0f32.to_le_bytes(),
            &["train split", "row 5", "label 2 is not 0 or 1"],
        ),
        (
            "valid/label.f32",
            3,
            nan,
            &["valid split", "row 3", "label NaN"],
        ),
        (
            "train/label.f32",
            0,
            (-1.0f32).to_le_bytes(),
            &["row 0", "label -1"],
        ),
        (
            "test/dense.f32",
            2 * 13 + 4,
            nan,
            &["test split", "row 2", "dense feature 4 (I5)", "not finite"],
        ),
        (
            "test/cat.u32",
            7 * 26 + 2,
            c3.to_le_bytes(),
            &[
                "test split",
                "row 7",
                "field 2 (C3)",
                &format!("index {c3} is not below the field's cardinality {c3}"),
            ],
        ),
        (
            "test/cat.u32",
            0,
            u32::MAX.to_le_bytes(),
            &["row 0, field 0 (C1)"],
        ),
    ];
    for (file, i, value, needles) in cases {
        let path = cache.join(file);
        let old = poke(&path, i, value);
        let msg = format!("{:#}", Dataset::open(&cache).expect_err(file));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{file}: {n:?} not in {msg}");
        }
        fs::write(&path, old).unwrap();
        Dataset::open(&cache).unwrap();
    }
}

/// ... and `mlet train` stops on them before training: no run directory appears.
#[test]
fn training_on_a_corrupt_cache_stops_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, _) = make_cache(dir.path(), 700);
    let runs = dir.path().join("runs");
    let exp = dir.path().join("e.yaml");
    fs::write(
        &exp,
        format!(
            "name: corrupt\ndata: {{cache: {}}}\nmodel: {{kind: dlrm, bottom_mlp: [8], top_mlp: \
             [8]}}\nembedding: {{dim: 4}}\noptimizer: {{kind: sgd, lr: 0.1}}\ntraining: {{epochs: \
             1, batch_size: 64, threads: 1}}\noutput: {}\n",
            cache.display(),
            runs.display()
        ),
    )
    .unwrap();
    let card = Dataset::open(&cache).unwrap().cardinalities()[25] as u32;
    // the last field of the last test row: only read after training, before this check
    let rows = Dataset::open(&cache).unwrap().meta.rows.test;
    let cat = cache.join("test/cat.u32");
    let good = poke(&cat, rows * 26 - 1, card.to_le_bytes());
    let out = mlet().args(["train", "-q"]).arg(&exp).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("test/cat.u32") && err.contains(&format!("row {}, field 25 (C26)", rows - 1)),
        "{err}"
    );
    assert!(!runs.exists(), "a run directory was created");
    // a label of 2 likewise (it used to train and report an AUC)
    fs::write(&cat, good).unwrap();
    poke(&cache.join("train/label.f32"), 10, 2.0f32.to_le_bytes());
    let out = mlet().args(["train", "-q"]).arg(&exp).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train/label.f32") && err.contains("row 10"),
        "{err}"
    );
    assert!(!runs.exists(), "a run directory was created");
}
