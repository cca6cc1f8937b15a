//! Numerical parity with DeepCTR-Torch 0.3.0: the same weights loaded into both (strictly, by
//! DeepCTR's state_dict names), the same batch in, click probabilities equal within 1e-5.
mod common;

use serde_json::json;

use mlet::config::{
    AutointConfig, DcnConfig, DeepfmConfig, ModelConfig, NfmConfig, WdlConfig, XdeepfmConfig,
};

/// The default paths of all six models (seeds: model 7, batch 11).
fn check(model_cfg: ModelConfig, class: &str, kwargs: serde_json::Value) {
    common::check_parity(&model_cfg, class, kwargs, 7, 11);
}

#[test]
fn wdl_matches_deepctr_torch() {
    check(
        ModelConfig::Wdl(WdlConfig {
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        }),
        "WDL",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn deepfm_matches_deepctr_torch() {
    check(
        ModelConfig::Deepfm(DeepfmConfig {
            use_fm: true,
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        }),
        "DeepFM",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn nfm_matches_deepctr_torch() {
    check(
        ModelConfig::Nfm(NfmConfig {
            dnn_hidden_units: vec![16, 8],
            bi_dropout: 0.0,
            dnn_dropout: 0.0,
            l2: Default::default(),
        }),
        "NFM",
        json!({"dnn_hidden_units": [16, 8]}),
    );
}

#[test]
fn dcn_matches_deepctr_torch_with_both_cross_parameterizations() {
    for p in ["vector", "matrix"] {
        check(
            ModelConfig::Dcn(DcnConfig {
                cross_num: 2,
                cross_parameterization: serde_yaml::from_str(p).unwrap(),
                dnn_hidden_units: vec![16, 8],
                dnn_dropout: 0.0,
                l2: Default::default(),
            }),
            "DCN",
            json!({"cross_num": 2, "cross_parameterization": p, "dnn_hidden_units": [16, 8]}),
        );
    }
}

#[test]
fn xdeepfm_matches_deepctr_torch_with_and_without_split_half() {
    for split in [true, false] {
        check(
            ModelConfig::Xdeepfm(XdeepfmConfig {
                dnn_hidden_units: vec![16, 8],
                cin_layer_size: vec![6, 4],
                cin_split_half: split,
                dnn_dropout: 0.0,
                l2: Default::default(),
            }),
            "xDeepFM",
            json!({"dnn_hidden_units": [16, 8], "cin_layer_size": [6, 4], "cin_split_half": split}),
        );
    }
}

#[test]
fn autoint_matches_deepctr_torch() {
    check(
        ModelConfig::Autoint(AutointConfig {
            att_layer_num: 2,
            att_head_num: 2,
            att_res: true,
            dnn_hidden_units: vec![16, 8],
            dnn_dropout: 0.0,
            l2: Default::default(),
        }),
        "AutoInt",
        json!({"att_layer_num": 2, "att_head_num": 2, "dnn_hidden_units": [16, 8]}),
    );
}
