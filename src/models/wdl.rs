//! Wide & Deep (Cheng et al. 2016, arXiv:1606.07792) as DeepCTR-Torch 0.3.0's `WDL`: the linear
//! logit plus a DNN over [flattened embeddings, dense features].
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::WdlConfig;

impl DeepCtrModel {
    /// `l2.dnn` penalises the DNN weights and `dnn_linear`.
    pub fn wdl(path: &nn::Path, shape: &NetworkShape, cfg: &WdlConfig) -> DeepCtrModel {
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::Dnn,
        };
        DeepCtrModel::new(path, shape, deep, Interaction::None)
    }
}
