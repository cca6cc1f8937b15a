//! The modulo hashing trick (`embedding.hash`): the mapping on hand-made ids, the choice of
//! fields and buckets, a small hashed run end to end (training, parameter counts, export) and
//! the configuration errors.
mod common;

use std::path::{Path, PathBuf};
use tch::{nn, CModule, Device, Kind, Tensor};

use mlet::config::{parse_runs, EmbeddingConfig, EmbeddingKind, HashConfig, TableInit};
use mlet::data::{Batch, Dataset, Split};
use mlet::embedding::hash::{bucket, resolve, table_rows};
use mlet::embedding::{Embeddings, HashedField, LookupIndex};
use mlet::experiments::{run_all, Outcome};
use mlet::export::{export_run, load_run};
use mlet::training::{predict, RunMetrics, RunOptions};

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("F{i}")).collect()
}

fn hash_cfg(largest: Option<usize>, fields: &[&str], fraction: Option<f64>) -> HashConfig {
    HashConfig {
        largest,
        fields: (!fields.is_empty()).then(|| fields.iter().map(|s| s.to_string()).collect()),
        fraction,
        buckets: None,
    }
}

#[test]
fn ids_map_to_their_remainder_and_oov_stays_zero() {
    assert_eq!(bucket(0, 4), 0);
    assert_eq!(bucket(3, 4), 3);
    assert_eq!(bucket(4, 4), 0);
    assert_eq!(bucket(9, 4), 1);
    assert_eq!(bucket(9, 10), 9);

    // field 0: vocabulary 10 hashed into 4 rows (offset 0); field 1: 7 rows, not hashed
    // (offset 4). Rows of [[0, 6], [5, 3], [9, 0]]: [[0, 10], [1, 7], [1, 4]].
    let local = [0, 6, 5, 3, 9, 0];
    let index = LookupIndex::hashed(&local, &[0, 4], &[10, 7], &[4, 7], Device::Cpu).unwrap();
    assert_eq!(index.batch, 3);
    assert_eq!(
        Vec::<i64>::try_from(&index.unique).unwrap(),
        [0, 1, 4, 7, 10]
    );
    assert_eq!(
        Vec::<i64>::try_from(&index.inverse).unwrap(),
        [0, 4, 1, 3, 1, 2]
    );
    // ids are checked against the vocabulary, not the (smaller) table
    let err = LookupIndex::hashed(&[10, 0], &[0, 4], &[10, 7], &[4, 7], Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("vocabulary of 10"), "{err}");

    // the training lookup and the traced export path read the same rows
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = EmbeddingConfig {
        dim: 3,
        kind: EmbeddingKind::Mlet,
        k: Some(5),
        init_std: 0.5,
        table_init: TableInit::Xavier,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    };
    let hashed = [HashedField {
        index: 0,
        name: "F1".into(),
        buckets: 4,
    }];
    let emb = Embeddings::hashed(&(vs.root() / "emb"), &[10, 7], &hashed, &cfg).unwrap();
    assert_eq!(emb.cardinalities(), [4, 7]);
    assert_eq!(emb.table.size(), [11, 5]);
    assert_eq!(emb.inference_parameters(), 11 * 3);
    assert_eq!(emb.training_parameters(), 11 * 5 + 2 * 5 * 3);
    let index = emb.index(&local, Device::Cpu).unwrap();
    let via_index = tch::no_grad(|| emb.lookup(&index).output);
    let raw = Tensor::from_slice(&local).view([3, 2]);
    let via_tensor = tch::no_grad(|| emb.forward_local(&raw));
    assert!(via_index.allclose(&via_tensor, 1e-6, 1e-6, false));
    // ids 5 and 9 of field 0 are row 1, as id 1 is; the collapsed tables agree
    let reduced = Tensor::from_slice(&[0i64, 6, 1, 3, 1, 0]).view([3, 2]);
    let collapsed = emb.collapse();
    assert!(tch::no_grad(|| collapsed.forward_local(&reduced)).allclose(
        &via_tensor,
        1e-5,
        1e-5,
        false
    ));
    // a hashed field must shrink
    let too_many = [HashedField {
        buckets: 10,
        ..hashed[0].clone()
    }];
    assert!(Embeddings::hashed(&(vs.root() / "e2"), &[10, 7], &too_many, &cfg).is_err());
}

