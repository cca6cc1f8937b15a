//! Paper 004's layers against reference implementations on the same weights and inputs:
//! FuxiCTR 2.3.10 (`MLP_Block`, `CrossNetV2`, `InnerProductInteraction`, and FinalMLP's
//! `FeatureSelection` and `InteractionAggregation`) and DeepCTR-Torch 0.3.0
//! (`InnerProductLayer`), run by tests/parity/layer_parity.py in the project's venv (installed
//! by `make test`). Weights are redrawn N(0, 0.5²) so that no term vanishes; outputs must agree
//! within 1e-5 relative (f32 on both sides).
mod common;

use std::collections::HashMap;

use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use mlet::layers::{
    AggregationInit, CrossNetV2, FeatureSelection, InnerProduct, InteractionAggregation, MlpBlock,
    MlpBlockConfig,
};

const REL_TOL: f32 = 1e-5;

/// One reference run: `layer(**kwargs)` with `state` loaded, on `inputs`.
struct Case<'a> {
    layer: &'a str,
    kwargs: Value,
    state: Vec<(String, Tensor)>,
    inputs: Vec<(&'a str, Tensor)>,
    train: bool,
}

fn as_f32<'a>(named: impl Iterator<Item = (&'a str, &'a Tensor)>) -> Vec<(&'a str, Tensor)> {
    named.map(|(n, t)| (n, t.to_kind(Kind::Float))).collect()
}

/// Runs the cases in one Python process (importing torch takes seconds); returns, per case,
/// what the script wrote: `out`, `out2`, and in training mode the batch-norm running statistics
/// under our names.
fn reference(cases: &[Case]) -> Vec<HashMap<String, Tensor>> {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: String, arrays: Vec<(&str, Tensor)>| {
        let path = dir.path().join(name);
        Tensor::write_npz(&arrays, &path).unwrap();
        path
    };
    let mut specs = Vec::new();
    let mut outputs = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let state = as_f32(c.state.iter().map(|(n, t)| (n.as_str(), t)));
        let weights = (!state.is_empty()).then(|| write(format!("w{i}.npz"), state));
        let inputs = write(
            format!("x{i}.npz"),
            as_f32(c.inputs.iter().map(|(n, t)| (*n, t))),
        );
        let output = dir.path().join(format!("out{i}.npz"));
        specs.push(json!({
            "layer": c.layer,
            "kwargs": c.kwargs,
            "weights": weights,
            "inputs": inputs,
            "train": c.train,
            "output": output,
        }));
        outputs.push(output);
    }
    let specs_path = dir.path().join("specs.json");
    std::fs::write(&specs_path, Value::Array(specs).to_string()).unwrap();
    common::run_parity_script("layer_parity.py", &specs_path);
    outputs
        .iter()
        .map(|o| Tensor::read_npz(o).unwrap().into_iter().collect())
        .collect()
}

/// Largest |ours − theirs| relative to max(1, max |theirs|); panics above `REL_TOL`.
fn check(what: &str, ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes");
    let ours = ours.to_kind(Kind::Float);
    let diff = f32::try_from((&ours - theirs).abs().max()).unwrap();
    let scale = f32::try_from(theirs.abs().max()).unwrap().max(1.0);
    let spread = f32::try_from(theirs.std(true)).unwrap();
    eprintln!("{what}: max |Δ| = {diff:e} (scale {scale:.3}, spread {spread:.3})");
    assert!(
        diff <= REL_TOL * scale,
        "{what}: max |Δ| = {diff} (scale {scale})"
    );
    assert!(spread > 0.05, "{what}: outputs barely vary ({spread})");
    diff
}

/// Every variable N(0, 0.5²), running variances |N(0, 0.5²)| + 0.5; seeded.
fn randomise(vs: &nn::VarStore, seed: i64) {
    let _rng = common::rng_lock();
    tch::manual_seed(seed);
    tch::no_grad(|| {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut v) in vars {
            let mut noise = Tensor::randn_like(&v) * 0.5;
            if name.ends_with("running_var") {
                noise = noise.abs() + 0.5;
            }
            v.copy_(&noise);
        }
    });
}

