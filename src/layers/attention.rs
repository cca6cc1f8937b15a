//! AutoInt's interacting layer (Song et al. 2019), as DeepCTR-Torch's `InteractingLayer`:
//! multi-head self-attention over the fields, unscaled, with a residual projection and ReLU.
use tch::{nn, Kind, Tensor};

/// One interacting layer over `d`-wide field embeddings with `heads` heads of width `d/heads`.
#[derive(Debug)]
pub struct InteractingLayer {
    query: Tensor,
    key: Tensor,
    value: Tensor,
    residual: Option<Tensor>,
    heads: i64,
}

impl InteractingLayer {
    /// Every matrix `[d, d]` ~ N(0, 0.05²), as DeepCTR-Torch.
    pub fn new(path: &nn::Path, dim: usize, heads: usize, residual: bool) -> InteractingLayer {
        let d = dim as i64;
        let m = |name: &str| path.randn(name, &[d, d], 0.0, 0.05);
        InteractingLayer {
            query: m("W_Query"),
            key: m("W_key"),
            value: m("W_Value"),
            residual: residual.then(|| m("W_Res")),
            heads: heads as i64,
        }
    }

    /// `[B, F, d]` → `[B, F, d]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // the batch stays -1 so that a traced module takes any batch size
        let (f, d) = (x.size()[1], x.size()[2]);
        let split = |w: &Tensor| {
            // [B, F, d] → [B, heads, F, d/heads]
            x.matmul(w)
                .view([-1, f, self.heads, d / self.heads])
                .transpose(1, 2)
        };
        let (q, k, v) = (split(&self.query), split(&self.key), split(&self.value));
        let scores = q.matmul(&k.transpose(2, 3)).softmax(-1, Kind::Float);
        let mut out = scores.matmul(&v).transpose(1, 2).reshape([-1, f, d]);
        if let Some(r) = &self.residual {
            out += x.matmul(r);
        }
        out.relu()
    }

    /// `{prefix}W_Query`, `W_key`, `W_Value` (and `W_Res` with the residual), each `[d, d]`.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (format!("{prefix}W_Query"), self.query.shallow_clone()),
            (format!("{prefix}W_key"), self.key.shallow_clone()),
            (format!("{prefix}W_Value"), self.value.shallow_clone()),
        ];
        if let Some(r) = &self.residual {
            out.push((format!("{prefix}W_Res"), r.shallow_clone()));
        }
        out
    }
}
