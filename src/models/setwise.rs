//! Paper 004's models as one composition (TorchRec's embedding → interaction → over arch):
//!
//! ```text
//! set m's [B, F, d] ─► interaction_m ─► first hidden layer_m ─┐
//!                                                              ├─ mean over sets ─► rest of the MLP ─► logit
//! set m'…                                                    ─┘
//! ```
//!
//! Every set has its own interaction and its own first hidden layer (Linear → BatchNorm → ReLU →
//! Dropout): that layer is the non-linear projection paper 004 puts after each set, without
//! which averaging linear interactions of M sets would equal one interaction of a table M times
//! as wide. The rest of the MLP and the output unit are shared. With one set this is the plain
//! (single-embedding) model. DNN, IPNN, NFwFM and DCNv2 differ only in the interaction; FinalMLP
//! (`final_mlp.rs`) and xDeepFM have two branches and compose the same parts differently.
//!
//! Dense features join every set's interaction output (DeepCTR-Torch's `combined_dnn_input`
//! convention; paper 004's data has none: its code buckets Criteo's numbers into categories).
use tch::{nn, Tensor};

use super::{Features, Network, NetworkShape};
use crate::config::{Dcnv2Config, DnnConfig, IpnnConfig, MlpSettings, NfwfmConfig};
use crate::layers::{
    batch_norm1d, CrossNetV2, FieldWeightedPooling, InnerProduct, LinearInit, MlpBlock,
    MlpBlockConfig,
};

/// What one set's embeddings go through before its first hidden layer.
pub enum Interaction {
    /// DNN: `[flatten(e), dense]`.
    Flatten,
    /// IPNN: `[flatten(e), inner products, dense]` (DeepCTR-Torch PNN's order).
    InnerProducts(InnerProduct),
    /// NFwFM: `[dropout(batch_norm(Σ_ij r_ij e_i ⊙ e_j)), dense]`.
    FieldWeighted {
        pooling: FieldWeightedPooling,
        norm: Option<nn::BatchNorm>,
        dropout: f64,
    },
    /// DCNv2 (stacked): `cross([flatten(e), dense])`.
    Cross(CrossNetV2),
}

impl Interaction {
    /// `emb` `[B, F, d]`, `dense` `[B, m]` → `[B, width]`.
    fn forward(&self, emb: &Tensor, dense: &Tensor, train: bool) -> Tensor {
        let flat_with_dense = || Tensor::cat(&[emb.flatten(1, -1), dense.shallow_clone()], 1);
        match self {
            Interaction::Flatten => flat_with_dense(),
            Interaction::InnerProducts(ip) => Tensor::cat(
                &[emb.flatten(1, -1), ip.forward(emb), dense.shallow_clone()],
                1,
            ),
            Interaction::FieldWeighted {
                pooling,
                norm,
                dropout,
            } => {
                let mut pooled = pooling.forward(emb);
                if let Some(bn) = norm {
                    pooled = nn::ModuleT::forward_t(bn, &pooled, train);
                }
                Tensor::cat(&[pooled.dropout(*dropout, train), dense.shallow_clone()], 1)
            }
            Interaction::Cross(cross) => cross.forward(&flat_with_dense()),
        }
    }
}

/// The over arch's shape from `model.mlp`: the first hidden layer alone (one per set), and the
/// rest with the output unit.
fn over_arch_blocks(mlp: &MlpSettings) -> (MlpBlockConfig, MlpBlockConfig) {
    let block = |hidden: &[usize], output| MlpBlockConfig {
        hidden: hidden.to_vec(),
        dropout: mlp.dropout,
        batch_norm: mlp.batch_norm,
        output,
        init: LinearInit::TorchDefault,
    };
    (
        block(&mlp.hidden_units[..1], None),
        block(&mlp.hidden_units[1..], Some(1)),
    )
}

/// Embedding sets → an interaction and a first hidden layer per set → mean → shared MLP.
pub struct SetwiseMlp {
    branches: Vec<(Interaction, MlpBlock)>,
    rest: MlpBlock,
    /// `Network::activation_floats_per_row`, from the shapes.
    activation_floats: usize,
}

