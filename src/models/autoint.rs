//! AutoInt (Song et al. 2019, arXiv:1810.11921) as DeepCTR-Torch 0.3.0's `AutoInt`: the linear
//! logit plus `dnn_linear([flatten(attention layers(embeddings)), dnn(x)])`, with `dnn_linear`
//! over whichever of the two exist (both, attention only with empty `dnn_hidden_units`, or DNN
//! only with no layers).
use anyhow::{bail, Result};
use tch::nn;

use super::deepctr::{DeepCtrModel, DeepSpec, HeadL2, Interaction};
use super::NetworkShape;
use crate::config::AutointConfig;

impl DeepCtrModel {
    /// Fails, as DeepCTR-Torch does, when `att_head_num` does not divide the embedding
    /// dimension or when there is neither an attention layer nor a DNN layer. `l2.dnn`
    /// penalises the DNN weights only (not `dnn_linear`, not the attention matrices), as
    /// DeepCTR-Torch.
    pub fn autoint(
        path: &nn::Path,
        shape: &NetworkShape,
        cfg: &AutointConfig,
    ) -> Result<DeepCtrModel> {
        let (dim, heads) = (shape.dim, cfg.att_head_num);
        if heads == 0 || !dim.is_multiple_of(heads) {
            bail!("model.att_head_num: must divide the embedding dimension {dim} (got {heads})");
        }
        if cfg.att_layer_num == 0 && cfg.dnn_hidden_units.is_empty() {
            bail!("model: AutoInt needs att_layer_num > 0 or a non-empty dnn_hidden_units");
        }
        let deep = DeepSpec {
            hidden: &cfg.dnn_hidden_units,
            dropout: cfg.dnn_dropout,
            l2_dnn: cfg.l2.dnn,
            head_l2: HeadL2::None,
        };
        let interaction = Interaction::Attention {
            layers: cfg.att_layer_num,
            heads,
            residual: cfg.att_res,
        };
        Ok(DeepCtrModel::new(path, shape, deep, interaction))
    }
}
