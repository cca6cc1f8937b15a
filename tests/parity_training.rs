//! Training steps against the benchmark's DeepCTR-Torch reference: from the same weights and
//! batches, a few Adagrad steps of mlet's `train_step` and of DeepCTR-Torch's `fit` loop
//! (benches/compare/deepctr_ref.py, the sparse-patched variant that `make bench-compare` runs as
//! `deepctr-sparse`) must leave the same weights, for DCN (single and MLET tables), DeepFM
//! (MLET) and xDeepFM (single and MLET: its CIN computes its own backward pass in training,
//! `Cin::backward_recomputing`) and AutoInt (single and MLET: its attention layers compute their
//! own backward pass in training, `AttentionTape`). The forward-only parity tests cannot see a difference in gradients, penalties or
//! optimizer state; a difference in initialisation this cannot see either (both start from the
//! same weights): `fresh_weights_follow_deepctr_torch_initialisation` checks that.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use tch::{Device, Kind, Tensor};

use mlet::config::{
    AutointConfig, DcnConfig, DeepfmConfig, EmbeddingConfig, EmbeddingKind, LossReduction,
    ModelConfig, OptimizerConfig, OptimizerKind, TableInit, XdeepfmConfig,
};
use mlet::models::CtrModel;
use mlet::training::{train_step, Optimizer};

use common::{batch, rng_lock, shape, CARDS, DIM, NUM_DENSE};

const K: usize = 8;
const LR: f64 = 0.02;
const STEPS: usize = 3;

/// Weights by name (see `weights`).
type Weights = BTreeMap<String, Tensor>;

/// Every trainable weight under the names `training_parity.py` reads: the network's DeepCTR
/// state dict plus `emb.C{f}`, `proj.C{f}` and `lin.C{f}` per field.
fn weights(model: &CtrModel) -> Weights {
    let mut out: Weights = model
        .network
        .deepctr_state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let emb = &model.embeddings;
    for (f, (&off, &n)) in emb.offsets().iter().zip(emb.cardinalities()).enumerate() {
        out.insert(
            format!("emb.C{}", f + 1),
            emb.table.narrow(0, off, n).copy(),
        );
        if let Some(p) = &emb.projection {
            out.insert(format!("proj.C{}", f + 1), p.get(f as i64).copy());
        }
    }
    let lin = model
        .linear
        .as_ref()
        .expect("DeepCTR models have a linear part");
    for (f, (&off, &n)) in lin.offsets().iter().zip(lin.cardinalities()).enumerate() {
        out.insert(
            format!("lin.C{}", f + 1),
            lin.table.narrow(0, off, n).copy(),
        );
    }
    out
}

fn write_npz(map: &Weights, path: &Path) {
    let named: Vec<(&str, Tensor)> = map
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_kind(Kind::Float)))
        .collect();
    Tensor::write_npz(&named, path).unwrap();
}

