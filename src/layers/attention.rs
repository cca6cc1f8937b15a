//! AutoInt's interacting layer (Song et al. 2019), as DeepCTR-Torch's `InteractingLayer`:
//! multi-head self-attention over the fields, unscaled, with a residual projection and ReLU.
use tch::{nn, Kind, Tensor};

use super::attention_loops::{self, Heads};
use crate::grad::add_to_grad;

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
    ///
    /// Computed in a reassociated form of DeepCTR-Torch's, equal in exact arithmetic: per head
    /// `j` (`W_·j` the head's `d/heads` columns), the scores `(x W_Qj)(x W_Kj)ᵀ` are
    /// `(x A_j) xᵀ` with `A_j = W_Qj W_Kjᵀ` (`[d, d]`), and the head's output
    /// `softmax(·) (x W_Vj)` is `(softmax(·) x) W_Vj`. The products then read `x` and write
    /// their results in the layouts the next one reads, with all heads in one batched product,
    /// so no head-split or merge copies are made: 1.05-1.3x the rate of the formulation with
    /// `Q, K, V` in `make bench BENCH_ARGS=compute`, at 1.59x its FLOPs (defaults).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // the batch stays -1 so that a traced module takes any batch size
        let (f, d) = (x.size()[1], x.size()[2]);
        let (h, dh) = (self.heads, d / self.heads);
        // [A_0 | … | A_{h-1}]: [d, h·d]
        let a = self
            .query
            .view([d, h, dh])
            .permute([1, 0, 2])
            .bmm(&self.key.view([d, h, dh]).permute([1, 2, 0]))
            .permute([1, 0, 2])
            .reshape([d, h * d]);
        // rows (f, j) of x A_j: [B, F·h, d]
        let p = x.matmul(&a).view([-1, f * h, d]);
        let scores = p.bmm(&x.transpose(1, 2)).softmax(-1, x.kind());
        // (softmax · x) per head, [B·F, h·d] with columns (j, ·), times diag(W_V0, …)
        let weighted = scores.bmm(x).view([-1, h * d]);
        let value = Tensor::block_diag(&self.value.view([d, h, dh]).unbind(1));
        let mut out = match &self.residual {
            Some(r) => x.reshape([-1, d]).mm(r).addmm(&weighted, &value),
            None => weighted.mm(&value),
        };
        out.relu_().view([-1, f, d])
    }

    /// DeepCTR-Torch's formulation (`Q, K, V` split into heads): the reference that tests and
    /// `make bench` compare [`InteractingLayer::forward`] against.
    pub fn forward_deepctr_form(&self, x: &Tensor) -> Tensor {
        let (f, d) = (x.size()[1], x.size()[2]);
        let split = |w: &Tensor| {
            // [B, F, d] → [B, heads, F, d/heads]
            x.matmul(w)
                .view([-1, f, self.heads, d / self.heads])
                .transpose(1, 2)
        };
        let (q, k, v) = (split(&self.query), split(&self.key), split(&self.value));
        let scores = q.matmul(&k.transpose(2, 3)).softmax(-1, x.kind());
        let mut out = scores.matmul(&v).transpose(1, 2).reshape([-1, f, d]);
        if let Some(r) = &self.residual {
            out += x.matmul(r);
        }
        out.relu()
    }

    /// `[W_Query | W_key | W_Value | W_Res]`: `[d, width]`, in the order of `Heads`' columns.
    fn weights(&self) -> Vec<&Tensor> {
        [&self.query, &self.key, &self.value]
            .into_iter()
            .chain(&self.residual)
            .collect()
    }

    fn heads_of(&self, x: &Tensor) -> Heads {
        Heads {
            fields: x.size()[1] as usize,
            dim: x.size()[2] as usize,
            heads: self.heads as usize,
            residual: self.residual.is_some(),
        }
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

/// Stacked interacting layers run for training outside autograd, with a backward pass of their
/// own ([`AttentionTape::backward`]): each layer's four projections in one GEMM, the attention
/// of each sample in loops that keep it in cache (`attention_loops`). Equal to the layers'
/// [`InteractingLayer::forward`] up to rounding.
pub struct AttentionTape {
    /// The last layer's output `[B, F, d]`, a leaf: the loss's backward pass leaves its
    /// gradient here.
    pub output: Tensor,
    layers: Vec<LayerTape>,
}

/// What one layer's backward pass reads.
struct LayerTape {
    /// The input `[B·F, d]`.
    x: Tensor,
    /// `[W_Query | W_key | W_Value | W_Res]`.
    weight: Tensor,
    /// `x · weight`.
    projections: Tensor,
    softmax: Tensor,
    output: Tensor,
    heads: Heads,
}

impl AttentionTape {
    /// The layers' training forward pass over `x` `[B, F, d]`; `None` where the loops cannot
    /// run (not f32 on the CPU, or a head width `d/heads` they are not compiled for: not a power
    /// of two up to 64), and the layers run through autograd instead.
    pub fn record(layers: &[InteractingLayer], x: &Tensor) -> Option<AttentionTape> {
        if x.kind() != Kind::Float || x.device() != tch::Device::Cpu || layers.is_empty() {
            return None;
        }
        tch::no_grad(|| {
            let mut h = x.detach().contiguous();
            let mut tapes = Vec::with_capacity(layers.len());
            for layer in layers {
                let heads = layer.heads_of(&h);
                let x = h.view([-1, heads.dim as i64]);
                let weight = Tensor::cat(&layer.weights(), 1);
                let projections = x.mm(&weight);
                let (output, softmax) = attention_loops::forward(&projections, heads)?;
                h = output.shallow_clone();
                tapes.push(LayerTape {
                    x,
                    weight,
                    projections,
                    softmax,
                    output,
                    heads,
                });
            }
            Some(AttentionTape {
                output: h.set_requires_grad(true),
                layers: tapes,
            })
        })
    }

    /// The backward pass of [`AttentionTape::record`], once the loss's backward pass has given
    /// `output` its gradient: adds the layers' weight gradients to theirs and returns the
    /// input's gradient `[B, F, d]` (zeros if the output got none).
    pub fn backward(&self, layers: &[InteractingLayer]) -> Tensor {
        let g = self.output.grad();
        if !g.defined() {
            return self.output.zeros_like().detach();
        }
        tch::no_grad(|| {
            let mut grad = g.contiguous();
            for (layer, t) in layers.iter().zip(&self.layers).rev() {
                let dim = t.heads.dim as i64;
                let grad_p = attention_loops::backward(
                    &t.projections,
                    &t.softmax,
                    &t.output,
                    &grad,
                    t.heads,
                )
                .expect("the forward pass ran the same loops on the same tensors");
                let grad_weight = t.x.tr().mm(&grad_p);
                for (w, g) in layer.weights().into_iter().zip(grad_weight.split(dim, 1)) {
                    add_to_grad(w, &g);
                }
                grad = grad_p
                    .mm(&t.weight.tr())
                    .view([-1, t.heads.fields as i64, dim]);
            }
            grad
        })
    }
}
