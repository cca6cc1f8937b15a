//! AutoInt (Song et al. 2019, arXiv:1810.11921) as DeepCTR-Torch 0.3.0's `AutoInt`: the linear
//! logit plus `dnn_linear([flatten(attention layers(embeddings)), dnn(x)])`.
use tch::{nn, Tensor};

use super::deepctr::{combined_dnn_input, DeepParts};
use super::{Features, InputShape, Network};
use crate::layers::InteractingLayer;

/// AutoInt over `F` fields of dimension `d` and `m` dense features: `att_layer_num` interacting
/// layers on `[B, F, d]`, a DNN on `[B, F·d + m]`, and `dnn_linear` over whichever of the two
/// exist (both, attention only with empty `dnn_hidden_units`, or DNN only with no layers).
pub struct AutoInt {
    parts: DeepParts,
    layers: Vec<InteractingLayer>,
}

impl AutoInt {
    /// Fails, as DeepCTR-Torch does, when `heads` does not divide `dim` or when there is neither
    /// an attention layer nor a DNN layer. `l2_dnn` penalises the DNN weights only (not
    /// `dnn_linear`, not the attention matrices), as DeepCTR-Torch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        layers: usize,
        heads: usize,
        residual: bool,
        hidden: &[usize],
        dropout: f64,
        l2_dnn: f64,
    ) -> anyhow::Result<AutoInt> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            anyhow::bail!(
                "model.att_head_num: must divide the embedding dimension {dim} (got {heads})"
            );
        }
        if layers == 0 && hidden.is_empty() {
            anyhow::bail!("model: AutoInt needs att_layer_num > 0 or a non-empty dnn_hidden_units");
        }
        let fields = shape.cardinalities.len();
        let input = fields * dim + shape.num_dense;
        let extra = if layers > 0 { fields * dim } else { 0 };
        Ok(AutoInt {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2_dnn, extra),
            layers: (0..layers)
                .map(|i| InteractingLayer::new(&(path / "int_layers" / i), dim, heads, residual))
                .collect(),
        })
    }
}

impl Network for AutoInt {
    /// Logits `[B]` from `emb` `[B, F, d]`, `dense` `[B, m]` and `linear` `[B, F, 1]`.
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let attended = (!self.layers.is_empty()).then(|| {
            let mut h = x.emb.shallow_clone();
            for layer in &self.layers {
                h = layer.forward(&h);
            }
            h.flatten(1, -1)
        });
        let mut logit = self.parts.linear_logit(x);
        if let Some(deep) = self.parts.dnn_logit(
            &combined_dnn_input(x.emb, x.dense),
            attended.as_ref(),
            train,
        ) {
            logit += deep;
        }
        self.parts.finish(logit)
    }

    fn l2_penalty(&self) -> Option<Tensor> {
        // DeepCTR-Torch's AutoInt does not penalise dnn_linear
        self.parts.l2_penalty(false)
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        for (i, layer) in self.layers.iter().enumerate() {
            out.extend(layer.state_dict(&format!("int_layers.{i}.")));
        }
        out
    }
}
