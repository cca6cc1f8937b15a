//! CTR models. Each is a `Network` over dense features and the `[B, F, d]` output of any
//! embedding kind, so swapping single-layer for MLET tables is a configuration change only.
mod autoint;
mod dcn;
mod deepctr;
mod deepfm;
mod dlrm;
mod final_mlp;
mod nfm;
mod setwise;
mod wdl;
mod xdeepfm;

pub use deepctr::DeepCtrModel;
pub use dlrm::Dlrm;
pub use final_mlp::FinalMlp;
pub use setwise::SetwiseMlp;

use anyhow::{bail, Result};
use tch::{nn, Device, Tensor};

use crate::config::{EmbeddingConfig, EmbeddingKind, Family, ModelConfig, TableInit};
use crate::embedding::{Embeddings, HashedField, Lookup, LookupIndex};

/// What a network sees of a batch.
pub struct Features<'a> {
    /// `[B, num_dense]`.
    pub dense: &'a Tensor,
    /// `[B, M·F, d]` from the model's embeddings (single-layer or MLET): M sets of F fields,
    /// set-major; `[B, F, d]` with one set.
    pub emb: &'a Tensor,
    /// Embedding sets M.
    pub sets: usize,
    /// `[B, F, 1]` per-category weights of the linear ("wide") part, for the models that have one.
    pub linear: Option<&'a Tensor>,
}

impl Features<'_> {
    /// Each set's `[B, F, d]` embeddings.
    pub fn set_embeddings(&self) -> Vec<Tensor> {
        self.emb.chunk(self.sets as i64, 1)
    }
}

/// The part of a model after the embedding lookups.
pub trait Network {
    /// Logits `[B]`; `train` switches dropout on.
    fn forward(&self, x: &Features, train: bool) -> Tensor;

    /// An upper bound on the floats per example an inference forward pass holds at once, the
    /// embeddings it is given aside (the sum of every intermediate's width will do; what
    /// matters is the large ones, such as the CIN's outer products). Evaluation batches are
    /// sized by it (`CtrModel::eval_bytes_per_row`).
    fn activation_floats_per_row(&self) -> usize;

    /// After the loss's backward pass: the gradient of the embeddings `[B, M·F, d]` from the
    /// parts of the last training forward pass that compute their backward pass themselves
    /// (xDeepFM's CIN), having added their parameters' gradients; `None` where there are none.
    /// `CtrModel::backward` calls it.
    fn backward_deferred(&self) -> Option<Tensor> {
        None
    }

    /// The L2 penalty of the network's own weights (DNN, cross, CIN), added to the loss.
    fn l2_penalty(&self) -> Option<Tensor> {
        None
    }

    /// The network's parameters under DeepCTR-Torch's `state_dict` names (e.g.
    /// `dnn.linears.0.weight`, `linear_model.weight`, `out.bias`), for the parity tests and for
    /// exporting to DeepCTR-Torch. Empty for models DeepCTR-Torch does not have (DLRM).
    fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Shapes a model is built for, taken from the data set.
#[derive(Clone, Debug)]
pub struct InputShape {
    pub num_dense: usize,
    /// Vocabulary sizes of the categorical fields.
    pub cardinalities: Vec<usize>,
    /// Fields whose ids are hashed into fewer rows (`embedding.hash` resolved against the data;
    /// empty without hashing).
    pub hashed: Vec<HashedField>,
}

/// What a network is built for: the data's and the embedding's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkShape {
    /// Dense features m.
    pub num_dense: usize,
    /// Categorical fields F.
    pub fields: usize,
    /// Embedding dimension d.
    pub dim: usize,
    /// Embedding sets M (1: a single embedding).
    pub sets: usize,
}

impl NetworkShape {
    pub fn new(shape: &InputShape, embedding: &EmbeddingConfig) -> NetworkShape {
        NetworkShape {
            num_dense: shape.num_dense,
            fields: shape.cardinalities.len(),
            dim: embedding.dim,
            sets: embedding.sets,
        }
    }

    /// `F·d + m`: the width of one set's `[flatten(embeddings), dense]`.
    pub fn flat_width(&self) -> usize {
        self.fields * self.dim + self.num_dense
    }
}

/// VarStore prefixes of the two kinds of sparse tables.
pub const EMBEDDING_PATH: &str = "emb";
pub const LINEAR_PATH: &str = "linear";

