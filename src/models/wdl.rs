//! Wide & Deep (Cheng et al. 2016, arXiv:1606.07792) as DeepCTR-Torch 0.3.0's `WDL`: the linear
//! logit plus a DNN over [flattened embeddings, dense features].
use tch::{nn, Tensor};

use super::deepctr::{combined_dnn_input, DeepParts};
use super::{Features, InputShape, Network};

pub struct Wdl {
    parts: DeepParts,
}

impl Wdl {
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        hidden: &[usize],
        dropout: f64,
        l2_dnn: f64,
    ) -> Wdl {
        let input = shape.cardinalities.len() * dim + shape.num_dense;
        Wdl {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2_dnn, 0),
        }
    }
}

impl Network for Wdl {
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let mut logit = self.parts.linear_logit(x);
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
