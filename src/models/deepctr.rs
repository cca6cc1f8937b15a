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
    let b = emb.size()[0];
    Tensor::cat(&[emb.reshape([b, -1]), dense.shallow_clone()], 1)
}

pub struct DeepParts {
    linear: LinearPart,
    dnn: Option<(Dnn, nn::Linear)>,
    out_bias: Tensor,
    l2_dnn: f64,
}

impl DeepParts {
    /// `dnn_input` is the width of what the model feeds its DNN; no DNN when `hidden` is empty.
    pub fn new(
        path: &nn::Path,
        num_dense: usize,
        dnn_input: usize,
        hidden: &[usize],
        dropout: f64,
        l2_dnn: f64,
    ) -> DeepParts {
        let dnn = hidden.last().map(|&last| {
            let dnn = Dnn::new(&(path / "dnn"), dnn_input, hidden, dropout, INIT_STD);
            let cfg = nn::LinearConfig {
                bias: false,
                ..Default::default()
            };
            (dnn, nn::linear(path / "dnn_linear", last as i64, 1, cfg))
        });
        DeepParts {
            linear: LinearPart::new(&(path / "linear_model"), num_dense, INIT_STD),
            dnn,
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

    /// `dnn_linear(dnn(input))`: `[B, 1]`, or None without a DNN.
    pub fn dnn_logit(&self, input: &Tensor, train: bool) -> Option<Tensor> {
        self.dnn
            .as_ref()
            .map(|(dnn, out)| out.forward(&dnn.forward(input, train)))
    }

    /// Adds the prediction bias: `[B, 1]` → logits `[B]` (DeepCTR's output is their sigmoid).
    pub fn finish(&self, logit: Tensor) -> Tensor {
        (logit + &self.out_bias).squeeze_dim(1)
    }

    /// `l2_reg_dnn · Σ w²` over the DNN weights and `dnn_linear`.
    pub fn l2_penalty(&self) -> Option<Tensor> {
        let (dnn, out) = self.dnn.as_ref()?;
        (self.l2_dnn > 0.0)
            .then(|| (dnn.weight_square_sum() + out.ws.square().sum(Kind::Float)) * self.l2_dnn)
    }

    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = self.linear.state_dict();
        if let Some((dnn, linear)) = &self.dnn {
            out.extend(dnn.state_dict("dnn."));
            out.push(("dnn_linear.weight".into(), linear.ws.shallow_clone()));
        }
        out.push(("out.bias".into(), self.out_bias.shallow_clone()));
        out
    }
}
