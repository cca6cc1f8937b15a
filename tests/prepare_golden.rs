//! `prepare` writes the same cache bytes as the code it replaced: the SHA-256 of every file of the
//! caches prepared from the inputs in `tests/data/prepare-golden/` (TSV, CSV, Avazu, missing
//! values, min-count filtering, rare and unseen categories, every dense and categorical
//! transform, every split rule, skipped bad lines), and the first error of inputs with bad
//! lines, must equal `tests/data/prepare-golden/caches.sha256`, which the two-pass `prepare` of
//! main at 96413f5 wrote (`MLET_WRITE_GOLDEN=1 cargo test --release --test prepare_golden`).
//!
//! `meta.json` is compared after replacing what depends on where and when the test runs (the
//! temporary directory, the creation time, the input's modification time); every other file is
//! compared byte for byte.
use mlet::data::{prepare, InputFormat, PrepareOptions, SplitRule};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/prepare-golden")
}

fn manifest_path() -> PathBuf {
    golden_dir().join("caches.sha256")
}

/// One input and the options it is prepared with.
struct Case {
    name: &'static str,
    opts: PrepareOptions,
}

fn random(valid_fraction: f64, test_fraction: f64) -> SplitRule {
    SplitRule::Random {
        valid_fraction,
        test_fraction,
    }
}

/// The inputs, copied into `dir` (so that paths in the cache can be stripped), and the cases.
fn cases(dir: &Path) -> Vec<Case> {
    let golden = golden_dir();
    for name in [
        "criteo-synth-600.txt",
        "criteo-edge.txt",
        "mixed.csv",
        "avazu.csv",
        "mixed.yaml",
        "criteo-tsv.yaml",
        "criteo-sample.yaml",
    ] {
        fs::copy(golden.join(name), dir.join(name)).unwrap();
    }
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/criteo-sample/criteo_sample.csv"),
        dir.join("criteo_sample.csv"),
    )
    .unwrap();
    // A predefined split cut from the synthetic file: lines 1-400 train, 401-500 validate,
    // 501-600 test.
    let synth = fs::read_to_string(dir.join("criteo-synth-600.txt")).unwrap();
    let lines: Vec<&str> = synth.split_inclusive('\n').collect();
    for (name, range) in [
        ("part-train.txt", 0..400),
        ("part-valid.txt", 400..500),
        ("part-test.txt", 500..600),
    ] {
        fs::write(dir.join(name), lines[range].concat()).unwrap();
    }

    let p = |name: &str| dir.join(name);
    let out = |name: &str| dir.join("out").join(name);
    let csv = |schema: &str| InputFormat::Csv { schema: p(schema) };
    let mut cases = Vec::new();
    let mut add = |name: &'static str, opts: PrepareOptions| cases.push(Case { name, opts });

    add(
        "criteo-days",
        PrepareOptions::new(p("criteo-synth-600.txt"), InputFormat::Criteo, out("a")),
    );
    let mut o = PrepareOptions::new(p("criteo-synth-600.txt"), InputFormat::Criteo, out("b"));
    o.split = random(0.1, 0.2);
    o.seed = 5;
    o.min_count = 2;
    add("criteo-random-min2", o);
    let mut o = PrepareOptions::files(
        p("part-train.txt"),
        p("part-valid.txt"),
        p("part-test.txt"),
        InputFormat::Criteo,
        out("c"),
    );
    o.min_count = 3;
    add("criteo-files-min3", o);
    let mut o = PrepareOptions::new(p("criteo-edge.txt"), InputFormat::Criteo, out("d"));
    o.skip_bad_lines = true;
    o.min_count = 2;
    add("criteo-edge-skip-min2", o);
    let mut o = PrepareOptions::new(p("criteo-edge.txt"), csv("criteo-tsv.yaml"), out("e"));
    o.skip_bad_lines = true;
    o.seed = 1;
    add("tsv-schema-skip", o);
    let mut o = PrepareOptions::new(p("mixed.csv"), csv("mixed.yaml"), out("f"));
    o.skip_bad_lines = true;
    o.min_count = 2;
    o.seed = 3;
    add("mixed-csv-skip-min2", o);
    let mut o = PrepareOptions::new(p("mixed.csv"), csv("mixed.yaml"), out("g"));
    o.skip_bad_lines = true;
    o.split = SplitRule::Days;
    add("mixed-csv-days", o);
    add(
        "avazu",
        PrepareOptions::new(p("avazu.csv"), InputFormat::Avazu, out("h")),
    );
    let mut o = PrepareOptions::new(p("criteo_sample.csv"), csv("criteo-sample.yaml"), out("i"));
    o.split = SplitRule::Days;
    add("criteo-sample-csv-days", o);
    // Without --skip-bad-lines: the first bad line's error.
    add(
        "criteo-edge-error",
        PrepareOptions::new(p("criteo-edge.txt"), InputFormat::Criteo, out("j")),
    );
    add(
        "mixed-csv-error",
        PrepareOptions::new(p("mixed.csv"), csv("mixed.yaml"), out("k")),
    );
    cases
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `meta.json` without what depends on the run's place and time: paths lose the temporary
/// directory, times become 0.
fn normalized_meta(text: &str, prefixes: &[String]) -> String {
    fn walk(v: &mut serde_json::Value, prefixes: &[String]) {
        match v {
            serde_json::Value::String(s) => {
                for p in prefixes {
                    if let Some(rest) = s.strip_prefix(p.as_str()) {
                        *s = rest.to_string();
                        break;
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|x| walk(x, prefixes)),
            serde_json::Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    if k == "created_unix" || k == "modified_unix_ns" {
                        *x = serde_json::Value::from(0);
                    } else {
                        walk(x, prefixes);
                    }
                }
            }
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    walk(&mut v, prefixes);
    serde_json::to_string_pretty(&v).unwrap()
}

/// Every file of the cache `dir`, by path relative to it, in order.
fn files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            files(&e, base, out);
        } else {
            out.push(e.strip_prefix(base).unwrap().to_path_buf());
        }
    }
}