#[test]
fn the_largest_or_the_named_fields_are_chosen_with_their_buckets() {
    let cards = [5, 100, 3, 41, 100];
    let n = names(5);
    let field = |index: usize, buckets: usize| HashedField {
        index,
        name: format!("F{}", index + 1),
        buckets,
    };
    // ties between the two 100s are both taken; half of 100 is 50
    let two = resolve(&hash_cfg(Some(2), &[], Some(0.5)), &n, &cards).unwrap();
    assert_eq!(two, [field(1, 50), field(4, 50)]);
    // fractions round up: 41 / 2 → 21; fields come back in field order
    let three = resolve(&hash_cfg(Some(3), &[], Some(0.5)), &n, &cards).unwrap();
    assert_eq!(three, [field(1, 50), field(3, 21), field(4, 50)]);
    assert_eq!(table_rows(&cards, &three).unwrap(), [5, 50, 3, 21, 50]);
    let named = HashConfig {
        buckets: Some(30),
        ..hash_cfg(None, &["F4", "F2"], None)
    };
    assert_eq!(
        resolve(&named, &n, &cards).unwrap(),
        [field(1, 30), field(3, 30)]
    );

    let err = |cfg: &HashConfig| resolve(cfg, &n, &cards).unwrap_err().to_string();
    let unknown = HashConfig {
        buckets: Some(2),
        ..hash_cfg(None, &["F2", "C9"], None)
    };
    let e = err(&unknown);
    assert!(
        e.contains("embedding.hash.fields") && e.contains("C9"),
        "{e}"
    );
    let e = err(&HashConfig {
        buckets: Some(41),
        ..hash_cfg(None, &["F4"], None)
    });
    assert!(
        e.contains("embedding.hash.buckets") && e.contains("would not shrink"),
        "{e}"
    );
    // a field of 1 category cannot shrink by any fraction
    let e = resolve(&hash_cfg(Some(1), &[], Some(0.5)), &names(2), &[1usize, 1])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("embedding.hash.fraction") && e.contains("would not shrink"),
        "{e}"
    );
    let e = err(&hash_cfg(Some(6), &[], Some(0.5)));
    assert!(
        e.contains("embedding.hash.largest") && e.contains('5'),
        "{e}"
    );
    let e = err(&HashConfig {
        buckets: Some(2),
        ..hash_cfg(None, &["F2", "F2"], None)
    });
    assert!(e.contains("twice"), "{e}");
}

const BASE: &str = "name: h\ndata: {synthetic: {rows: 100, seed: 1}}\nmodel: {kind: dlrm}\n";

