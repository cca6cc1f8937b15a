//! Numerical parity with DeepCTR-Torch 0.3.0: the same weights loaded into both (strictly, by
//! DeepCTR's state_dict names), the same batch in, click probabilities equal within 1e-5.
mod common;

use serde_json::json;
use tch::{Device, Tensor};

use mlet::config::{EmbeddingConfig, EmbeddingKind, ModelConfig, TableInit};
use mlet::models::{CtrModel, InputShape};

const CARDS: [usize; 5] = [7, 30, 4, 100, 12];
const NUM_DENSE: usize = 3;
const DIM: usize = 4;

/// libtorch's generator is global and tests run in parallel threads.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn embedding(kind: EmbeddingKind) -> EmbeddingConfig {
    EmbeddingConfig {
        dim: DIM,
        kind,
        k: Some(8),
        init_std: 0.3,
        table_init: TableInit::Xavier,
        table_std: 1e-4,
    }
}

/// Builds `model` with every weight randomised to non-trivial values (DeepCTR's 1e-4 init
/// would make any comparison pass), and checks it against `class` with `kwargs`.
fn check(model_cfg: ModelConfig, class: &str, kwargs: serde_json::Value) {
    for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
        let model = {
            let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(7);
            let shape = InputShape {
                num_dense: NUM_DENSE,
                cardinalities: CARDS.to_vec(),
            };
            let model = CtrModel::new(&model_cfg, &embedding(kind), &shape, Device::Cpu).unwrap();
            tch::no_grad(|| {
                for (_, mut v) in model.vs.variables() {
                    let noise = Tensor::randn_like(&v) * 0.3;
                    v.copy_(&noise);
                }
            });
            model
        };
        let batch = common::batch(64, NUM_DENSE, &CARDS, 11);
        let ours = common::ours(&model, &batch);
        let theirs = common::deepctr(
            class,
            kwargs.clone(),
            &model,
            &CARDS,
            DIM,
            NUM_DENSE,
            &batch,
        );
        let diff = common::max_abs_diff(&ours, &theirs);
        eprintln!("{class} {kind:?}: max |Δp| = {diff:e}");
        assert!(
            diff <= 1e-5,
            "{class} with {kind:?} embeddings: max |Δp| = {diff}"
        );
        // not a trivial agreement: the predictions spread
        let spread = ours.iter().cloned().fold(f32::MIN, f32::max)
            - ours.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.05, "{class}: predictions barely vary ({spread})");
    }
}

#[test]
fn wdl_matches_deepctr_torch() {
    check(
        ModelConfig::Wdl {
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        },
        "WDL",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn deepfm_matches_deepctr_torch() {
    check(
        ModelConfig::Deepfm {
            use_fm: true,
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        },
        "DeepFM",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn nfm_matches_deepctr_torch() {
    check(
        ModelConfig::Nfm {
            dnn_hidden_units: vec![16, 8],
            bi_dropout: 0.0,
            dnn_dropout: 0.0,
            l2: Default::default(),
        },
        "NFM",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn dcn_matches_deepctr_torch_with_both_cross_parameterizations() {
    for p in ["vector", "matrix"] {
        check(
            ModelConfig::Dcn {
                cross_num: 2,
                cross_parameterization: p.into(),
                dnn_hidden_units: vec![16, 8],
                dnn_dropout: 0.0,
                l2: Default::default(),
            },
            "DCN",
            json!({"cross_num": 2, "cross_parameterization": p, "dnn_hidden_units": [16, 8]}),
        );
    }
}

#[test]
fn xdeepfm_matches_deepctr_torch_with_and_without_split_half() {
    for split in [true, false] {
        check(
            ModelConfig::Xdeepfm {
                dnn_hidden_units: vec![16, 8],
                cin_layer_size: vec![6, 4],
                cin_split_half: split,
                dnn_dropout: 0.0,
                l2: Default::default(),
            },
            "xDeepFM",
            json!({"dnn_hidden_units": [16, 8], "cin_layer_size": [6, 4], "cin_split_half": split}),
        );
    }
}

#[test]
fn autoint_matches_deepctr_torch() {
    check(
        ModelConfig::Autoint {
            att_layer_num: 2,
            att_head_num: 2,
            att_res: true,
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        },
        "AutoInt",
        json!({"att_layer_num": 2, "att_head_num": 2, "dnn_hidden_units": [16, 8]}),
    );
}
