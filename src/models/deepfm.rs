//! DeepFM (Guo et al. 2017, arXiv:1703.04247) as DeepCTR-Torch 0.3.0's `DeepFM`: the linear
//! logit, the FM second-order term over the embeddings, and a DNN over [embeddings, dense].
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::DeepfmConfig;

impl DeepCtrModel {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`; `use_fm: false` leaves WDL.
    pub fn deepfm(path: &nn::Path, shape: &NetworkShape, cfg: &DeepfmConfig) -> DeepCtrModel {
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::Dnn,
        };
        let interaction = match cfg.use_fm {
            true => Interaction::Fm,
            false => Interaction::None,
        };
        DeepCtrModel::new(path, shape, deep, interaction)
    }
}
