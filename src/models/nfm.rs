//! NFM (He & Chua 2017, arXiv:1708.05027) as DeepCTR-Torch 0.3.0's `NFM`: the linear logit
//! plus a DNN over [bi-interaction pooling of the embeddings (with dropout), dense features].
use tch::{nn, Tensor};

use super::deepctr::{combined_dnn_input, DeepParts};
use super::{Features, InputShape, Network};
use crate::layers::bi_interaction;

pub struct Nfm {
    parts: DeepParts,
    bi_dropout: f64,
}

impl Nfm {
    pub fn new(
        path: &nn::Path,
        shape: &InputShape,
        dim: usize,
        hidden: &[usize],
        bi_dropout: f64,
        dropout: f64,
        l2_dnn: f64,
    ) -> Nfm {
        let input = dim + shape.num_dense;
        Nfm {
            parts: DeepParts::new(path, shape.num_dense, input, hidden, dropout, l2_dnn, 0),
            bi_dropout,
        }
    }
}

impl Network for Nfm {
    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let pooled = bi_interaction(x.emb).dropout(self.bi_dropout, train);
        let mut logit = self.parts.linear_logit(x);
        if let Some(deep) = self.parts.dnn_logit(
            &combined_dnn_input(&pooled.unsqueeze(1), x.dense),
            None,
            train,
        ) {
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
