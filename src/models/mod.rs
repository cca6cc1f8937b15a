//! CTR models. Each is a `Network` over dense features and the `[B, F, d]` output of any
//! embedding kind, so swapping single-layer for MLET tables is a configuration change only.
mod dlrm;

pub use dlrm::Dlrm;

use anyhow::Result;
use tch::{nn, Device, Tensor};

use crate::config::{EmbeddingConfig, ModelConfig};
use crate::embedding::{Embeddings, Lookup, LookupIndex};

/// The part of a model after the embedding lookup.
pub trait Network {
    /// `dense`: `[B, num_dense]`, `emb`: `[B, F, d]` → logits `[B]`.
    fn forward(&self, dense: &Tensor, emb: &Tensor, train: bool) -> Tensor;
}

/// Shapes a model is built for, taken from the data set.
#[derive(Clone, Debug)]
pub struct InputShape {
    pub num_dense: usize,
    pub cardinalities: Vec<usize>,
}

/// A trainable model: its variables, its embedding tables and its network.
pub struct CtrModel {
    pub vs: nn::VarStore,
    pub embeddings: Embeddings,
    pub network: Box<dyn Network>,
}

impl CtrModel {
    /// Builds a freshly initialised model; call `tch::manual_seed` first for reproducibility.
    pub fn new(
        model: &ModelConfig,
        embedding: &EmbeddingConfig,
        shape: &InputShape,
        device: Device,
    ) -> Result<CtrModel> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let embeddings = Embeddings::new(&(&root / "emb"), &shape.cardinalities, embedding)?;
        let network: Box<dyn Network> = match model {
            ModelConfig::Dlrm {
                bottom_mlp,
                top_mlp,
            } => Box::new(Dlrm::new(
                &(&root / "dlrm"),
                shape,
                embedding.dim,
                bottom_mlp,
                top_mlp,
                device,
            )?),
        };
        Ok(CtrModel {
            vs,
            embeddings,
            network,
        })
    }

    /// Logits for a batch, plus the lookup whose rows carry the tables' sparse gradient.
    pub fn forward(&self, dense: &Tensor, index: &LookupIndex, train: bool) -> (Tensor, Lookup) {
        let lookup = self.embeddings.lookup(index);
        let logits = self.network.forward(dense, &lookup.output, train);
        (logits, lookup)
    }

    /// Replaces the embeddings by their collapsed `n x d` tables (what inference keeps).
    pub fn collapse(&mut self) {
        self.embeddings = self.embeddings.collapse();
    }
}
