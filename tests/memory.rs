//! Issue 10's memory work, asserted structurally (peak memory itself is measured by the `memory`
//! bench part, not here: it depends on the machine and on whatever else a test process runs):
//! collapse writes the same bits as the per-table products it replaced, and the collapse check's
//! rows-only collapse the bits of the whole one; evaluation batches are sized by the model's
//! per-row estimate and give the same results at any batch size; the budget in `metrics.json`
//! adds up, with the training activations as a term of their own; and `eval.memory_mb: 0` is
//! refused with the key.
mod common;

use tch::{nn, Device, Tensor};

use mlet::config::{parse_runs, EmbeddingConfig, EmbeddingKind, EvalConfig, ModelConfig};
use mlet::data::SplitData;
use mlet::embedding::Embeddings;
use mlet::layers::Cin;
use mlet::models::{CtrModel, InputShape};
use mlet::training::{eval_batch_size, predict, train_run, RunOptions};

fn model_config(yaml: &str) -> ModelConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn mlet_embedding(dim: usize, k: usize, sets: usize) -> EmbeddingConfig {
    EmbeddingConfig {
        k: Some(k),
        dim,
        sets,
        ..common::embedding(EmbeddingKind::Mlet)
    }
}

/// What `collapse` computed before issue 10: each table's `T_f · P_f`, concatenated.
fn collapse_as_before(emb: &Embeddings) -> Tensor {
    let p = emb.projection.as_ref().unwrap();
    let parts: Vec<Tensor> = (0..emb.num_tables())
        .map(|f| {
            let (off, n) = (emb.offsets()[f], emb.cardinalities()[f]);
            emb.table.narrow(0, off, n).matmul(&p.get(f as i64))
        })
        .collect();
    Tensor::cat(&parts, 0)
}

#[test]
fn collapse_writes_the_bits_of_the_per_table_products_also_across_blocks() {
    let _rng = common::rng_lock();
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    // one table longer than a collapse block (2^16 rows), several sets, odd sizes
    let cards = [70_001, 3, 1, 517];
    let emb = Embeddings::new(&vs.root(), &cards, &mlet_embedding(5, 12, 2)).unwrap();
    let expected = tch::no_grad(|| collapse_as_before(&emb));
    for collapsed in [emb.collapse(), emb.collapse_shared()] {
        assert_eq!(collapsed.table.size(), expected.size());
        assert!(
            collapsed.table.equal(&expected),
            "collapse changed the bits"
        );
        assert!(collapsed.projection.is_none());
    }
}

#[test]
fn collapse_rows_holds_the_whole_collapsed_tables_bits_for_its_rows_only() {
    let _rng = common::rng_lock();
    tch::manual_seed(12);
    let vs = nn::VarStore::new(Device::Cpu);
    let cards = [70_001, 3, 1, 517];
    for kind in [EmbeddingKind::Mlet, EmbeddingKind::Single] {
        let config = match kind {
            EmbeddingKind::Mlet => mlet_embedding(5, 12, 2),
            _ => common::embedding(kind),
        };
        let emb = Embeddings::new(&(&vs.root() / format!("{kind:?}")), &cards, &config).unwrap();
        let whole = emb.collapse_shared().table;
        // both sides of a block boundary (65,536), first and last rows, every table and set
        let total = whole.size()[0];
        let rows = [
            0,
            5,
            65_535,
            65_536,
            70_000,
            70_001,
            70_004,
            70_005,
            total - 1,
        ];
        let part = emb.collapse_rows(&rows).unwrap();
        assert_eq!(part.table.size(), [rows.len() as i64, emb.dim()]);
        let expected = whole.index_select(0, &Tensor::from_slice(&rows));
        assert!(part.table.equal(&expected), "{kind:?}: other bits");
        assert!(part.projection.is_none());
        for bad in [&[5, 5][..], &[6, 5], &[-1], &[total]] {
            let err = emb.collapse_rows(bad).err().expect("refused");
            assert!(err.to_string().contains("sorted distinct rows"), "{err}");
        }
    }
}

#[test]
fn single_layer_collapse_copies_and_collapse_shared_shares() {
    let vs = nn::VarStore::new(Device::Cpu);
    let emb = Embeddings::new(
        &vs.root(),
        &common::CARDS,
        &common::embedding(EmbeddingKind::Single),
    )
    .unwrap();
    let copied = emb.collapse();
    let shared = emb.collapse_shared();
    assert!(copied.table.equal(&emb.table) && shared.table.equal(&emb.table));
    assert_ne!(copied.table.data_ptr(), emb.table.data_ptr());
    assert_eq!(shared.table.data_ptr(), emb.table.data_ptr());
}

fn shape(fields: usize) -> InputShape {
    InputShape {
        num_dense: 13,
        cardinalities: vec![50; fields],
        hashed: Vec::new(),
    }
}