#[test]
fn bad_hash_settings_are_errors_naming_the_key() {
    let cases = [
        (
            "{largest: 2, fields: [C1], fraction: 0.5}",
            "embedding.hash",
            "not both",
        ),
        ("{fraction: 0.5}", "embedding.hash", "largest"),
        (
            "{largest: 2, fraction: 0.5, buckets: 10}",
            "embedding.hash",
            "not both",
        ),
        ("{largest: 2}", "embedding.hash", "fraction"),
        (
            "{largest: 0, fraction: 0.5}",
            "embedding.hash.largest",
            "at least 1",
        ),
        (
            "{fields: [], buckets: 3}",
            "embedding.hash.fields",
            "at least one",
        ),
        (
            "{largest: 1, fraction: 0}",
            "embedding.hash.fraction",
            "(0, 1)",
        ),
        (
            "{largest: 1, fraction: 1}",
            "embedding.hash.fraction",
            "(0, 1)",
        ),
        (
            "{largest: 1, fraction: 1.5}",
            "embedding.hash.fraction",
            "(0, 1)",
        ),
        (
            "{largest: 1, buckets: 0}",
            "embedding.hash.buckets",
            "at least 1",
        ),
        ("{largest: 1, buckets: 5, seed: 2}", "seed", "unknown field"),
        ("{largest: -1, buckets: 5}", "embedding.hash.largest", ""),
    ];
    for (hash, key, what) in cases {
        let text = format!("{BASE}embedding: {{dim: 4, hash: {hash}}}\n");
        let msg = format!("{:#}", parse_runs(&text).unwrap_err());
        assert!(msg.contains(key) && msg.contains(what), "{hash}: {msg}");
    }
    // a valid setting parses, and an unhashed configuration writes no `hash` key
    let ok = parse_runs(&format!(
        "{BASE}embedding: {{dim: 4, hash: {{largest: 2, fraction: 0.5}}}}\n"
    ))
    .unwrap();
    assert_eq!(
        ok[0].config.embedding.hash,
        Some(hash_cfg(Some(2), &[], Some(0.5)))
    );
    let plain = parse_runs(&format!("{BASE}embedding: {{dim: 4}}\n")).unwrap();
    assert!(!serde_yaml::to_string(&plain[0].config)
        .unwrap()
        .contains("hash"));
}

fn experiment(dir: &Path, hash: &str) -> String {
    format!(
        "
name: hashed
data:
  synthetic: {{rows: 6000, seed: 3}}
  cache: {cache}
model: {{kind: deepfm, dnn_hidden_units: [16]}}
embedding: {{dim: 4, kind: mlet, k: 8, init_std: 0.1, hash: {hash}}}
optimizer: {{kind: adagrad, lr: 0.02}}
training: {{batch_size: 128, seed: 2, loss_reduction: sum}}
output: {out}
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    )
}

fn train(text: &str) -> anyhow::Result<(PathBuf, RunMetrics)> {
    let specs = parse_runs(text)?;
    match run_all(&specs, false, &RunOptions { quiet: true })?.remove(0) {
        Outcome::Trained(d, m) | Outcome::Skipped(d, m) => Ok((d, *m)),
    }
}

