//! xDeepFM (Lian et al. 2018, arXiv:1803.05170) as DeepCTR-Torch 0.3.0's `xDeepFM`: the linear
//! logit, `cin_linear(CIN(embeddings))`, and a DNN over [embeddings, dense]; an empty
//! `cin_layer_size` or `dnn_hidden_units` drops that part, as in DeepCTR-Torch.
//!
//! Under multi-embedding (paper 004's MultiXDeepFM), every set has its own CIN and its own first
//! DNN layer; the CIN outputs are averaged before `cin_linear`, the first layers' outputs before
//! the rest of the DNN (see `deepctr.rs`). With one set the model is DeepCTR-Torch's.
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::XdeepfmConfig;

impl DeepCtrModel {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`, `l2.interaction` the CIN's
    /// convolution weights (DeepCTR's `l2_reg_cin`, 0 when None); `cin_linear` is not penalised.
    pub fn xdeepfm(path: &nn::Path, shape: &NetworkShape, cfg: &XdeepfmConfig) -> DeepCtrModel {
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::Dnn,
        };
        let interaction = Interaction::Cin {
            layer_size: &cfg.cin_layer_size,
            split_half: cfg.cin_split_half,
            l2: cfg.l2.interaction.unwrap_or(0.0),
        };
        DeepCtrModel::new(path, shape, deep, interaction)
    }
}