impl SetwiseMlp {
    /// `interaction(path, m)` builds set m's interaction; `width` is its output width and
    /// `inner` the floats per example of its own intermediates.
    fn new(
        path: &nn::Path,
        sets: usize,
        (width, inner): (usize, usize),
        mlp: &MlpSettings,
        mut interaction: impl FnMut(&nn::Path, usize) -> Interaction,
    ) -> SetwiseMlp {
        let activation_floats =
            sets * (inner + width + mlp.hidden_units[0]) + mlp.hidden_units.iter().sum::<usize>();
        let (first, rest) = over_arch_blocks(mlp);
        let branches = (0..sets)
            .map(|m| {
                // `set{m}` also with one set, so that names do not depend on M
                let p = path / format!("set{m}");
                let block = MlpBlock::new(&(&p / "first"), width, &first);
                (interaction(&p, m), block)
            })
            .collect();
        SetwiseMlp {
            branches,
            rest: MlpBlock::new(&(path / "rest"), mlp.hidden_units[0], &rest),
            activation_floats,
        }
    }

    pub fn dnn(path: &nn::Path, shape: &NetworkShape, cfg: &DnnConfig) -> Self {
        let width = shape.flat_width();
        Self::new(path, shape.sets, (width, 0), &cfg.mlp, |_, _| {
            Interaction::Flatten
        })
    }

    pub fn ipnn(path: &nn::Path, shape: &NetworkShape, cfg: &IpnnConfig) -> Self {
        let fields = shape.fields;
        let width = InnerProduct::output_width(fields) + shape.flat_width();
        // the Gram matrix
        let inner = fields * fields;
        Self::new(path, shape.sets, (width, inner), &cfg.mlp, |_, _| {
            Interaction::InnerProducts(InnerProduct::new(fields, path.device()))
        })
    }

    pub fn nfwfm(path: &nn::Path, shape: &NetworkShape, cfg: &NfwfmConfig) -> Self {
        let (fields, dim) = (shape.fields, shape.dim);
        let width = dim + shape.num_dense;
        // the mixed embeddings and their product with the embeddings
        let inner = 2 * fields * dim;
        Self::new(path, shape.sets, (width, inner), &cfg.mlp, |p, _| {
            Interaction::FieldWeighted {
                pooling: FieldWeightedPooling::new(&(p / "fwfm"), fields),
                norm: cfg
                    .mlp
                    .batch_norm
                    .then(|| batch_norm1d(p / "pooling_norm", dim)),
                dropout: cfg.pooling_dropout,
            }
        })
    }

    pub fn dcnv2(path: &nn::Path, shape: &NetworkShape, cfg: &Dcnv2Config) -> Self {
        let width = shape.flat_width();
        // per layer x0, x and W·x
        let inner = 3 * cfg.cross_layers * width;
        Self::new(path, shape.sets, (width, inner), &cfg.mlp, |p, _| {
            Interaction::Cross(CrossNetV2::new(&(p / "cross"), width, cfg.cross_layers))
        })
    }
}

/// The mean over sets of `[B, W]` tensors.
pub fn mean_over_sets(outputs: Vec<Tensor>) -> Tensor {
    let n = outputs.len() as f64;
    outputs
        .into_iter()
        .reduce(|a, b| a + b)
        .expect("at least one embedding set")
        / n
}

impl Network for SetwiseMlp {
    /// DeepCTR-Torch's names (`dnn.linears.{i}`, `dnn_linear`, `out.bias`), for the IPNN parity
    /// test against its PNN: one set, no batch norm (DeepCTR's DNN has none), else empty.
    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let [(_, first)] = &self.branches[..] else {
            return Vec::new();
        };
        if first.has_batch_norm() || self.rest.has_batch_norm() {
            return Vec::new();
        }
        let linears: Vec<&nn::Linear> = first
            .linears()
            .into_iter()
            .chain(self.rest.linears())
            .collect();
        let (output, hidden) = linears.split_last().expect("an output layer");
        let mut out = Vec::new();
        for (i, l) in hidden.iter().enumerate() {
            out.push((format!("dnn.linears.{i}.weight"), l.ws.shallow_clone()));
            if let Some(b) = &l.bs {
                out.push((format!("dnn.linears.{i}.bias"), b.shallow_clone()));
            }
        }
        out.push(("dnn_linear.weight".into(), output.ws.shallow_clone()));
        let bias = output.bs.as_ref().expect("the output layer has a bias");
        out.push(("out.bias".into(), bias.shallow_clone()));
        out
    }

    fn activation_floats_per_row(&self) -> usize {
        self.activation_floats
    }

    fn forward(&self, x: &Features, train: bool) -> Tensor {
        let sets = x.set_embeddings();
        let hidden = self
            .branches
            .iter()
            .zip(&sets)
            .map(|((interaction, first), emb)| {
                first.forward(&interaction.forward(emb, x.dense, train), train)
            })
            .collect();
        self.rest
            .forward(&mean_over_sets(hidden), train)
            .squeeze_dim(1)
    }
}
