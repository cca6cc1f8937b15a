//! Deep & Cross Network (Wang et al. 2017, arXiv:1708.05123) as DeepCTR-Torch 0.3.0's `DCN`:
//! the linear logit plus `dnn_linear([cross(x), dnn(x)])` with x = [flattened embeddings, dense].
use tch::Tensor;

use super::deepctr::{combined_dnn_input, sum_terms, DeepParts};
use super::{Features, InputShape, Network};
use crate::config::L2Config;
use crate::layers::CrossNet;
use tch::nn;

pub struct Dcn {
    parts: DeepParts,
    cross: Option<CrossNet>,
    l2_cross: f64,
    l2_head: f64,
}

impl Dcn {
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
        Dcn {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2.dnn, extra),
            cross,
            l2_cross: l2.interaction.unwrap_or(1e-5),
            // DeepCTR-Torch penalises DCN's dnn_linear with l2_reg_linear
            l2_head: l2.linear,
        }
    }
}

impl Network for Dcn {
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
                .map(|w| w.square().sum(tch::Kind::Float) * self.l2_head),
        ])
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.parts.state_dict();
        if let Some(c) = &self.cross {
            out.extend(c.state_dict("crossnet."));
        }
        out
    }
}
