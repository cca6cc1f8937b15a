//! The parts every DeepCTR-Torch model shares: the linear logit, a DNN with its bias-free output
//! layer `dnn_linear`, and the prediction bias `out.bias`; plus `combined_dnn_input`.
//! Reference: DeepCTR-Torch 0.3.0, `models/basemodel.py`, `layers/core.py`, `inputs.py`.
use tch::{nn, nn::Module, Kind, Tensor};

use super::Features;
use crate::layers::{Dnn, LinearPart};

/// DeepCTR-Torch's `init_std` for embeddings, the linear part and DNN weights.
pub const INIT_STD: f64 = 1e-4;

/// `[flatten(emb), dense]`: `[B, F·d + m]`, the DNN input of DeepCTR-Torch models.
pub fn combined_dnn_input(emb: &Tensor, dense: &Tensor) -> Tensor {
    Tensor::cat(&[emb.flatten(1, -1), dense.shallow_clone()], 1)
}

pub struct DeepParts {
    linear: LinearPart,
    dnn: Option<Dnn>,
    /// `dnn_linear`: the bias-free output layer over [extra features, DNN output].
    head: Option<nn::Linear>,
    out_bias: Tensor,
    l2_dnn: f64,
}

impl DeepParts {
    /// `dnn_input` is the width of what the model feeds its DNN (none when `hidden` is empty);
    /// `extra` is the width of what the model stacks before the DNN output into `dnn_linear`
    /// (DCN's cross output, AutoInt's attention output; 0 for the others).
    pub fn new(
        path: &nn::Path,
        num_dense: usize,
        dnn_input: usize,
        hidden: &[usize],
        dropout: f64,
        l2_dnn: f64,
        extra: usize,
    ) -> DeepParts {
        let dnn = (!hidden.is_empty())
            .then(|| Dnn::new(&(path / "dnn"), dnn_input, hidden, dropout, INIT_STD));
        let head_input = hidden.last().copied().unwrap_or(0) + extra;
        let head = (head_input > 0).then(|| {
            let cfg = nn::LinearConfig {
                bias: false,
                ..Default::default()
            };
            nn::linear(path / "dnn_linear", head_input as i64, 1, cfg)
        });
        DeepParts {
            linear: LinearPart::new(&(path / "linear_model"), num_dense, INIT_STD),
            dnn,
            head,
            out_bias: path.zeros("out_bias", &[1]),
            l2_dnn,
        }
    }

    /// The linear part's logit `[B, 1]`.
    pub fn linear_logit(&self, x: &Features) -> Tensor {
        let sparse = x
            .linear
            .expect("DeepCTR-style models are built with a linear table");
        self.linear.forward(sparse, x.dense)
    }

    /// `dnn_linear([extra, dnn(input)])`: `[B, 1]`, or None when there is neither.
    pub fn dnn_logit(&self, input: &Tensor, extra: Option<&Tensor>, train: bool) -> Option<Tensor> {
        let head = self.head.as_ref()?;
        let mut parts: Vec<Tensor> = extra.into_iter().map(|e| e.shallow_clone()).collect();
        parts.extend(self.dnn.as_ref().map(|d| d.forward(input, train)));
        Some(head.forward(&Tensor::cat(&parts, 1)))
    }

    pub fn has_dnn(&self) -> bool {
        self.dnn.is_some()
    }

    /// `dnn_linear`'s weight, for models that regularise it with another coefficient.
    pub fn head_weight(&self) -> Option<&Tensor> {
        self.head.as_ref().map(|h| &h.ws)
    }

    /// Adds the prediction bias: `[B, 1]` → logits `[B]` (DeepCTR's output is their sigmoid).
    pub fn finish(&self, logit: Tensor) -> Tensor {
        (logit + &self.out_bias).squeeze_dim(1)
    }

    /// `l2_reg_dnn · Σ w²` over the DNN weights, and over `dnn_linear` when `with_head`.
    pub fn l2_penalty(&self, with_head: bool) -> Option<Tensor> {
        if self.l2_dnn == 0.0 {
            return None;
        }
        let mut terms: Vec<Tensor> = self.dnn.iter().map(|d| d.weight_square_sum()).collect();
        if with_head {
            terms.extend(self.head.iter().map(|h| h.ws.square().sum(Kind::Float)));
        }
        terms
            .into_iter()
            .reduce(|a, b| a + b)
            .map(|t| t * self.l2_dnn)
    }

    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.linear.state_dict();
        if let Some(dnn) = &self.dnn {
            out.extend(dnn.state_dict("dnn."));
        }
        if let Some(head) = &self.head {
            out.push(("dnn_linear.weight".into(), head.ws.shallow_clone()));
        }
        out.push(("out.bias".into(), self.out_bias.shallow_clone()));
        out
    }
}

/// Sums optional penalty terms.
pub fn sum_terms(terms: impl IntoIterator<Item = Option<Tensor>>) -> Option<Tensor> {
    terms.into_iter().flatten().reduce(|a, b| a + b)
}
