//! Deep & Cross Network (Wang et al. 2017, arXiv:1708.05123) as DeepCTR-Torch 0.3.0's `DCN`:
//! the linear logit plus `dnn_linear([cross(x), dnn(x)])` with x = [flattened embeddings, dense].
//!
//! Departure from DeepCTR-Torch: an empty `dnn_hidden_units` gives a cross-only model
//! (`dnn_linear(cross(x))`, the branch DeepCTR-Torch's `forward` has), where DeepCTR-Torch 0.3.0
//! fails in its `DNN` constructor ("hidden_units is empty").
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::{CrossParameterization, DcnConfig};

impl DeepCtrModel {
    /// `l2.dnn` penalises the DNN weights, `l2.interaction` the cross kernels (DeepCTR's
    /// `l2_reg_cross`, 1e-5 when None) and `l2.linear` also `dnn_linear`, as DeepCTR-Torch does.
    pub fn dcn(path: &nn::Path, shape: &NetworkShape, cfg: &DcnConfig) -> DeepCtrModel {
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::Own(cfg.l2.linear),
        };
        let interaction = Interaction::Cross {
            layers: cfg.cross_num,
            matrix: cfg.cross_parameterization == CrossParameterization::Matrix,
            l2: cfg.l2.interaction.unwrap_or(1e-5),
        };
        DeepCtrModel::new(path, shape, deep, interaction)
    }
}
