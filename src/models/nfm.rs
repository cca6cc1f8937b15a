//! NFM (He & Chua 2017, arXiv:1708.05027) as DeepCTR-Torch 0.3.0's `NFM`: the linear logit
//! plus a DNN over [bi-interaction pooling of the embeddings (with dropout), dense features].
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::NfmConfig;

impl DeepCtrModel {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`.
    pub fn nfm(path: &nn::Path, shape: &NetworkShape, cfg: &NfmConfig) -> DeepCtrModel {
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::Dnn,
        };
        let interaction = Interaction::BiPooling {
            dropout: cfg.bi_dropout,
        };
        DeepCtrModel::new(path, shape, deep, interaction)
    }
}
