//! Issue 8 item 5: a cache is reused only for the data and options it was made from. An
//! automatically named cache is prepared again on any difference; an explicitly named one is an
//! error saying what differs.
use mlet::config::{DataConfig, RawFormat};
use mlet::data::{write_synthetic, Dataset, SynthConfig};
use mlet::experiments::open_data;
use std::fs;
use std::path::{Path, PathBuf};

fn raw(path: &Path, rows: usize, seed: u64) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_synthetic(path, &SynthConfig { rows, seed }).unwrap();
    path.to_path_buf()
}

fn criteo(raw: &Path, cache: Option<PathBuf>) -> DataConfig {
    DataConfig {
        raw: Some(raw.to_path_buf()),
        format: Some(RawFormat::Criteo),
        cache,
        min_count: 1,
        ..Default::default()
    }
}

/// Labels of the training split: enough to tell which file a cache was made from.
fn labels(ds: &Dataset) -> Vec<f32> {
    ds.split(mlet::data::Split::Train).label.to_vec()
}

fn err(data: &DataConfig) -> String {
    format!(
        "{:#}",
        open_data(data, true).expect_err("expected an error")
    )
}

fn avazu(path: &Path) -> PathBuf {
    let mut text = String::from("id,click,hour,C1,banner_pos,site_id\n");
    for i in 0..200 {
        text += &format!(
            "{i},{},141021{:02},1005,{},s{}\n",
            i % 2,
            i % 24,
            i % 2,
            i % 7
        );
    }
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// The only test here that relies on the working directory (default names live under
/// `./data-cache`); the others use absolute paths only.
#[test]
fn automatic_names_never_share_or_reuse_a_stale_cache() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_current_dir(tmp.path()).unwrap();
    // two train.tsv in different directories: two caches, each with its own file's rows
    let a = raw(&tmp.path().join("a/train.tsv"), 300, 1);
    let b = raw(&tmp.path().join("b/train.tsv"), 400, 2);
    let (da, db) = (criteo(&a, None), criteo(&b, None));
    assert_ne!(da.cache_dir(), db.cache_dir());
    let ca = open_data(&da, true).unwrap();
    let cb = open_data(&db, true).unwrap();
    assert_eq!(ca.meta.rows.total(), 300);
    assert_eq!(cb.meta.rows.total(), 400);
    assert_ne!(labels(&ca)[..], labels(&cb)[..labels(&ca).len()]);

    // the file overwritten in place (as a re-run with --force would see it): prepared again
    let before = labels(&ca);
    raw(&a, 350, 3);
    let again = open_data(&da, true).unwrap();
    assert_eq!(again.meta.rows.total(), 350);
    assert_ne!(labels(&again)[..before.len()], before[..]);
    // and unchanged, reused as it is (meta.json not rewritten)
    let stamp = || {
        fs::metadata(da.cache_dir().join("meta.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let written = stamp();
    std::thread::sleep(std::time::Duration::from_millis(20));
    open_data(&da, true).unwrap();
    assert_eq!(stamp(), written);

    // the same file read as another format gets its own cache
    let csv = avazu(&tmp.path().join("a/clicks.csv"));
    let as_avazu = DataConfig {
        format: Some(RawFormat::Avazu),
        ..criteo(&csv, None)
    };
    let as_criteo = criteo(&csv, None);
    assert_ne!(as_avazu.cache_dir(), as_criteo.cache_dir());
    assert_eq!(open_data(&as_avazu, true).unwrap().meta.format, "avazu");

    // a cache of an older mlet (no fingerprint) is prepared again, not trusted
    let dir = db.cache_dir();
    let meta = dir.join("meta.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&meta).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("fingerprint");
    json["rows"]["train"] = 1.into(); // would fail the size check if it were opened
    fs::write(&meta, json.to_string()).unwrap();
    let reprepared = open_data(&db, true).unwrap();
    assert_eq!(reprepared.meta.rows.total(), 400);
}

#[test]
fn an_explicit_cache_that_does_not_match_is_an_error_naming_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cache = t.join("cache");
    let a = raw(&t.join("a/train.tsv"), 300, 1);
    let b = raw(&t.join("b/train.tsv"), 300, 2);
    open_data(&criteo(&a, Some(cache.clone())), true).unwrap();
    // reused when nothing changed
    open_data(&criteo(&a, Some(cache.clone())), true).unwrap();

    // another file under the same explicit name
    let msg = err(&criteo(&b, Some(cache.clone())));
    assert!(
        msg.contains("data.cache") && msg.contains("source file") && msg.contains("b/train.tsv"),
        "{msg}"
    );
    // the file rewritten in place
    raw(&a, 320, 1);
    let msg = err(&criteo(&a, Some(cache.clone())));
    assert!(msg.contains("source size"), "{msg}");
    raw(&a, 300, 1);
    // identical bytes but a new modification time: still not trusted blindly
    let msg = err(&criteo(&a, Some(cache.clone())));
    assert!(
        msg.contains("modification time") && !msg.contains("source size"),
        "{msg}"
    );
    // other prepare options
    fs::remove_dir_all(&cache).unwrap();
    open_data(&criteo(&a, Some(cache.clone())), true).unwrap();
    let msg = err(&DataConfig {
        min_count: 2,
        ..criteo(&a, Some(cache.clone()))
    });
    assert!(msg.contains("min_count: cache 1, now 2"), "{msg}");
    // an Avazu file on a Criteo cache of the same name
    let csv = avazu(&t.join("clicks.csv"));
    let msg = err(&DataConfig {
        format: Some(RawFormat::Avazu),
        ..criteo(&csv, Some(cache.clone()))
    });
    assert!(msg.contains("format: cache criteo, now avazu"), "{msg}");
    // the cache was left alone by every refusal
    assert_eq!(Dataset::open(&cache).unwrap().meta.rows.total(), 300);
    // a cache alone (no source) is used as it is
    let alone = DataConfig {
        cache: Some(cache.clone()),
        ..Default::default()
    };
    assert_eq!(open_data(&alone, true).unwrap().meta.rows.total(), 300);
}

#[test]
fn synthetic_settings_are_part_of_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("synth");
    let synth = |rows| DataConfig {
        synthetic: Some(SynthConfig { rows, seed: 4 }),
        cache: Some(cache.clone()),
        min_count: 1,
        ..Default::default()
    };
    assert_eq!(open_data(&synth(500), true).unwrap().meta.rows.total(), 500);
    assert_eq!(open_data(&synth(500), true).unwrap().meta.rows.total(), 500);
    let msg = err(&synth(0));
    assert!(msg.contains("data.synthetic.rows"), "{msg}");
    let msg = err(&synth(600));
    assert!(
        msg.contains("synthetic (500 rows, seed 4)")
            && msg.contains("synthetic (600 rows, seed 4)"),
        "{msg}"
    );
    // an older cache without a fingerprint under an explicit name: an error, not a silent reuse
    let meta = cache.join("meta.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&meta).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("fingerprint");
    fs::write(&meta, json.to_string()).unwrap();
    let msg = err(&synth(500));
    assert!(msg.contains("no fingerprint"), "{msg}");
    // `mlet data stats` still reads it
    assert_eq!(Dataset::open(&cache).unwrap().meta.rows.total(), 500);
}