/// A trainable model: its variables, its embedding tables and its network.
pub struct CtrModel {
    pub vs: nn::VarStore,
    pub embeddings: Embeddings,
    /// Per-category scalar weights of the linear part (single-layer, width 1), when the model
    /// has one; never factorised.
    pub linear: Option<Embeddings>,
    pub network: Box<dyn Network>,
}

/// Where a batch's ids land in each sparse table: the embedding sets' fused table and the
/// linear part's (which has one set, so its rows differ under multi-embedding).
pub struct BatchIndex {
    pub embedding: LookupIndex,
    pub linear: Option<LookupIndex>,
}

/// One forward pass of a batch: logits and the lookups that carry the tables' sparse gradients
/// (in the order of `CtrModel::sparse_tables`; each lookup knows its rows).
pub struct Forward {
    pub logits: Tensor,
    pub lookups: Vec<Lookup>,
}

impl CtrModel {
    /// Builds a freshly initialised model; call `tch::manual_seed` first for reproducibility.
    pub fn new(
        model: &ModelConfig,
        embedding: &EmbeddingConfig,
        shape: &InputShape,
        device: Device,
    ) -> Result<CtrModel> {
        if embedding.sets > 1 && !model.supports_sets() {
            bail!(
                "embedding.sets: model `{}` has one embedding set (multi-embedding: {})",
                model.name(),
                ModelConfig::MULTI_EMBEDDING_KINDS.join(", ")
            );
        }
        let (asked, given) = (embedding.hash.is_some(), !shape.hashed.is_empty());
        if asked != given {
            bail!(
                "embedding.hash: the model's input shape must carry the hashed fields exactly when \
                 the configuration asks for hashing (embedding::hash::resolve gives them)"
            );
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let embeddings = Embeddings::hashed(
            &(&root / EMBEDDING_PATH),
            &shape.cardinalities,
            &shape.hashed,
            embedding,
        )?;
        // DeepCTR-Torch's models have a linear part: one weight per category, N(0, 1e-4²); hashed
        // like the embeddings, since both read the same lookup index
        let linear = match model.family() {
            Family::DeepCtr => Some(Embeddings::hashed(
                &(&root / LINEAR_PATH),
                &shape.cardinalities,
                &shape.hashed,
                &EmbeddingConfig {
                    dim: 1,
                    kind: EmbeddingKind::Single,
                    k: None,
                    init_std: embedding.init_std,
                    table_init: TableInit::Normal,
                    table_std: 1e-4,
                    sets: 1,
                    hash: None,
                },
            )?),
            Family::Dlrm | Family::MultiEmbedding => None,
        };
        let (net, shape) = (&root / "net", NetworkShape::new(shape, embedding));
        let network: Box<dyn Network> = match model {
            ModelConfig::Dlrm(c) => Box::new(Dlrm::new(&net, &shape, c)?),
            ModelConfig::Wdl(c) => Box::new(DeepCtrModel::wdl(&net, &shape, c)),
            ModelConfig::Deepfm(c) => Box::new(DeepCtrModel::deepfm(&net, &shape, c)),
            ModelConfig::Nfm(c) => Box::new(DeepCtrModel::nfm(&net, &shape, c)),
            ModelConfig::Dcn(c) => Box::new(DeepCtrModel::dcn(&net, &shape, c)),
            ModelConfig::Xdeepfm(c) => Box::new(DeepCtrModel::xdeepfm(&net, &shape, c)),
            ModelConfig::Autoint(c) => Box::new(DeepCtrModel::autoint(&net, &shape, c)?),
            ModelConfig::Dnn(c) => Box::new(SetwiseMlp::dnn(&net, &shape, c)),
            ModelConfig::Ipnn(c) => Box::new(SetwiseMlp::ipnn(&net, &shape, c)),
            ModelConfig::Nfwfm(c) => Box::new(SetwiseMlp::nfwfm(&net, &shape, c)),
            ModelConfig::Dcnv2(c) => Box::new(SetwiseMlp::dcnv2(&net, &shape, c)),
            ModelConfig::Finalmlp(c) => Box::new(FinalMlp::new(&net, &shape, c)),
        };
        Ok(CtrModel {
            vs,
            embeddings,
            linear,
            network,
        })
    }

    /// The sparse tables with their VarStore prefixes, in the order of `Forward::lookups`.
    pub fn sparse_tables(&self) -> Vec<(&'static str, &Embeddings)> {
        let mut tables = vec![(EMBEDDING_PATH, &self.embeddings)];
        if let Some(l) = &self.linear {
            tables.push((LINEAR_PATH, l));
        }
        tables
    }

    /// The lookup indices of `[B, F]` field-local ids (row-major) into every sparse table.
    pub fn index(&self, local: &[i64], device: Device) -> Result<BatchIndex> {
        let embedding = self.embeddings.index(local, device)?;
        let linear = match &self.linear {
            None => None,
            // one set and the same tables: the same rows
            Some(l) if l.cardinalities() == self.embeddings.cardinalities() => {
                Some(embedding.shallow_clone())
            }
            Some(l) => Some(l.index(local, device)?),
        };
        Ok(BatchIndex { embedding, linear })
    }

    /// The gradients of `loss` (made from `lookups`, this model's `forward`) for every parameter
    /// and every lookup's rows: autograd's pass, the network's own backward passes
    /// (`Network::backward_deferred`), then MLET's projections (`Embeddings::backward`).
    pub fn backward(&self, loss: &Tensor, lookups: &[Lookup]) {
        loss.backward();
        if let Some(g) = self.network.backward_deferred() {
            lookups[0].add_output_grad(&g);
        }
        for ((_, table), lookup) in self.sparse_tables().into_iter().zip(lookups) {
            table.backward(lookup);
        }
    }

    /// Logits for a batch, plus the lookups whose rows carry the tables' sparse gradients.
    pub fn forward(&self, dense: &Tensor, index: &BatchIndex, train: bool) -> Forward {
        let emb = self.embeddings.lookup(&index.embedding);
        let linear = self.linear.as_ref().map(|l| {
            l.lookup(
                index
                    .linear
                    .as_ref()
                    .expect("a model with a linear part indexes it"),
            )
        });
        let logits = self.network.forward(
            &Features {
                dense,
                emb: &emb.output,
                sets: self.embeddings.num_sets(),
                linear: linear.as_ref().map(|l| &l.output),
            },
            train,
        );
        let mut lookups = vec![emb];
        lookups.extend(linear);
        Forward { logits, lookups }
    }

    /// Logits from `[B, F]` field-local indices held in a tensor (the export path).
    pub fn forward_local(&self, dense: &Tensor, local: &Tensor) -> Tensor {
        let emb = self.embeddings.forward_local(local);
        let linear = self.linear.as_ref().map(|l| l.forward_local(local));
        self.network.forward(
            &Features {
                dense,
                emb: &emb,
                sets: self.embeddings.num_sets(),
                linear: linear.as_ref(),
            },
            false,
        )
    }

    /// The whole model under DeepCTR-Torch's `state_dict` names, with collapsed embeddings:
    /// `embedding_dict.C{i}.weight` `[n_i, d]`, `linear_model.embedding_dict.C{i}.weight`
    /// `[n_i, 1]` (fields numbered from 1), plus the network's own parameters.
    pub fn deepctr_state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut push_tables = |prefix: &str, emb: &Embeddings| {
            let table = emb.collapse().table;
            for (f, (&off, &n)) in emb.offsets().iter().zip(emb.cardinalities()).enumerate() {
                out.push((
                    format!("{prefix}embedding_dict.C{}.weight", f + 1),
                    table.narrow(0, off, n).copy(),
                ));
            }
        };
        push_tables("", &self.embeddings);
        if let Some(l) = &self.linear {
            push_tables("linear_model.", l);
        }
        out.extend(self.network.deepctr_state_dict());
        out
    }

    /// An upper bound on the bytes per example of an inference forward pass: the lookup's
    /// indices, its rows three times (the distinct rows, every id's row, and the projection's
    /// reordered copy; k wide for MLET), the embeddings twice, the linear part's weights and
    /// the network's activations.
    pub fn eval_bytes_per_row(&self) -> usize {
        let emb = &self.embeddings;
        let tables = emb.num_tables();
        let width = emb.table.size()[1] as usize;
        let floats = tables * (3 * width + 2 * emb.dim() as usize)
            + self.linear.as_ref().map_or(0, |l| 2 * l.num_tables())
            + self.network.activation_floats_per_row();
        // each lookup index: the unique rows and every id's position among them (int64)
        let index_bytes = 2 * 8 * tables * (1 + usize::from(self.linear.is_some()));
        floats * emb.kind().elt_size_in_bytes() + index_bytes
    }

    /// Replaces the embeddings by their collapsed `n x d` tables (what inference keeps).
    pub fn collapse(&mut self) {
        self.embeddings = self.embeddings.collapse_shared();
    }
}