/// `case file sha256` lines (or `case error message`) of every case.
fn digests() -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("out")).unwrap();
    let mut prefixes = vec![format!("{}/", dir.display())];
    let canon = fs::canonicalize(dir).unwrap();
    if canon != dir {
        prefixes.push(format!("{}/", canon.display()));
    }
    let mut lines = BTreeMap::new();
    for case in cases(dir) {
        match prepare(&case.opts) {
            Ok(_) => {
                let mut names = Vec::new();
                files(&case.opts.out, &case.opts.out, &mut names);
                for name in names {
                    let bytes = fs::read(case.opts.out.join(&name)).unwrap();
                    let digest = if name == Path::new("meta.json") {
                        let text = String::from_utf8(bytes).unwrap();
                        sha256(normalized_meta(&text, &prefixes).as_bytes())
                    } else {
                        sha256(&bytes)
                    };
                    lines.insert(format!("{} {}", case.name, name.display()), digest);
                }
            }
            Err(e) => {
                let mut msg = format!("{e:#}");
                for p in &prefixes {
                    msg = msg.replace(p.as_str(), "");
                }
                lines.insert(format!("{} error", case.name), msg);
            }
        }
    }
    lines
}

#[test]
fn prepare_writes_the_golden_cache_bytes() {
    let got = digests();
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    if std::env::var_os("MLET_WRITE_GOLDEN").is_some() {
        fs::write(manifest_path(), text).unwrap();
        return;
    }
    let want_text = fs::read_to_string(manifest_path()).unwrap();
    let want: BTreeMap<String, String> = want_text
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (case, file, rest) = (parts.next(), parts.next(), parts.next());
            (
                format!("{} {}", case.unwrap(), file.unwrap()),
                rest.unwrap().to_string(),
            )
        })
        .collect();
    let mut differences = Vec::new();
    for key in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        match (want.get(key), got.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => differences.push(format!("{key}: golden {a:?}, now {b:?}")),
        }
    }
    assert!(
        differences.is_empty(),
        "the cache bytes differ from the golden ones:\n{}",
        differences.join("\n")
    );
    // Every kind of case is there: caches of each input, and the two errors.
    assert_eq!(want.keys().filter(|k| k.ends_with(" error")).count(), 2);
    assert!(want.len() > 90, "{} golden entries", want.len());
}
