//! Property-based fuzzing of everything that reads user input: the raw line readers (Criteo,
//! Avazu), the CSV schema loader, the experiment loader and the cache opener. Random and mutated
//! inputs must give an error or a result that satisfies the reader's own invariants: never a
//! panic, never a silently wrong result.
//!
//! `make test` runs [`DEFAULT_CASES`] inputs per target; `make fuzz` sets `MLET_FUZZ_CASES`
//! (10^6 by default) and runs only these tests.
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use std::path::{Path, PathBuf};

use crate::data::parse::LineParser;
use crate::data::schema::{FormatPlan, Layout};
use crate::data::{
    prepare, write_synthetic, CsvSchema, Dataset, InputFormat, PrepareOptions, Split, SynthConfig,
};

const DEFAULT_CASES: u32 = 300;

/// The same inputs on every run unless `MLET_FUZZ_SEED` says otherwise, so that `make test`
/// cannot turn red by chance; `make fuzz` passes a fresh seed.
fn seed() -> u64 {
    std::env::var("MLET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cases() -> u32 {
    std::env::var("MLET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Runs `check` on `cases()` inputs from `strategy`; a panic or an `Err` is a failure, reported
/// with the shrunk input. Prints how many inputs ran (for the README's figures).
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        // mutated inputs rarely repeat; rejections are not used
        max_global_rejects: 0,
        rng_seed: RngSeed::Fixed(seed()),
        ..Config::default()
    };
    let start = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| check(v).map_err(TestCaseError::fail));
    if let Err(e) = result {
        panic!("fuzz target {name}: {e}");
    }
    eprintln!(
        "fuzz target {name}: {} inputs (seed {}) in {:.1} s",
        cases(),
        seed(),
        start.elapsed().as_secs_f64()
    );
}

