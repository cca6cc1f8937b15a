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
