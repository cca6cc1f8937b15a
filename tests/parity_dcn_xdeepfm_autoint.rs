//! DCN, xDeepFM and AutoInt against DeepCTR-Torch 0.3.0 beyond the default paths that
//! `parity_deepctr.rs` covers: the deep-only / cross-only / attention-only variants, CIN shapes,
//! the L2 penalties (against DeepCTR's own `regularization_weight`), DeepCTR's initialisation,
//! and a short training run per model.
mod common;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use tch::{Device, Kind, Tensor};

use mlet::config::{
    parse_runs, AutointConfig, DcnConfig, EmbeddingConfig, EmbeddingKind, L2Config, ModelConfig,
    XdeepfmConfig,
};
use mlet::experiments::{run_all, Outcome};
use mlet::models::{CtrModel, InputShape};
use mlet::training::RunOptions;

use common::{embedding, randomised, rng_lock, shape, CARDS, DIM, NUM_DENSE};

/// Seeds: model 13, batch 17.
fn check(cfg: ModelConfig, class: &str, kwargs: serde_json::Value) {
    common::check_parity(&cfg, class, kwargs, 13, 17);
}

fn dcn(cross_num: usize, param: &str, hidden: Vec<usize>, l2: L2Config) -> ModelConfig {
    ModelConfig::Dcn(DcnConfig {
        cross_num,
        cross_parameterization: serde_yaml::from_str(param).unwrap(),
        dnn_hidden_units: hidden,
        dnn_dropout: 0.0,
        l2,
    })
}

fn xdeepfm(hidden: Vec<usize>, cin: Vec<usize>, split: bool, l2: L2Config) -> ModelConfig {
    ModelConfig::Xdeepfm(XdeepfmConfig {
        dnn_hidden_units: hidden,
        cin_layer_size: cin,
        cin_split_half: split,
        dnn_dropout: 0.0,
        l2,
    })
}

fn autoint(layers: usize, heads: usize, res: bool, hidden: Vec<usize>) -> ModelConfig {
    ModelConfig::Autoint(AutointConfig {
        att_layer_num: layers,
        att_head_num: heads,
        att_res: res,
        dnn_hidden_units: hidden,
        dnn_dropout: 0.0,
        l2: L2Config::default(),
    })
}

#[test]
fn dcn_deep_only_and_deeper_matrix_match_deepctr_torch() {
    // cross_num 0: DeepCTR-Torch still registers an empty crossnet, which strict loading needs
    check(
        dcn(0, "vector", vec![16, 8], L2Config::default()),
        "DCN",
        json!({"cross_num": 0, "dnn_hidden_units": [16, 8]}),
    );
    check(
        dcn(3, "matrix", vec![8], L2Config::default()),
        "DCN",
        json!({"cross_num": 3, "cross_parameterization": "matrix", "dnn_hidden_units": [8]}),
    );
}

#[test]
fn xdeepfm_cin_only_dnn_only_and_odd_last_layer_match_deepctr_torch() {
    let l2 = L2Config::default;
    check(
        xdeepfm(vec![], vec![6, 4], true, l2()),
        "xDeepFM",
        json!({"dnn_hidden_units": [], "cin_layer_size": [6, 4]}),
    );
    check(
        xdeepfm(vec![8], vec![], true, l2()),
        "xDeepFM",
        json!({"dnn_hidden_units": [8], "cin_layer_size": []}),
    );
    // split_half leaves the last layer whole, so it may be odd; three layers chain two splits
    check(
        xdeepfm(vec![8], vec![6, 4, 5], true, l2()),
        "xDeepFM",
        json!({"dnn_hidden_units": [8], "cin_layer_size": [6, 4, 5], "cin_split_half": true}),
    );
    check(
        xdeepfm(vec![8], vec![5], true, l2()),
        "xDeepFM",
        json!({"dnn_hidden_units": [8], "cin_layer_size": [5], "cin_split_half": true}),
    );
}

#[test]
fn autoint_attention_only_deep_only_and_no_residual_match_deepctr_torch() {
    check(
        autoint(2, 2, true, vec![]),
        "AutoInt",
        json!({"att_layer_num": 2, "att_head_num": 2, "dnn_hidden_units": []}),
    );
    check(
        autoint(0, 2, true, vec![16, 8]),
        "AutoInt",
        json!({"att_layer_num": 0, "dnn_hidden_units": [16, 8]}),
    );
    check(
        autoint(1, 1, false, vec![8]),
        "AutoInt",
        json!({"att_layer_num": 1, "att_head_num": 1, "att_res": false, "dnn_hidden_units": [8]}),
    );
    check(
        autoint(3, 4, true, vec![8]),
        "AutoInt",
        json!({"att_layer_num": 3, "att_head_num": 4, "dnn_hidden_units": [8]}),
    );
}

