//! DCNv2's full-rank cross network (Wang et al. 2021) as paper 004's code builds it
//! (thuml/Multi-Embedding `CrossNetworkV2`): x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l.
//!
//! FuxiCTR's `CrossNetV2` computes the same with `nn.Linear` layers (W_l its `weight`), which
//! the parity tests compare against. DeepCTR-Torch's `CrossNet(parameterization='matrix')`
//! (`CrossNet` here, `matrix = true`) is the same map too but keeps `[L, D, D]` kernels,
//! Xavier-normal; this one has the authors' per-layer parameters and Xavier-uniform init.
use tch::{nn, Kind, Tensor};

/// `L` full-rank cross layers over inputs of width `W` (for paper 004, `W = F·d`).
#[derive(Debug)]
pub struct CrossNetV2 {
    /// Per layer `W_l` `[W, W]` (output × input, as `nn.Linear.weight`) and `b_l` `[W]`.
    layers: Vec<(Tensor, Tensor)>,
}

impl CrossNetV2 {
    /// `W_l` Xavier-uniform (U(±√(6 / 2W))), `b_l` zero, as the authors. VarStore names
    /// `W.{l}` and `b.{l}` (their `ParameterList`s).
    pub fn new(path: &nn::Path, width: usize, layers: usize) -> CrossNetV2 {
        let w = width as i64;
        let bound = (6.0 / (2 * w) as f64).sqrt();
        let layers = (0..layers)
            .map(|l| {
                (
                    (path / "W").uniform(&l.to_string(), &[w, w], -bound, bound),
                    (path / "b").zeros(&l.to_string(), &[w]),
                )
            })
            .collect();
        CrossNetV2 { layers }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// `[B, W]` → `[B, W]`.
    pub fn forward(&self, x0: &Tensor) -> Tensor {
        let mut x = x0.shallow_clone();
        for (w, b) in &self.layers {
            x = x0 * x.linear(w, Some(b)) + &x;
        }
        x
    }

    /// Σ w² over the `W_l` (not the biases).
    pub fn weight_square_sum(&self) -> Tensor {
        self.layers
            .iter()
            .map(|(w, _)| w.square().sum(w.kind()))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, tch::Device::Cpu)))
    }

    /// `{prefix}W.{l}` `[W, W]` and `{prefix}b.{l}` `[W]`, the authors' names.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, (w, b))| {
                [
                    (format!("{prefix}W.{l}"), w.shallow_clone()),
                    (format!("{prefix}b.{l}"), b.shallow_clone()),
                ]
            })
            .collect()
    }
}