fn input(shape: &[i64], seed: i64) -> Tensor {
    let _rng = common::rng_lock();
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn snapshot(state: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    state.into_iter().map(|(n, t)| (n, t.copy())).collect()
}

/// Compares the reference's outputs (by name) with ours.
type Verify = Box<dyn Fn(&HashMap<String, Tensor>)>;

/// A reference run and what to compare its output with (our forward pass, run after it).
struct Check {
    case: Case<'static>,
    verify: Verify,
}

/// All layers in one Python process: starting one (torch, DeepCTR-Torch's imports) costs
/// seconds, the cases themselves milliseconds.
#[test]
fn layers_match_fuxictr_and_deepctr_torch() {
    let checks: Vec<Check> = [
        mlp_block(),
        cross_v2(),
        inner_product(),
        feature_selection(),
        interaction_aggregation(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (cases, verifies): (Vec<_>, Vec<_>) =
        checks.into_iter().map(|c| (c.case, c.verify)).unzip();
    let theirs = reference(&cases);
    for (verify, theirs) in verifies.iter().zip(&theirs) {
        verify(theirs);
    }
}

/// FuxiCTR's `MLP_Block` with and without batch norm, with and without an output layer, in
/// eval mode (dropout present but off) and in training mode (batch statistics; the running
/// statistics after the pass compared too).
fn mlp_block() -> Vec<Check> {
    // (batch norm, dropout, output layer, train)
    let variants = [
        (true, 0.3, true, false),
        (false, 0.3, true, false),
        (true, 0.0, false, false),
        (false, 0.0, false, false),
        (true, 0.0, true, true),
    ];
    let mut checks = Vec::new();
    for (i, (batch_norm, dropout, output, train)) in variants.into_iter().enumerate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = MlpBlockConfig {
            hidden: vec![16, 8],
            dropout,
            batch_norm,
            output: output.then_some(1),
            ..Default::default()
        };
        let block = MlpBlock::new(&vs.root(), 13, &cfg);
        randomise(&vs, 10 + i as i64);
        let x = input(&[32, 13], 20 + i as i64);
        let case = Case {
            layer: "fuxictr.MLP_Block",
            kwargs: json!({
                "input_dim": 13,
                "hidden_units": [16, 8],
                "output_dim": if output { json!(1) } else { Value::Null },
                "dropout_rates": dropout,
                "batch_norm": batch_norm,
            }),
            // before our forward pass, which updates the running statistics in training
            state: snapshot(block.state_dict("")),
            inputs: vec![("x", x.shallow_clone())],
            train,
        };
        let what = format!(
            "MLP_Block batch_norm={batch_norm} dropout={dropout} output={output} train={train}"
        );
        let verify = move |theirs: &HashMap<String, Tensor>| {
            let _vs = &vs;
            let ours = tch::no_grad(|| block.forward(&x, train));
            check(&what, &ours, &theirs["out"]);
            if train {
                for (name, t) in block.state_dict("") {
                    if name.ends_with("running_mean") || name.ends_with("running_var") {
                        check(&format!("{what} {name}"), &t, &theirs[&name]);
                    }
                }
            }
        };
        checks.push(Check {
            case,
            verify: Box::new(verify),
        });
    }
    checks
}

fn cross_v2() -> Vec<Check> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CrossNetV2::new(&vs.root(), 12, 4);
    randomise(&vs, 30);
    // N(0, 0.5²) weights on 12 inputs over 4 layers blow the outputs up; scaled down they stay
    // O(10), where a relative 1e-5 still means something.
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            v *= 0.4;
        }
    });
    let x = input(&[32, 12], 31);
    let case = Case {
        layer: "fuxictr.CrossNetV2",
        kwargs: json!({"input_dim": 12, "num_layers": 4}),
        state: net.state_dict(""),
        inputs: vec![("x", x.shallow_clone())],
        train: false,
    };
    let verify = move |theirs: &HashMap<String, Tensor>| {
        let _vs = &vs;
        check(
            "CrossNetV2",
            &tch::no_grad(|| net.forward(&x)),
            &theirs["out"],
        );
    };
    vec![Check {
        case,
        verify: Box::new(verify),
    }]
}

