//! FinalMLP's two additions to a pair of MLP streams (Mao et al. 2023), as FuxiCTR's
//! `model_zoo/.../FinalMLP.py` defines them: stream-specific feature selection (gates on the
//! flattened embedding) and multi-head bilinear fusion of the two streams' outputs.
//!
//! The streams themselves are two `MlpBlock`s the model builds. Paper 004's own FinalMLP
//! (thuml/Multi-Embedding `torchfm/model/finalmlp.py`) leaves feature selection out (the
//! module is commented out for `nn.Identity`) and fuses with one head, one output and a zero
//! initial bilinear matrix: `InteractionAggregation` with `num_heads = 1`, `output = 1`,
//! `AggregationInit::MultiEmbeddingAuthors`.
use tch::{nn, nn::Module, Tensor};

use super::mlp_block::{linear, LinearInit, MlpBlock, MlpBlockConfig};

/// One gate: a learned context vector through an MLP with a sigmoid output, doubled, so the
/// gate lies in (0, 2) and starts at 1 (zero context, zero biases).
#[derive(Debug)]
struct ContextGate {
    /// `[1, embedding_dim]`: FuxiCTR's `fs{s}_ctx_bias`, used when the stream has no context
    /// features (the only case here).
    context: Tensor,
    mlp: MlpBlock,
}

impl ContextGate {
    fn new(
        path: &nn::Path,
        stream: usize,
        feature_dim: usize,
        embedding_dim: usize,
        hidden: &[usize],
    ) -> ContextGate {
        let context = path.zeros(&format!("fs{stream}_ctx_bias"), &[1, embedding_dim as i64]);
        let cfg = MlpBlockConfig {
            hidden: hidden.to_vec(),
            output: Some(feature_dim),
            init: LinearInit::XavierNormalZeroBias,
            ..Default::default()
        };
        let mlp = MlpBlock::new(&(path / format!("fs{stream}_gate")), embedding_dim, &cfg);
        ContextGate { context, mlp }
    }

    /// `[1, feature_dim]`, the same for every example (the context is a parameter).
    fn gate(&self) -> Tensor {
        self.mlp.forward(&self.context, false).sigmoid() * 2.0
    }
}

/// FinalMLP's feature selection without context features: stream s sees
/// `flat_emb ⊙ 2·sigmoid(MLP_s(ctx_s))`, a learned per-coordinate reweighting of the flattened
/// embedding, different for the two streams.
#[derive(Debug)]
pub struct FeatureSelection {
    gates: [ContextGate; 2],
}

impl FeatureSelection {
    /// `feature_dim` = F·d (the flattened embedding), `embedding_dim` = d (the context width),
    /// `hidden` = FuxiCTR's `fs_hidden_units` (ReLU, no batch norm, no dropout). Init as
    /// FuxiCTR: context zero, Linear weights Xavier-normal, biases zero. VarStore names
    /// `fs1_ctx_bias`, `fs1_gate.mlp.{k}.{weight,bias}` (k as `MlpBlock` numbers them: hidden
    /// layers at 0, 3, 6, …, the output layer after them) and the same for `fs2`.
    pub fn new(
        path: &nn::Path,
        feature_dim: usize,
        embedding_dim: usize,
        hidden: &[usize],
    ) -> FeatureSelection {
        let gate = |s| ContextGate::new(path, s, feature_dim, embedding_dim, hidden);
        FeatureSelection {
            gates: [gate(1), gate(2)],
        }
    }

    /// `flat_emb` `[B, F·d]` → the two streams' inputs, each `[B, F·d]`.
    pub fn forward(&self, flat_emb: &Tensor) -> (Tensor, Tensor) {
        let [g1, g2] = &self.gates;
        (flat_emb * g1.gate(), flat_emb * g2.gate())
    }

    /// FuxiCTR's names under `prefix`: `fs{1,2}_ctx_bias`, `fs{1,2}_gate.mlp.{k}.*`.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (s, g) in self.gates.iter().enumerate() {
            let s = s + 1;
            out.push((format!("{prefix}fs{s}_ctx_bias"), g.context.shallow_clone()));
            out.extend(g.mlp.state_dict(&format!("{prefix}fs{s}_gate.")));
        }
        out
    }
}

/// How `InteractionAggregation` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregationInit {
    /// FuxiCTR: `w_x`, `w_y` Xavier-normal with zero biases, `w_xy` Xavier-normal.
    FuxiCtr,
    /// Paper 004's `FinalMLPFusion`: `w_x`, `w_y` torch's default Linear init, `w_xy` zero.
    MultiEmbeddingAuthors,
}