#[test]
fn a_hashed_run_trains_counts_hashed_sizes_and_exports_the_modulo() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, metrics) = train(&experiment(tmp.path(), "{largest: 2, fraction: 0.5}")).unwrap();
    assert!(metrics.diverged.is_none());
    let auc = metrics.test.as_ref().expect("test metrics").auc;
    assert!(auc.is_finite(), "{auc}");
    assert!(metrics.collapse_max_abs_diff < 1e-4);

    // run.json: the two largest fields (by the data's cardinalities), at half size rounded up
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let cards: Vec<usize> = info["data"]["cardinalities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut by_size: Vec<usize> = (0..cards.len()).collect();
    by_size.sort_by_key(|&f| (std::cmp::Reverse(cards[f]), f));
    let mut chosen = by_size[..2].to_vec();
    chosen.sort();
    let recorded: Vec<HashedField> = serde_json::from_value(info["data"]["hash"].clone()).unwrap();
    let expected: Vec<HashedField> = chosen
        .iter()
        .map(|&f| HashedField {
            index: f,
            name: format!("C{}", f + 1),
            buckets: cards[f].div_ceil(2),
        })
        .collect();
    assert_eq!(recorded, expected);

    // parameters: Σ over fields of the (hashed) rows times d; training adds k-wide rows and F
    // projections
    let (fields, d, k) = (cards.len() as i64, 4i64, 8i64);
    let rows: i64 = (0..cards.len())
        .map(|f| match chosen.contains(&f) {
            true => cards[f].div_ceil(2) as i64,
            false => cards[f] as i64,
        })
        .sum();
    assert!(rows < cards.iter().sum::<usize>() as i64);
    assert_eq!(metrics.embedding_params.inference, rows * d);
    assert_eq!(metrics.embedding_params.training, rows * k + fields * k * d);
    let loaded = load_run(&run, Device::Cpu).unwrap();
    assert_eq!(loaded.model.embeddings.table.size(), [rows, k]);
    assert_eq!(
        loaded.model.linear.as_ref().unwrap().table.size(),
        [rows, 1]
    );

    // held-out rows whose hashed fields hold ids beyond the buckets: the modulo matters
    let cache = tmp.path().join("cache");
    let data = Dataset::open(&cache).unwrap();
    let split = data.split(Split::Test);
    let n = 400.min(split.len);
    let mut batch = Batch::default();
    split.gather(&(0..n).collect::<Vec<_>>(), &mut batch);
    let beyond = batch
        .cat
        .iter()
        .enumerate()
        .filter(|(pos, &id)| {
            let f = pos % cards.len();
            chosen.contains(&f) && id >= cards[f].div_ceil(2) as i64
        })
        .count();
    assert!(beyond > 0, "no test id beyond the buckets");
    let trained: Vec<f32> = predict(&loaded.model, &split, 4096, Some(n), Device::Cpu)
        .unwrap()
        .iter()
        .map(|z| 1.0 / (1.0 + (-z).exp()))
        .collect();

    let out = tmp.path().join("hashed.pt");
    let report = export_run(&run, &out, None, Device::Cpu).unwrap();
    assert_eq!(report.embedding_bytes, rows * d * 4);
    let module = CModule::load(&out).unwrap();
    let b = n as i64;
    let dense = Tensor::from_slice(&batch.dense).view([b, -1]);
    let raw = Tensor::from_slice(&batch.cat).view([b, -1]);
    let exported = |cat: &Tensor| -> Vec<f32> {
        let p = module.forward_ts(&[&dense, cat]).unwrap();
        Vec::<f32>::try_from(&p.to_kind(Kind::Float)).unwrap()
    };
    let diff = common::max_abs_diff(&exported(&raw), &trained);
    eprintln!("hashed DeepFM MLET: CModule max |Δp| = {diff:e} ({beyond} ids beyond the buckets)");
    assert!(diff <= 1e-5, "the exported model differs by {diff}");
    // inside the module, an id and its remainder are the same input
    let reduced: Vec<i64> = batch
        .cat
        .iter()
        .enumerate()
        .map(|(pos, &id)| {
            let f = pos % cards.len();
            match chosen.contains(&f) {
                true => id % cards[f].div_ceil(2) as i64,
                false => id,
            }
        })
        .collect();
    let reduced = Tensor::from_slice(&reduced).view([b, -1]);
    assert_eq!(exported(&reduced), exported(&raw));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mlet::export::schema_path(&out)).unwrap())
            .unwrap();
    assert_eq!(schema["inputs"]["cat"]["hashed"], info["data"]["hash"]);

    // the model is rebuilt from the run directory alone
    std::fs::remove_dir_all(&cache).unwrap();
    let again = load_run(&run, Device::Cpu).unwrap();
    assert_eq!(again.shape.hashed, expected);
    assert!(again
        .model
        .embeddings
        .table
        .equal(&loaded.model.embeddings.table));
}

#[test]
fn hash_settings_the_data_cannot_meet_stop_the_run_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    for (hash, key, what) in [
        (
            "{fields: [C3, nope], buckets: 10}",
            "embedding.hash.fields",
            "nope",
        ),
        (
            "{fields: [C3], buckets: 100000000}",
            "embedding.hash.buckets",
            "would not shrink",
        ),
        (
            "{largest: 27, fraction: 0.5}",
            "embedding.hash.largest",
            "26",
        ),
    ] {
        let err = train(&experiment(tmp.path(), hash)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(key) && msg.contains(what), "{hash}: {msg}");
        assert!(
            !tmp.path().join("runs/hashed").exists(),
            "{hash}: left a run directory"
        );
    }
}
