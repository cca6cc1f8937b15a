//! Deep & Cross Network (Wang et al. 2017, arXiv:1708.05123) as DeepCTR-Torch 0.3.0's `DCN`:
//! the linear logit plus `dnn_linear([cross(x), dnn(x)])` with x = [flattened embeddings, dense].
use tch::nn;
use tch::{Kind, Tensor};

use super::deepctr::{combined_dnn_input, sum_terms, DeepParts};
use super::{Features, InputShape, Network};
use crate::config::L2Config;
use crate::layers::CrossNet;

/// DCN over `F` fields of dimension `d` and `m` dense features (cross and DNN input width
/// `F·d + m`).
///
/// Departure from DeepCTR-Torch: an empty `dnn_hidden_units` gives a cross-only model
/// (`dnn_linear(cross(x))`, the branch DeepCTR-Torch's `forward` has), where DeepCTR-Torch 0.3.0
/// fails in its `DNN` constructor ("hidden_units is empty").
pub struct Dcn {
    parts: DeepParts,
    /// None when `cross_num` is 0 (deep only).
    cross: Option<CrossNet>,
    /// `[0, D, D or 1]`: DeepCTR-Torch registers an empty `crossnet` when `cross_num` is 0.
    empty_cross: (i64, i64),
    l2_cross: f64,
    l2_head: f64,
}

impl Dcn {
    /// `l2.dnn` penalises the DNN weights, `l2.interaction` the cross kernels (DeepCTR's
    /// `l2_reg_cross`, 1e-5 when None) and `l2.linear` also `dnn_linear`, as DeepCTR-Torch does.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        cross_num: usize,
        matrix: bool,
        hidden: &[usize],
        dropout: f64,
        l2: &L2Config,
    ) -> Dcn {
        let input = shape.cardinalities.len() * dim + shape.num_dense;
        let cross =
            (cross_num > 0).then(|| CrossNet::new(&(path / "crossnet"), input, cross_num, matrix));
        let extra = if cross.is_some() { input } else { 0 };
        let width = input as i64;
        Dcn {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2.dnn, extra),
            cross,
            empty_cross: (width, if matrix { width } else { 1 }),
            l2_cross: l2.interaction.unwrap_or(1e-5),
            // DeepCTR-Torch penalises DCN's dnn_linear with l2_reg_linear
            l2_head: l2.linear,
        }
    }
}

impl Network for Dcn {
    /// Logits `[B]` from `emb` `[B, F, d]`, `dense` `[B, m]` and `linear` `[B, F, 1]`.
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let input = combined_dnn_input(x.emb, x.dense);
        let cross = self.cross.as_ref().map(|c| c.forward(&input));
        let mut logit = self.parts.linear_logit(x);
        if let Some(deep) = self.parts.dnn_logit(&input, cross.as_ref(), train) {
            logit += deep;
        }
        self.parts.finish(logit)
    }

    fn l2_penalty(&self) -> Option<Tensor> {
        sum_terms([
            self.parts.l2_penalty(false),
            self.cross
                .as_ref()
                .filter(|_| self.l2_cross > 0.0)
                .map(|c| c.kernel_square_sum() * self.l2_cross),
            self.parts
                .head_weight()
                .filter(|_| self.l2_head > 0.0)
                .map(|w| w.square().sum(Kind::Float) * self.l2_head),
        ])
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        match &self.cross {
            Some(c) => out.extend(c.state_dict("crossnet.")),
            None => {
                let (d, cols) = self.empty_cross;
                let device = out.last().map_or(tch::Device::Cpu, |(_, t)| t.device());
                let empty = |c: i64| Tensor::zeros([0, d, c], (Kind::Float, device));
                out.push(("crossnet.kernels".into(), empty(cols)));
                out.push(("crossnet.bias".into(), empty(1)));
            }
        }
        out
    }
}