#[test]
fn eval_batches_shrink_for_the_cin_and_not_for_dlrm() {
    let _rng = common::rng_lock();
    let fields = 26;
    let single = EmbeddingConfig {
        dim: 16,
        ..common::embedding(EmbeddingKind::Single)
    };
    let xdeepfm = CtrModel::new(
        &model_config("kind: xdeepfm"),
        &single,
        &shape(fields),
        Device::Cpu,
    )
    .unwrap();
    let dlrm = CtrModel::new(
        &model_config("kind: dlrm"),
        &mlet_embedding(16, 64, 1),
        &shape(fields),
        Device::Cpu,
    )
    .unwrap();
    // the CIN's largest intermediate: the second layer's outer product of 128 maps (the first
    // layer's 256 split in half) with 26 fields, d = 16, as f32
    let outer_product = 128 * fields * 16 * 4;
    let xdeepfm_row = xdeepfm.eval_bytes_per_row();
    assert!(xdeepfm_row >= 2 * outer_product, "{xdeepfm_row}");
    // layer 2 (128 maps in): 2·128·26·16 + (128 + 128)·16, plus layer 1's 256·16 kept, the
    // input 26·16 and the output width 128 + 128
    assert_eq!(
        Cin::activation_floats_per_row(fields, 16, &[256, 128], true),
        2 * 128 * 26 * 16 + 256 * 16 + 256 * 16 + 26 * 16 + 256
    );
    // DLRM MLET k = 64: the k-wide rows are its largest input, a few KiB a row in all
    let dlrm_row = dlrm.eval_bytes_per_row();
    assert!(
        dlrm_row >= fields * 64 * 4 && dlrm_row < 64 << 10,
        "{dlrm_row}"
    );

    let eval = EvalConfig::default();
    assert_eq!(eval.memory_mb, 64);
    let cin_batch = eval_batch_size(&eval, &xdeepfm);
    assert_eq!(cin_batch, (64 << 20) / xdeepfm_row);
    assert!(cin_batch < 8192 / 16, "{cin_batch}");
    assert_eq!(eval_batch_size(&eval, &dlrm), (64 << 20) / dlrm_row);
    let roomy = EvalConfig {
        memory_mb: 1 << 20,
        ..eval.clone()
    };
    assert_eq!(
        eval_batch_size(&roomy, &xdeepfm),
        8192,
        "batch_size is the upper bound"
    );
    // a CIN whose row alone takes more than 1 MiB: one row per batch all the same
    let wide = EmbeddingConfig { dim: 64, ..single };
    let huge = CtrModel::new(
        &model_config("{kind: xdeepfm, cin_layer_size: [1024, 1024]}"),
        &wide,
        &shape(fields),
        Device::Cpu,
    )
    .unwrap();
    assert!(huge.eval_bytes_per_row() > 1 << 20);
    let tight = EvalConfig {
        memory_mb: 1,
        ..eval
    };
    assert_eq!(eval_batch_size(&tight, &huge), 1, "at least one row");
}

/// Rows of `common::batch` as a split.
struct Rows {
    dense: Vec<f32>,
    cat: Vec<u32>,
    label: Vec<f32>,
}

impl Rows {
    fn new(n: usize) -> Rows {
        let b = common::batch(n, common::NUM_DENSE, &common::CARDS, 5);
        Rows {
            dense: b.dense,
            cat: b.cat.iter().map(|&c| c as u32).collect(),
            label: b.label,
        }
    }

    fn split(&self) -> SplitData<'_> {
        SplitData {
            len: self.label.len(),
            dense: &self.dense,
            cat: &self.cat,
            label: &self.label,
            num_dense: common::NUM_DENSE,
            num_fields: common::CARDS.len(),
        }
    }
}

/// Evaluation splits a split into batches; each row's logit must not depend on how. What the
/// code guarantees is agreement up to float rounding, not bits: a batch's matrix products are
/// blocked by its size (the test prints where they differ).
#[test]
fn logits_and_metrics_do_not_depend_on_the_eval_batch_size() {
    let rows = Rows::new(1500);
    for (yaml, kind) in [
        ("kind: xdeepfm", EmbeddingKind::Single),
        ("kind: xdeepfm", EmbeddingKind::Mlet),
        (
            "{kind: dlrm, bottom_mlp: [32], top_mlp: [16]}",
            EmbeddingKind::Mlet,
        ),
        ("kind: autoint", EmbeddingKind::Single),
    ] {
        let model = common::randomised(&model_config(yaml), kind, 3);
        let whole = predict(&model, &rows.split(), 8192, None, Device::Cpu).unwrap();
        let reference = mlet::metrics::evaluate(&whole, &rows.label).unwrap();
        for batch in [1000, 64, 7, 1] {
            let parts = predict(&model, &rows.split(), batch, None, Device::Cpu).unwrap();
            // relative to the logits' scale: randomised weights give logits in the tens to
            // hundreds, from intermediates larger still
            let scale = whole.iter().fold(1.0f32, |m, a| m.max(a.abs()));
            let diff = common::max_abs_diff(&whole, &parts) / scale;
            assert!(
                diff <= 1e-6,
                "{yaml} {kind:?} batch {batch}: {diff} of {scale}"
            );
            if diff > 0.0 {
                eprintln!("{yaml} {kind:?} batch {batch}: logits differ by {diff:e} of {scale}");
            }
            // LogLoss moves by at most the largest logit difference (its slope is p - y); AUC
            // by 1/(P·N) per pair of rows whose order a rounding flips: allow a few
            let m = mlet::metrics::evaluate(&parts, &rows.label).unwrap();
            let logit_diff = (diff * scale) as f64;
            assert!(
                (m.auc - reference.auc).abs() <= 1e-5,
                "{yaml} batch {batch}: AUC {} vs {}",
                m.auc,
                reference.auc
            );
            assert!(
                (m.logloss - reference.logloss).abs() <= logit_diff + 1e-9,
                "{yaml} batch {batch}: LogLoss {} vs {} (logits differ by {logit_diff})",
                m.logloss,
                reference.logloss
            );
        }
    }
}

