//! A stack of linear layers with ReLU between them.
use tch::{nn, nn::Module, Tensor};

#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    relu_last: bool,
}

impl Mlp {
    /// `widths` = [input, hidden..., output]. Weights ~ N(0, 2/(in+out)) and biases
    /// ~ N(0, 1/out), as DLRM's reference code initialises its MLPs.
    pub fn new(path: &nn::Path, widths: &[usize], relu_last: bool) -> Mlp {
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (fan_in, fan_out) = (w[0] as f64, w[1] as f64);
                let cfg = nn::LinearConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: (2.0 / (fan_in + fan_out)).sqrt(),
                    },
                    bs_init: Some(nn::Init::Randn {
                        mean: 0.0,
                        stdev: (1.0 / fan_out).sqrt(),
                    }),
                    bias: true,
                };
                nn::linear(path / i, w[0] as i64, w[1] as i64, cfg)
            })
            .collect();
        Mlp { layers, relu_last }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len().saturating_sub(1);
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last || self.relu_last {
                h = h.relu();
            }
        }
        h
    }
}
