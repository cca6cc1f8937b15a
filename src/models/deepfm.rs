//! DeepFM (Guo et al. 2017, arXiv:1703.04247) as DeepCTR-Torch 0.3.0's `DeepFM`: the linear
//! logit, the FM second-order term over the embeddings, and a DNN over [embeddings, dense].
use tch::{nn, Tensor};

use super::deepctr::{combined_dnn_input, DeepParts};
use super::{Features, InputShape, Network};
use crate::layers::fm_cross_term;

pub struct DeepFm {
    parts: DeepParts,
    use_fm: bool,
}

impl DeepFm {
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        use_fm: bool,
        hidden: &[usize],
        dropout: f64,
        l2_dnn: f64,
    ) -> DeepFm {
        let input = shape.cardinalities.len() * dim + shape.num_dense;
        DeepFm {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2_dnn, 0),
            use_fm,
        }
    }
}

impl Network for DeepFm {
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let mut logit = self.parts.linear_logit(x);
        if self.use_fm {
            logit += fm_cross_term(x.emb);
        }
        if let Some(deep) = self
            .parts
            .dnn_logit(&combined_dnn_input(x.emb, x.dense), None, train)
        {
            logit += deep;
        }
        self.parts.finish(logit)
    }

    fn l2_penalty(&self) -> Option<Tensor> {
        self.parts.l2_penalty(true)
    }

    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        self.parts.state_dict()
    }
}