/// Bytes that matter to the readers: separators, quotes, line ends, signs, number syntax.
const TOKENS: &[&[u8]] = &[
    b"\t",
    b",",
    b"\"",
    b"\n",
    b"\r\n",
    b"-",
    b"+",
    b"e",
    b".",
    b"0",
    b"1",
    b"2",
    b"nan",
    b"inf",
    b"-inf",
    b"99999999999999999999",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\0",
    b" ",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"&a",
    b"*a",
    b"!!",
    b"~",
    b"null",
    b"..",
    b"/",
    b"#",
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Token(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (at, any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (at, 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Token(p, t)),
        (at, 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (at, 1usize..32).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        at.prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let pos = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        let len = bytes.len();
        match *m {
            Mutation::Flip(p, b) if len > 0 => bytes[p % len] ^= b.max(1),
            Mutation::Flip(..) => {}
            Mutation::Insert(p, b) => bytes.insert(pos(p, len), b),
            Mutation::Token(p, t) => {
                let at = pos(p, len);
                bytes.splice(at..at, TOKENS[t].iter().copied());
            }
            Mutation::Delete(p, n) => {
                let at = pos(p, len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(p, n) => {
                let at = pos(p, len);
                let piece: Vec<u8> = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, piece);
            }
            Mutation::Truncate(p) => bytes.truncate(pos(p, len)),
        }
    }
    bytes
}

/// One of `seeds`, mutated 0–8 times, or random bytes.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        4 => (0..n, prop::collection::vec(mutation(), 0..8))
            .prop_map(move |(i, m)| apply(seeds[i].clone(), &m)),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// A parsed line must have the layout's shape, finite dense values and a 0/1 label.
fn check_line(parser: &mut LineParser, line: &[u8]) -> Result<(), String> {
    let mut rec = parser.new_record();
    let (dense, cats) = (parser.layout().dense.len(), parser.layout().cats.len());
    match parser.parse(line, &mut rec) {
        Ok(()) => {
            if rec.dense.len() != dense || rec.cats.len() != cats {
                return Err(format!("record of the wrong shape: {rec:?}"));
            }
            if let Some(x) = rec.dense.iter().find(|x| !x.is_finite()) {
                return Err(format!("non-finite dense value {x} accepted"));
            }
            if rec.label != 0.0 && rec.label != 1.0 {
                return Err(format!("label {} accepted", rec.label));
            }
            Ok(())
        }
        Err(e) if e.column == 0 || e.expected.is_empty() => {
            Err(format!("an error without a column or expectation: {e:?}"))
        }
        Err(_) => Ok(()),
    }
}

const CRITEO_LINES: &[&str] = &[
    "0\t1\t1\t5\t0\t1382\t4\t15\t2\t181\t1\t2\t\t2\t68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t25c83c98\t7e0ccccf\tde7995b8\t1f89b562\ta73ee510\ta8cd5504\tb2cb9c98\t37c9c164\t2824a5f6\t1adce6ef\t8ba8b39a\t891b62e7\te5ba7672\tf54016b9\t21ddcdc9\tb1252a9d\t07b5194c\t\t3a171ecb\tc5c50484\te8b83407\t9727dd16",
    "1\t\t-1\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t",
];

#[test]
fn fuzz_criteo_lines() {
    let seeds = CRITEO_LINES.iter().map(|l| l.as_bytes().to_vec()).collect();
    let mut parser = LineParser::new(Layout::criteo());
    for l in CRITEO_LINES {
        check_line(&mut parser, l.as_bytes()).unwrap();
        assert!(parser.parse(l.as_bytes(), &mut parser.new_record()).is_ok());
    }
    let parser = std::cell::RefCell::new(parser);
    fuzz("criteo lines", input(seeds), |line| {
        check_line(&mut parser.borrow_mut(), &line)
    });
}

const AVAZU_HEADER: &str = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,\
app_domain,app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,\
C17,C18,C19,C20,C21";
const AVAZU_LINE: &str = "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,\
ecad2386,7801e8d9,07d7df22,a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79";

/// The Avazu layout for `header` (a possibly mutated header line).
fn avazu_layout(header: &[u8]) -> anyhow::Result<Layout> {
    let plan = FormatPlan::load(&InputFormat::Avazu)?;
    let mut splitter = crate::data::parse::Splitter::new(plan.delimiter, plan.quotes);
    let n = splitter
        .split(header)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names = splitter.columns_as_strings(header);
    plan.layout(Some(names), n, Path::new("fuzz.csv"))
}

#[test]
fn fuzz_avazu_lines_and_headers() {
    let layout = avazu_layout(AVAZU_HEADER.as_bytes()).unwrap();
    let mut parser = LineParser::new(layout);
    check_line(&mut parser, AVAZU_LINE.as_bytes()).unwrap();
    let parser = std::cell::RefCell::new(parser);
    fuzz(
        "avazu lines",
        input(vec![AVAZU_LINE.as_bytes().to_vec()]),
        |line| check_line(&mut parser.borrow_mut(), &line),
    );
    // a mutated header gives an error or a layout that parses lines by its own rules
    fuzz(
        "avazu headers",
        (
            input(vec![AVAZU_HEADER.as_bytes().to_vec()]),
            input(vec![AVAZU_LINE.as_bytes().to_vec()]),
        ),
        |(header, line)| match avazu_layout(&header) {
            Err(e) if e.to_string().is_empty() => Err("an empty error".into()),
            Err(_) => Ok(()),
            Ok(layout) => check_line(&mut LineParser::new(layout), &line),
        },
    );
}

const SCHEMAS: &[&str] = &[
    "delimiter: \"\\t\"\nheader: true\nlabel: click\ndense: [price, {column: 3, transform: identity, name: age}]\ncategorical: [user, item, {column: ts, transform: day_of_week}]\nremaining: ignore\n",
    "header: false\nlabel: 0\ndense: [1, 2]\ncategorical: [3]\nremaining: categorical\nignore: [4]\n",
    "label: click\nremaining: categorical\nignore: [id]\ndense: [{column: hour, transform: hour_of_day, name: hour}]\n",
];
const SCHEMA_HEADER: &[&str] = &["click", "price", "user", "item", "ts", "id", "hour"];

#[test]
fn fuzz_schema_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schema.yaml");
    let seeds = SCHEMAS.iter().map(|s| s.as_bytes().to_vec()).collect();
    fuzz("schema loader", input(seeds), |text| {
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        let schema = match CsvSchema::from_yaml_file(&path) {
            Err(e) => {
                let msg = format!("{e:#}");
                return if msg.contains(&path.display().to_string()) {
                    Ok(())
                } else {
                    Err(format!(
                        "an error that does not name the schema file: {msg}"
                    ))
                };
            }
            Ok(s) => s,
        };
        let format = InputFormat::Csv {
            schema: path.clone(),
        };
        let Ok(plan) = FormatPlan::load(&format) else {
            return Ok(());
        };
        let header: Vec<String> = SCHEMA_HEADER.iter().map(|s| s.to_string()).collect();
        let layout = plan.layout(
            schema.header.then_some(header),
            SCHEMA_HEADER.len(),
            Path::new("fuzz.csv"),
        );
        if let Ok(layout) = layout {
            let d = plan.delimiter as char;
            let line = [
                "1",
                "2.5",
                "u1",
                "i1",
                "2014-10-21 10:00:00",
                "7",
                "14102100",
            ]
            .join(&d.to_string());
            check_line(&mut LineParser::new(layout), line.as_bytes())?;
        }
        Ok(())
    });
}

const EXPERIMENTS: &[&str] = &[
    "name: t\ndata: {synthetic: {rows: 1000, seed: 3}}\nmodel: {kind: dlrm}\nembedding: {dim: 8}\n",
    "name: g\ndata:\n  synthetic: {rows: 8000, seed: 2}\n  cache: c\nmodel: {kind: dlrm, bottom_mlp: [16], top_mlp: [16]}\nembedding: {dim: 4, init_std: 0.25}\ntraining: {batch_size: 64, threads: 1}\noutput: runs\nreport: {plots_dir: plots, prefix: g}\ngrid:\n  d: [2, 4]\n  k: [baseline, 8]\n  seed: [1, 2]\n",
    "name: m\ndata: {raw: a.tsv, format: criteo, min_count: 2}\nmodel: {kind: wdl}\nembedding: {dim: 16, kind: mlet, k: 64, init_std: 0.1, hash: {largest: 2, fraction: 0.5}}\noptimizer: {kind: adam, lr: 0.001, betas: [0.9, 0.99]}\nruns:\n  - name: a\n  - name: b\n    model: {kind: dcn, cross_parameterization: matrix}\n",
];

#[test]
fn fuzz_experiment_loader() {
    let seeds = EXPERIMENTS.iter().map(|s| s.as_bytes().to_vec()).collect();
    for s in EXPERIMENTS {
        crate::config::parse_runs(s).unwrap();
    }
    fuzz("experiment loader", input(seeds), |text| {
        let Ok(text) = String::from_utf8(text) else {
            return Ok(()); // the file reader rejects non-UTF-8 before parsing
        };
        match crate::config::parse_runs(&text) {
            Err(e) if format!("{e:#}").is_empty() => Err("an empty error".into()),
            Err(_) => Ok(()),
            Ok(runs) => {
                for r in &runs {
                    r.config.validate()?;
                    for name in [&r.run, &r.config.name] {
                        if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
                            return Err(format!("unusable name `{name}` accepted"));
                        }
                    }
                }
                Ok(())
            }
        }
    });
}

/// A small prepared cache, and its files' original bytes.
fn small_cache(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let raw = dir.join("raw.tsv");
    write_synthetic(&raw, &SynthConfig { rows: 300, seed: 1 }).unwrap();
    let cache = dir.join("cache");
    prepare(&PrepareOptions::new(&raw, InputFormat::Criteo, &cache)).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![cache];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                files.push((p, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn fuzz_cache_opener() {
    let dir = tempfile::tempdir().unwrap();
    let files = small_cache(dir.path());
    let cache = dir.path().join("cache");
    Dataset::open(&cache).unwrap().verify().unwrap();
    let n = files.len();
    let strategy = (0..n, prop::collection::vec(mutation(), 1..6));
    fuzz("cache opener", strategy, |(i, mutations)| {
        let (path, original) = &files[i];
        std::fs::write(path, apply(original.clone(), &mutations)).map_err(|e| e.to_string())?;
        let outcome = Dataset::open(&cache).and_then(|ds| {
            ds.verify()?;
            Ok(ds)
        });
        let checked = match outcome {
            Err(e) if format!("{e:#}").is_empty() => Err("an empty error".to_string()),
            Err(_) => Ok(()),
            Ok(ds) => {
                // what training reads must be consistent with what was checked
                let cards = ds.cardinalities().to_vec();
                let mut result = Ok(());
                for split in Split::ALL {
                    let d = ds.split(split);
                    if d.cat.len() != d.len * d.num_fields
                        || d.dense.len() != d.len * d.num_dense
                        || d.label.len() != d.len
                        || d.num_fields != cards.len()
                    {
                        result = Err(format!("{split:?}: arrays of inconsistent lengths"));
                    }
                }
                result
            }
        };
        std::fs::write(path, original).map_err(|e| e.to_string())?;
        checked
    });
}
