//! DeepCTR-Torch's `DNN`: linear layers, each followed by ReLU and dropout.
use tch::{nn, nn::Module, Kind, Tensor};

#[derive(Debug)]
pub struct Dnn {
    linears: Vec<nn::Linear>,
    dropout: f64,
}

impl Dnn {
    /// `input` → `hidden[0]` → … → `hidden[last]`. Weights ~ N(0, init_std²) (DeepCTR's 1e-4),
    /// biases keep torch's default U(±1/√fan_in); VarStore names `linears/{i}`.
    pub fn new(
        path: &nn::Path,
        input: usize,
        hidden: &[usize],
        dropout: f64,
        init_std: f64,
    ) -> Dnn {
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        let linears = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let cfg = nn::LinearConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: init_std,
                    },
                    ..Default::default()
                };
                nn::linear(path / "linears" / i, w[0] as i64, w[1] as i64, cfg)
            })
            .collect();
        Dnn { linears, dropout }
    }

    pub fn output_width(&self) -> i64 {
        self.linears.last().map_or(0, |l| l.ws.size()[0])
    }

    /// `[B, input]` → `[B, hidden[last]]`; dropout only when `train`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for l in &self.linears {
            h = l.forward(&h).relu().dropout(self.dropout, train);
        }
        h
    }

    /// Σ w² over the weights (not the biases), DeepCTR's `l2_reg_dnn` term.
    pub fn weight_square_sum(&self) -> Tensor {
        self.linears
            .iter()
            .map(|l| l.ws.square().sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, tch::Device::Cpu)))
    }

    /// Parameters under DeepCTR-Torch's names, prefixed by `prefix` (e.g. `dnn.`).
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, l) in self.linears.iter().enumerate() {
            out.push((format!("{prefix}linears.{i}.weight"), l.ws.shallow_clone()));
            if let Some(b) = &l.bs {
                out.push((format!("{prefix}linears.{i}.bias"), b.shallow_clone()));
            }
        }
        out
    }
}