/// FinalMLP's fusion of two stream outputs x `[B, X]` and y `[B, Y]` into `[B, O]`:
/// w_x(x) + w_y(y) + Σ_h bilinear_h(x_h, y_h), where x and y are split into `H` heads of
/// X/H and Y/H coordinates and head h's bilinear term is, for output o,
/// Σ_a Σ_b x_{h,a} · W_xy[h, a, o·(Y/H) + b] · y_{h,b}, with `W_xy` the `[H·(X/H)·(Y/H), O]`
/// parameter read as `[H, X/H, O·(Y/H)]` (FuxiCTR's layout; for O = 1 simply W[h, a, b]).
#[derive(Debug)]
pub struct InteractionAggregation {
    w_x: nn::Linear,
    w_y: nn::Linear,
    /// `[H·hx·hy, O]`.
    w_xy: Tensor,
    num_heads: i64,
    output: i64,
}

impl InteractionAggregation {
    /// VarStore names `w_x.{weight,bias}`, `w_y.{weight,bias}`, `w_xy`. Panics unless `H`
    /// divides both widths. Paper 004's `w_xy[a, b]` (`[X, Y]`, H = O = 1) is `w_xy[a·Y + b, 0]`.
    pub fn new(
        path: &nn::Path,
        x_dim: usize,
        y_dim: usize,
        output: usize,
        num_heads: usize,
        init: AggregationInit,
    ) -> InteractionAggregation {
        assert!(
            num_heads > 0 && x_dim.is_multiple_of(num_heads) && y_dim.is_multiple_of(num_heads),
            "InteractionAggregation: {num_heads} heads do not divide widths {x_dim} and {y_dim}"
        );
        let linear_init = match init {
            AggregationInit::FuxiCtr => LinearInit::XavierNormalZeroBias,
            AggregationInit::MultiEmbeddingAuthors => LinearInit::TorchDefault,
        };
        let rows = (num_heads * (x_dim / num_heads) * (y_dim / num_heads)) as i64;
        let cols = output as i64;
        let w_xy_init = match init {
            AggregationInit::FuxiCtr => nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (rows + cols) as f64).sqrt(),
            },
            AggregationInit::MultiEmbeddingAuthors => nn::Init::Const(0.0),
        };
        InteractionAggregation {
            w_x: linear(path / "w_x", x_dim, output, linear_init),
            w_y: linear(path / "w_y", y_dim, output, linear_init),
            w_xy: path.var("w_xy", &[rows, cols], w_xy_init),
            num_heads: num_heads as i64,
            output: cols,
        }
    }

    /// `x` `[B, X]`, `y` `[B, Y]` → `[B, O]`.
    pub fn forward(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let (h, o) = (self.num_heads, self.output);
        let head_x = x.view([-1, h, x.size()[1] / h]);
        let head_y = y.view([-1, h, y.size()[1] / h]);
        let hx = head_x.size()[2];
        let hy = head_y.size()[2];
        // [B, H, 1, hx] · [H, hx, O·hy] → [B, H, 1, O·hy] → [B, H, O, hy]
        let xw = head_x
            .unsqueeze(2)
            .matmul(&self.w_xy.view([h, hx, o * hy]))
            .view([-1, h, o, hy]);
        // [B, H, O, hy] · [B, H, hy, 1] → [B, H, O]
        let bilinear = xw.matmul(&head_y.unsqueeze(-1)).squeeze_dim(-1);
        self.w_x.forward(x) + self.w_y.forward(y) + bilinear.sum_dim_intlist(1, false, x.kind())
    }

    /// Σ w² over `w_x`, `w_y` and `w_xy` (not the biases).
    pub fn weight_square_sum(&self) -> Tensor {
        let sq = |w: &Tensor| w.square().sum(w.kind());
        sq(&self.w_x.ws) + sq(&self.w_y.ws) + sq(&self.w_xy)
    }

    /// FuxiCTR's names under `prefix`: `w_x.weight`, `w_x.bias`, `w_y.weight`, `w_y.bias`, `w_xy`.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, l) in [("w_x", &self.w_x), ("w_y", &self.w_y)] {
            out.push((format!("{prefix}{name}.weight"), l.ws.shallow_clone()));
            if let Some(b) = &l.bs {
                out.push((format!("{prefix}{name}.bias"), b.shallow_clone()));
            }
        }
        out.push((format!("{prefix}w_xy"), self.w_xy.shallow_clone()));
        out
    }
}