/// The initial weights and, after each of `STEPS` steps, mlet's and the reference's, for `model`
/// (`dcn` or `deepfm`, DeepCTR-Torch's defaults) with `kind` tables initialised as the benchmark
/// initialises them.
fn train_both(model_name: &str, kind: EmbeddingKind) -> (Weights, Vec<(Weights, Weights)>) {
    let cfg = match model_name {
        "dcn" => ModelConfig::Dcn(DcnConfig::default()),
        "deepfm" => ModelConfig::Deepfm(DeepfmConfig::default()),
        "xdeepfm" => ModelConfig::Xdeepfm(XdeepfmConfig::default()),
        "autoint" => ModelConfig::Autoint(AutointConfig::default()),
        other => panic!("no reference for {other}"),
    };
    let emb = EmbeddingConfig {
        dim: DIM,
        kind,
        k: Some(K),
        init_std: 0.1,
        table_init: TableInit::Normal,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    };
    let model = {
        let _rng = rng_lock();
        tch::manual_seed(7);
        CtrModel::new(&cfg, &emb, &shape(), Device::Cpu).unwrap()
    };
    if model_name == "autoint" {
        // attention matrices 10x their init: at DeepCTR's N(0, 0.05²) the scores are so near
        // uniform that W_Query and W_key get gradients too small to move them past `TOLERANCE`
        tch::no_grad(|| {
            for (name, mut w) in model.vs.variables() {
                if name.contains("W_") {
                    w *= 10.0;
                }
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let initial = weights(&model);
    let initial_path = dir.path().join("w0.npz");
    write_npz(&initial, &initial_path);
    let mut optimizer =
        Optimizer::new(&OptimizerConfig::new(OptimizerKind::Adagrad, LR), &model.vs);
    let mut ours = Vec::new();
    let mut batches = Vec::new();
    for s in 0..STEPS {
        let b = batch(256, NUM_DENSE, &CARDS, 100 + s as u64);
        let path = dir.path().join(format!("b{s}.npz"));
        let n = b.size as i64;
        Tensor::write_npz(
            &[
                ("cat", Tensor::from_slice(&b.cat).view([n, -1])),
                ("dense", Tensor::from_slice(&b.dense).view([n, -1])),
                ("label", Tensor::from_slice(&b.label)),
            ],
            &path,
        )
        .unwrap();
        batches.push(path);
        train_step(
            &model,
            &mut optimizer,
            &b,
            Device::Cpu,
            LossReduction::Sum,
            &cfg.l2(),
        )
        .unwrap();
        ours.push(weights(&model));
    }
    let out_prefix = dir.path().join("ref");
    let spec = json!({
        "model": model_name,
        "embedding": match kind { EmbeddingKind::Single => "single", EmbeddingKind::Mlet => "mlet" },
        "cardinalities": CARDS,
        "num_dense": NUM_DENSE,
        "dim": DIM,
        "k": K,
        "lr": LR,
        "weights": initial_path,
        "batches": batches,
        "output": out_prefix,
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/training_parity.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(&spec_path)
        .output()
        .expect("the venv's python (run `make test`, which installs it)");
    assert!(
        out.status.success(),
        "training_parity.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps = (1..=STEPS)
        .zip(ours)
        .map(|(s, ours)| {
            let theirs: Weights = Tensor::read_npz(format!("{}{s}.npz", out_prefix.display()))
                .unwrap()
                .into_iter()
                .collect();
            (ours, theirs)
        })
        .collect();
    (initial, steps)
}

/// Float noise allowed per weight after a few steps: Adagrad moves a weight by up to `LR` a
/// step, so this is a thousandth of one step (rounding gave at most 2.3e-6, on DNN weights whose
/// gradient is near Adagrad's eps).
const TOLERANCE: f64 = 2e-5;

/// Every weight after every step: ours within `TOLERANCE` of the reference's; and each
/// parameter moved by far more than that after some step (so the comparison could fail; a row
/// that two steps of opposite gradients carry back to where it started has moved in between).
fn compare(model: &str, kind: EmbeddingKind) {
    let (initial, steps) = train_both(model, kind);
    let mut moved_most: BTreeMap<&String, f64> = BTreeMap::new();
    for (s, (ours, theirs)) in steps.iter().enumerate() {
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (name, a) in ours {
            let b = &theirs[name];
            let diff = (a - b).abs().max().double_value(&[]);
            let moved = (b - &initial[name]).abs().max().double_value(&[]);
            eprintln!(
                "{model} {kind:?} step {}: {name}: max |ours - theirs| {diff:.2e}, moved {moved:.2e}",
                s + 1
            );
            assert!(
                diff <= TOLERANCE,
                "{model} {kind:?} step {}: {name} differs from DeepCTR-Torch's by {diff}",
                s + 1
            );
            let most = moved_most.entry(name).or_insert(0.0);
            *most = most.max(moved);
        }
    }
    for (name, moved) in moved_most {
        assert!(
            moved > 100.0 * TOLERANCE,
            "{model} {kind:?}: {name} barely moved ({moved})"
        );
    }
}

#[test]
fn dcn_mlet_steps_match_deepctr_torch() {
    compare("dcn", EmbeddingKind::Mlet);
}

#[test]
fn dcn_single_steps_match_deepctr_torch() {
    compare("dcn", EmbeddingKind::Single);
}

#[test]
fn deepfm_mlet_steps_match_deepctr_torch() {
    compare("deepfm", EmbeddingKind::Mlet);
}

#[test]
fn xdeepfm_single_steps_match_deepctr_torch() {
    compare("xdeepfm", EmbeddingKind::Single);
}

#[test]
fn xdeepfm_mlet_steps_match_deepctr_torch() {
    compare("xdeepfm", EmbeddingKind::Mlet);
}

#[test]
fn autoint_single_steps_match_deepctr_torch() {
    compare("autoint", EmbeddingKind::Single);
}

#[test]
fn autoint_mlet_steps_match_deepctr_torch() {
    compare("autoint", EmbeddingKind::Mlet);
}