#[test]
fn eval_memory_mb_zero_is_refused_naming_the_key() {
    let text = "
name: x
data: {synthetic: {rows: 100, seed: 1}}
model: {kind: dlrm}
embedding: {dim: 4}
eval: {memory_mb: 0}
";
    let err = match parse_runs(text) {
        Ok(_) => panic!("eval.memory_mb: 0 was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("eval.memory_mb: must be at least 1"), "{err}");
}

/// A trained run's `metrics.json` holds the budget: its parts are the model's variables, the
/// optimizer's state and the mapped cache, and the ratio is the peak over their sum.
#[test]
fn metrics_record_the_memory_budget_and_phase_peaks() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "
name: mem
data: {{synthetic: {{rows: 3000, seed: 2}}, cache: {cache}}}
model: {{kind: deepfm}}
embedding: {{dim: 4, kind: mlet, k: 8, init_std: 0.1}}
training: {{epochs: 1, threads: 1, max_steps: 5}}
eval: {{memory_mb: 1}}
output: {out}
",
        cache = dir.path().join("cache").display(),
        out = dir.path().join("runs").display()
    );
    let spec = parse_runs(&text).unwrap().remove(0);
    let dataset = mlet::experiments::open_data(&spec.config.data, true).unwrap();
    let (_, metrics) = {
        let _rng = common::rng_lock();
        train_run(&spec, &dataset, &RunOptions { quiet: true }).unwrap()
    };
    let rt = metrics.runtime.unwrap();
    let phases: Vec<&str> = rt
        .peak_rss_by_phase
        .iter()
        .map(|p| p.phase.as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "setup",
            "training",
            "evaluation",
            "collapse_check",
            "saving"
        ]
    );
    let largest = rt.peak_rss_by_phase.iter().map(|p| p.peak_rss_bytes).max();
    assert_eq!(rt.peak_rss_bytes, largest);
    let b = rt.memory_budget.unwrap();
    // DeepFM's variables: the MLET table (Σn·k), projections (F·k·d), the linear part (Σn),
    // and the network; Adagrad keeps one sum per variable value
    let rows: usize = dataset.cardinalities().iter().sum();
    let fields = dataset.num_fields();
    assert!(b.parameter_bytes as usize > 4 * (rows * 8 + fields * 8 * 4 + rows));
    // one Adagrad sum per value of every variable (all get gradients), and the step count
    assert_eq!(b.optimizer_state_bytes, b.parameter_bytes + 8);
    let split_bytes = |s| {
        let d = dataset.split(s);
        4 * d.len * (d.num_dense + d.num_fields + 1)
    };
    use mlet::data::Split::{Test, Train, Valid};
    let cache = split_bytes(Train) + split_bytes(Valid) + split_bytes(Test) + 4 * rows;
    assert_eq!(b.cache_bytes as usize, cache);
    assert_eq!(
        b.budget_bytes,
        b.parameter_bytes + b.optimizer_state_bytes + b.cache_bytes
    );
    let ratio = rt.peak_rss_bytes.unwrap() as f64 / b.budget_bytes as f64;
    assert_eq!(b.peak_to_budget, Some(ratio));
    // the refined term: the default batch (256) of the model's per-row estimate
    assert_eq!(spec.config.training.batch_size, 256);
    let shape = InputShape {
        num_dense: dataset.num_dense(),
        cardinalities: dataset.cardinalities().to_vec(),
        hashed: Vec::new(),
    };
    let model = CtrModel::new(
        &spec.config.model,
        &spec.config.embedding,
        &shape,
        Device::Cpu,
    );
    assert_eq!(
        b.training_activation_bytes,
        256 * model.unwrap().eval_bytes_per_row() as u64
    );
    let refined =
        rt.peak_rss_bytes.unwrap() as f64 / (b.budget_bytes + b.training_activation_bytes) as f64;
    assert_eq!(b.peak_to_budget_with_activations, Some(refined));
    assert!(refined < ratio);
}

#[test]
fn cin_estimate_counts_every_layer() {
    // one layer: 2·F·F·d + (F + H)·d, the input F·d and the output width H
    assert_eq!(
        Cin::activation_floats_per_row(3, 2, &[4], false),
        (2 * 3 * 3 + 3 + 4) * 2 + 3 * 2 + 4
    );
}
