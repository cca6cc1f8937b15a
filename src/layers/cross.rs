//! The cross network of DCN (Wang et al. 2017; `matrix` as DCN-M, 2020), as DeepCTR-Torch's
//! `CrossNet`: x_{l+1} = x_0 (x_lᵀ w_l) + b_l + x_l (vector) or x_0 ⊙ (W_l x_l + b_l) + x_l.
use tch::{nn, Kind, Tensor};

/// `L` cross layers over inputs of width `D`; parameters `kernels` and `bias` as DeepCTR-Torch.
#[derive(Debug)]
pub struct CrossNet {
    /// `[L, D, 1]` (vector) or `[L, D, D]` (matrix): DeepCTR's `crossnet.kernels`.
    kernels: Tensor,
    /// `[L, D, 1]`: `crossnet.bias`.
    bias: Tensor,
    matrix: bool,
}

impl CrossNet {
    /// Kernels Xavier-normal per layer, biases zero, as DeepCTR-Torch.
    pub fn new(path: &nn::Path, width: usize, layers: usize, matrix: bool) -> CrossNet {
        let (d, l) = (width as i64, layers as i64);
        let cols = if matrix { d } else { 1 };
        let std = (2.0 / (d + cols) as f64).sqrt();
        CrossNet {
            kernels: path.randn("kernels", &[l, d, cols], 0.0, std),
            bias: path.zeros("bias", &[l, d, 1]),
            matrix,
        }
    }

    /// `[B, D]` → `[B, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x0 = x.unsqueeze(2);
        let mut xl = x0.shallow_clone();
        for i in 0..self.kernels.size()[0] {
            let (w, b) = (self.kernels.get(i), self.bias.get(i));
            xl = if self.matrix {
                &x0 * (w.matmul(&xl) + b) + &xl
            } else {
                // x_lᵀ w: [B, 1, 1]
                let xw = xl.transpose(1, 2).matmul(&w);
                x0.matmul(&xw) + b + &xl
            };
        }
        xl.squeeze_dim(2)
    }

    /// Σ w² over the kernels (DeepCTR's `l2_reg_cross` term).
    pub fn kernel_square_sum(&self) -> Tensor {
        self.kernels.square().sum(Kind::Float)
    }

    /// `{prefix}kernels` `[L, D, 1 or D]` and `{prefix}bias` `[L, D, 1]`.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{prefix}kernels"), self.kernels.shallow_clone()),
            (format!("{prefix}bias"), self.bias.shallow_clone()),
        ]
    }
}