#[test]
fn autoint_without_attention_or_dnn_is_rejected_as_in_deepctr_torch() {
    let err = CtrModel::new(
        &autoint(0, 2, true, vec![]),
        &embedding(EmbeddingKind::Single),
        &shape(),
        Device::Cpu,
    )
    .err()
    .expect("DeepCTR-Torch raises ValueError here");
    assert!(err.to_string().contains("att_layer_num"), "{err}");
}

/// For each model: DeepCTR-Torch's L2 penalty `Σ l2 · Σ w²` over its `regularization_weight`,
/// on the model's weights, leaving out the embedding and linear-part tables (our trainer
/// penalises their looked-up rows instead) and `linear_model.weight`.
const L2_SCRIPT: &str = r#"
import json, os, sys
os.environ.setdefault("TQDM_DISABLE", "1")
import numpy as np
import torch
import deepctr_torch.models as models
from deepctr_torch.inputs import DenseFeat, SparseFeat

spec = json.load(open(sys.argv[1]))
columns = [SparseFeat(f"C{i + 1}", n, embedding_dim=spec["dim"]) for i, n in enumerate(spec["cardinalities"])]
columns += [DenseFeat(f"I{j + 1}", 1) for j in range(spec["num_dense"])]
out = []
for case in spec["cases"]:
    model = getattr(models, case["model"])(columns, columns, device="cpu", **case["kwargs"])
    w = np.load(case["weights"])
    expected = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(np.array(w[k])).to(expected[k].dtype) for k in w.files}, strict=True)
    skip = {id(p) for p in model.embedding_dict.parameters()} | {id(p) for p in model.linear_model.parameters()}
    total = 0.0
    for weights, l1, l2 in model.regularization_weight:
        for x in weights:
            p = x[1] if isinstance(x, tuple) else x
            if id(p) not in skip and l2 > 0:
                total += l2 * float((p.double() ** 2).sum())
    out.append(total)
json.dump(out, open(spec["output"], "w"))
"#;

#[test]
fn l2_penalties_match_deepctr_torch_regularization_weights() {
    let custom = L2Config {
        embedding: 0.0,
        linear: 0.02,
        dnn: 0.01,
        interaction: Some(0.03),
    };
    let custom_dnn = L2Config {
        dnn: 0.01,
        ..L2Config::default()
    };
    // ours, DeepCTR's class and its l2 arguments
    let cases = vec![
        (
            dcn(2, "vector", vec![16, 8], L2Config::default()),
            "DCN",
            json!({"dnn_hidden_units": [16, 8]}),
        ),
        (
            dcn(2, "matrix", vec![16, 8], custom.clone()),
            "DCN",
            json!({"cross_parameterization": "matrix", "dnn_hidden_units": [16, 8],
                   "l2_reg_dnn": 0.01, "l2_reg_linear": 0.02, "l2_reg_cross": 0.03}),
        ),
        (
            dcn(0, "vector", vec![16, 8], custom.clone()),
            "DCN",
            json!({"cross_num": 0, "dnn_hidden_units": [16, 8],
                   "l2_reg_dnn": 0.01, "l2_reg_linear": 0.02, "l2_reg_cross": 0.03}),
        ),
        (
            xdeepfm(vec![16, 8], vec![6, 4], true, custom.clone()),
            "xDeepFM",
            json!({"dnn_hidden_units": [16, 8], "cin_layer_size": [6, 4],
                   "l2_reg_dnn": 0.01, "l2_reg_linear": 0.02, "l2_reg_cin": 0.03}),
        ),
        (
            xdeepfm(vec![16, 8], vec![6, 4], false, L2Config::default()),
            "xDeepFM",
            json!({"dnn_hidden_units": [16, 8], "cin_layer_size": [6, 4], "cin_split_half": false}),
        ),
        (
            ModelConfig::Autoint(AutointConfig {
                att_layer_num: 2,
                att_head_num: 2,
                att_res: true,
                dnn_hidden_units: vec![16, 8],
                dnn_dropout: 0.0,
                l2: custom_dnn,
            }),
            "AutoInt",
            json!({"att_layer_num": 2, "dnn_hidden_units": [16, 8], "l2_reg_dnn": 0.01}),
        ),
        (
            autoint(2, 2, true, vec![16, 8]),
            "AutoInt",
            json!({"att_layer_num": 2, "dnn_hidden_units": [16, 8]}),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    let mut specs = Vec::new();
    for (i, (cfg, class, kwargs)) in cases.iter().enumerate() {
        let model = randomised(cfg, EmbeddingKind::Mlet, 21 + i as i64);
        ours.push(
            model
                .network
                .l2_penalty()
                .map_or(0.0, |p| p.double_value(&[])),
        );
        let weights = dir.path().join(format!("w{i}.npz"));
        write_state(&model, &weights);
        specs.push(json!({"model": class, "kwargs": kwargs, "weights": weights}));
    }
    let theirs: Vec<f64> = run_python(
        L2_SCRIPT,
        json!({"cardinalities": CARDS, "dim": DIM, "num_dense": NUM_DENSE, "cases": specs}),
        dir.path(),
    );
    for ((ours, theirs), (_, class, kwargs)) in ours.iter().zip(&theirs).zip(&cases) {
        eprintln!("{class} {kwargs}: L2 ours {ours:.8e}, DeepCTR-Torch {theirs:.8e}");
        let tol = 1e-5 * theirs.abs().max(1e-12);
        assert!(
            (ours - theirs).abs() <= tol,
            "{class} {kwargs}: L2 penalty {ours} vs DeepCTR-Torch {theirs}"
        );
    }
    // the defaults: DCN penalises its cross kernels and dnn_linear (1e-5), the others nothing
    assert!(ours[0] > 0.0 && ours[4] == 0.0 && ours[6] == 0.0);
}

fn write_state(model: &CtrModel, path: &Path) {
    let state = model.deepctr_state_dict();
    let named: Vec<(&str, Tensor)> = state
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_kind(Kind::Float)))
        .collect();
    Tensor::write_npz(&named, path).unwrap();
}

