//! Optimizers written over tensors rather than wrapping `torch::optim`, so that the embedding
//! tables get sparse row updates and all state lives in tensors that can be saved.
use tch::{nn, Tensor};

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::embedding::{Lookup, LookupIndex};
use crate::models::{CtrModel, EMBEDDING_PATH, LINEAR_PATH};

/// A sparse table's gradient after `backward()`: the rows `index.unique` of `table` received
/// the gradient of `lookup.rows`.
pub struct SparseGrad<'a> {
    /// The table's VarStore prefix (`emb`, `linear`), naming its optimizer state.
    pub name: &'a str,
    pub table: &'a Tensor,
    pub lookup: &'a Lookup,
}

impl<'a> SparseGrad<'a> {
    /// The sparse gradients of every table of `model` after a forward pass gave `lookups`.
    pub fn of_model(model: &'a CtrModel, lookups: &'a [Lookup]) -> Vec<SparseGrad<'a>> {
        model
            .sparse_tables()
            .into_iter()
            .zip(lookups)
            .map(|((name, emb), lookup)| SparseGrad {
                name,
                table: &emb.table,
                lookup,
            })
            .collect()
    }
}

pub struct Optimizer {
    config: OptimizerConfig,
    /// Trainable dense parameters (MLPs, MLET projections), in name order.
    dense: Vec<(String, Tensor)>,
}

impl Optimizer {
    pub fn new(config: &OptimizerConfig, vs: &nn::VarStore) -> Optimizer {
        let mut dense: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        dense.sort_by(|a, b| a.0.cmp(&b.0));
        Optimizer {
            config: config.clone(),
            dense,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.dense {
            p.zero_grad();
        }
    }

    /// The learning rate of a parameter: `embedding_lr` for embedding-side parameters.
    fn lr_of(&self, name: &str) -> f64 {
        let embedding_side = name.starts_with(&format!("{EMBEDDING_PATH}."))
            || name.starts_with(&format!("{LINEAR_PATH}."));
        match self.config.embedding_lr {
            Some(lr) if embedding_side => lr,
            _ => self.config.lr,
        }
    }

    /// Applies one update after `backward()`: every dense parameter, and the rows of each sparse
    /// table that `index` touched.
    pub fn step(&mut self, sparse: &[SparseGrad], index: &LookupIndex) {
        tch::no_grad(|| match self.config.kind {
            OptimizerKind::Sgd => {
                for (name, p) in &self.dense {
                    let g = p.grad();
                    if g.defined() {
                        let mut p = p.shallow_clone();
                        let _ = p.f_sub_(&(g * self.lr_of(name))).expect("shapes agree");
                    }
                }
                for s in sparse {
                    let g = s.lookup.rows.grad();
                    if g.defined() {
                        let lr = self.lr_of(&format!("{}.table", s.name));
                        let mut table = s.table.shallow_clone();
                        let _ = table.index_add_(0, &index.unique, &(g * -lr));
                    }
                }
            }
            OptimizerKind::Adagrad | OptimizerKind::Adam => {
                unimplemented!("{} is not implemented yet", self.config.kind.name())
            }
        })
    }
}