/// DeepCTR-Torch's `InnerProductLayer` (PNN's) and FuxiCTR's `InnerProductInteraction`
/// (`output="inner_product"`): the same pairs in the same order.
fn inner_product() -> Vec<Check> {
    let emb = input(&[32, 6, 4], 40);
    let ours = InnerProduct::new(6, Device::Cpu).forward(&emb);
    [
        ("deepctr.InnerProductLayer", json!({})),
        (
            "fuxictr.InnerProductInteraction",
            json!({"num_fields": 6, "output": "inner_product"}),
        ),
    ]
    .into_iter()
    .map(|(layer, kwargs)| {
        let ours = ours.shallow_clone();
        Check {
            case: Case {
                layer,
                kwargs,
                state: Vec::new(),
                inputs: vec![("x", emb.shallow_clone())],
                train: false,
            },
            verify: Box::new(move |theirs| {
                check(layer, &ours, &theirs["out"]);
            }),
        }
    })
    .collect()
}

/// FuxiCTR FinalMLP's `FeatureSelection` (no context features), with and without a hidden
/// layer in the gates.
fn feature_selection() -> Vec<Check> {
    let x = input(&[32, 12], 51);
    [vec![16], vec![]]
        .into_iter()
        .enumerate()
        .map(|(i, hidden)| {
            let vs = nn::VarStore::new(Device::Cpu);
            let fs = FeatureSelection::new(&vs.root(), 12, 4, &hidden);
            randomise(&vs, 50 + i as i64);
            let case = Case {
                layer: "fuxictr.FeatureSelection",
                kwargs: json!({"feature_dim": 12, "embedding_dim": 4, "fs_hidden_units": hidden}),
                state: fs.state_dict(""),
                inputs: vec![("x", x.shallow_clone())],
                train: false,
            };
            let x = x.shallow_clone();
            let verify = move |theirs: &HashMap<String, Tensor>| {
                let _vs = &vs;
                let (a, b) = fs.forward(&x);
                check(
                    &format!("FeatureSelection {hidden:?} stream 1"),
                    &a,
                    &theirs["out"],
                );
                check(
                    &format!("FeatureSelection {hidden:?} stream 2"),
                    &b,
                    &theirs["out2"],
                );
            };
            Check {
                case,
                verify: Box::new(verify),
            }
        })
        .collect()
}

/// FuxiCTR FinalMLP's `InteractionAggregation`, one and several heads and outputs.
fn interaction_aggregation() -> Vec<Check> {
    // (x width, y width, output width, heads)
    let shapes = [(8, 6, 1, 1), (8, 6, 1, 2), (8, 6, 3, 2), (12, 12, 2, 4)];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (x_dim, y_dim, output, heads))| {
            let vs = nn::VarStore::new(Device::Cpu);
            let agg = InteractionAggregation::new(
                &vs.root(),
                x_dim,
                y_dim,
                output,
                heads,
                AggregationInit::FuxiCtr,
            );
            randomise(&vs, 60 + i as i64);
            let x = input(&[32, x_dim as i64], 61);
            let y = input(&[32, y_dim as i64], 62);
            let case = Case {
                layer: "fuxictr.InteractionAggregation",
                kwargs: json!({
                    "x_dim": x_dim, "y_dim": y_dim, "output_dim": output, "num_heads": heads
                }),
                state: agg.state_dict(""),
                inputs: vec![("x", x.shallow_clone()), ("y", y.shallow_clone())],
                train: false,
            };
            let what = format!(
                "InteractionAggregation (x, y, output, heads) = {:?}",
                (x_dim, y_dim, output, heads)
            );
            let verify = move |theirs: &HashMap<String, Tensor>| {
                let _vs = &vs;
                check(&what, &agg.forward(&x, &y), &theirs["out"]);
            };
            Check {
                case,
                verify: Box::new(verify),
            }
        })
        .collect()
}