/// Runs `script` on `spec` (plus an `output` path) with the venv's Python; its JSON output.
fn run_python<T: serde::de::DeserializeOwned>(
    script: &str,
    mut spec: serde_json::Value,
    dir: &Path,
) -> T {
    let output = dir.join("out.json");
    spec["output"] = json!(output);
    let (script_path, spec_path) = (dir.join("script.py"), dir.join("spec.json"));
    std::fs::write(&script_path, script).unwrap();
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = Command::new(common::python())
        .arg(&script_path)
        .arg(&spec_path)
        .output()
        .expect("the venv's python (run `make test`, which installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(output).unwrap()).unwrap()
}

/// Mean and standard deviation of a tensor's entries.
fn stats(t: &Tensor) -> (f64, f64) {
    let t = t.to_kind(Kind::Double);
    (
        t.mean(Kind::Double).double_value(&[]),
        t.std(true).double_value(&[]),
    )
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn fresh_weights_follow_deepctr_torch_initialisation() {
    // wide enough that sample standard deviations are within a few percent
    let cards = vec![20; 26];
    let (fields, dim, dense) = (26i64, 16i64, 13i64);
    let shape = InputShape {
        num_dense: dense as usize,
        cardinalities: cards,
        hashed: Vec::new(),
    };
    let emb = EmbeddingConfig {
        dim: dim as usize,
        ..embedding(EmbeddingKind::Single)
    };
    let width = (fields * dim + dense) as f64;
    let build = |cfg: ModelConfig| {
        let _rng = rng_lock();
        tch::manual_seed(5);
        let model = CtrModel::new(&cfg, &emb, &shape, Device::Cpu).unwrap();
        model
            .deepctr_state_dict()
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>()
    };
    let close = |name: &str, actual: f64, expected: f64| {
        assert!(
            (actual - expected).abs() <= 0.1 * expected,
            "{name}: std {actual}, DeepCTR-Torch's init has {expected}"
        );
    };

    // CrossNet: xavier_normal_ per layer's [D, 1] or [D, D] kernel, zero bias
    for (param, cols) in [("vector", 1.0), ("matrix", width)] {
        let s = build(dcn(2, param, vec![32], L2Config::default()));
        let (_, std) = stats(&s["crossnet.kernels"]);
        close("crossnet.kernels", std, (2.0 / (width + cols)).sqrt());
        assert_eq!(max_abs(&s["crossnet.bias"]), 0.0);
        assert_eq!(max_abs(&s["out.bias"]), 0.0);
        // DNN weights N(0, init_std = 1e-4)
        close(
            "dnn.linears.0.weight",
            stats(&s["dnn.linears.0.weight"]).1,
            1e-4,
        );
        // dnn_linear over [cross output, DNN output]: torch's nn.Linear default
        // U(±1/√fan_in), which DeepCTR-Torch keeps (tch's default reaches √6 times further)
        let bound = 1.0 / (width + 32.0).sqrt();
        let max = max_abs(&s["dnn_linear.weight"]);
        assert!(
            max <= bound && max >= 0.8 * bound,
            "dnn_linear.weight: max |w| {max}, DeepCTR-Torch's init spans ±{bound}"
        );
        close(
            "dnn_linear.weight",
            stats(&s["dnn_linear.weight"]).1,
            bound / 3f64.sqrt(),
        );
    }

    // CIN: torch's Conv1d default, U(±1/√fan_in) with fan_in = H·F; cin_linear as nn.Linear
    let s = build(xdeepfm(vec![32], vec![64, 32], true, L2Config::default()));
    for (name, fan_in) in [
        ("cin.conv1ds.0.weight", fields * fields),
        ("cin.conv1ds.0.bias", fields * fields),
        ("cin.conv1ds.1.weight", 32 * fields),
        ("cin.conv1ds.1.bias", 32 * fields),
        ("cin_linear.weight", 32 + 32),
    ] {
        // tch's default Linear init would reach √6 times further
        let bound = 1.0 / (fan_in as f64).sqrt();
        let max = max_abs(&s[name]);
        assert!(
            max <= bound && max >= 0.8 * bound,
            "{name}: max |w| {max}, DeepCTR-Torch's init spans ±{bound}"
        );
        if name.starts_with("cin.conv1ds") && name.ends_with("weight") {
            close(name, stats(&s[name]).1, bound / 3f64.sqrt());
        }
    }

    // InteractingLayer: every matrix N(0, 0.05²)
    let s = build(autoint(3, 2, true, vec![32]));
    let all: Vec<Tensor> = (0..3)
        .flat_map(|i| {
            ["W_Query", "W_key", "W_Value", "W_Res"]
                .map(|w| s[&format!("int_layers.{i}.{w}")].flatten(0, -1))
        })
        .collect();
    close("int_layers", stats(&Tensor::cat(&all, 0)).1, 0.05);
}

#[test]
fn each_model_trains_200_steps_and_its_loss_decreases() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = String::from("runs:\n");
    for (name, model) in [
        ("dcn", "{kind: dcn, dnn_hidden_units: [32, 16]}"),
        (
            "dcn-matrix",
            "{kind: dcn, cross_parameterization: matrix, dnn_hidden_units: [32]}",
        ),
        (
            "xdeepfm",
            "{kind: xdeepfm, dnn_hidden_units: [32, 16], cin_layer_size: [16, 8]}",
        ),
        (
            "autoint",
            "{kind: autoint, att_layer_num: 2, dnn_hidden_units: [32, 16]}",
        ),
    ] {
        for (emb, settings) in [
            ("single", "{kind: single}"),
            ("mlet", "{kind: mlet, k: 32, init_std: 0.1}"),
        ] {
            runs.push_str(&format!(
                "  - name: {name}-{emb}\n    model: {model}\n    embedding: {settings}\n"
            ));
        }
    }
    let text = format!(
        "
name: e2e_dcn_xdeepfm_autoint
data:
  synthetic: {{rows: 30000, seed: 5}}
  cache: {cache}
model: {{kind: dcn}}
embedding: {{dim: 8}}
optimizer: {{kind: adagrad, lr: 0.02}}
training: {{epochs: 1, batch_size: 128, max_steps: 200, seed: 3, threads: 2, log_every: 20, loss_reduction: sum}}
output: {out}
{runs}",
        cache = tmp.path().join("cache").display(),
        out = tmp.path().join("runs").display()
    );
    let specs = parse_runs(&text).unwrap();
    let outcomes = {
        let _rng = rng_lock();
        run_all(&specs, false, &RunOptions { quiet: true }).unwrap()
    };
    assert_eq!(outcomes.len(), 8);
    for outcome in &outcomes {
        let Outcome::Trained(dir, m) = outcome else {
            panic!("a fresh run was skipped")
        };
        assert!(m.diverged.is_none(), "{}: {:?}", m.run, m.diverged);
        assert_eq!(m.train.steps, 200, "{}", m.run);
        let log = std::fs::read_to_string(dir.join("train_log.csv")).unwrap();
        let losses: Vec<f64> = log
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
            .collect();
        assert_eq!(losses.len(), 10, "{log}");
        let first = (losses[0] + losses[1]) / 2.0;
        let last = (losses[8] + losses[9]) / 2.0;
        eprintln!(
            "{}: loss {first:.4} (steps 1-40) → {last:.4} (steps 161-200), test AUC {:.4}",
            m.run,
            m.test.map_or(f64::NAN, |t| t.auc)
        );
        assert!(
            last < first - 0.01,
            "{}: loss did not decrease ({first} → {last})",
            m.run
        );
    }
}
