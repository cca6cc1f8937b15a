//! Optimizers written over tensors rather than wrapping `torch::optim`, so that the embedding
//! table gets sparse row updates and all state lives in tensors that can be saved.
use tch::{nn, Tensor};

use crate::config::OptimizerConfig;
use crate::embedding::{Lookup, LookupIndex};

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

    /// Applies one update after `backward()`: every dense parameter, and the table rows that
    /// `index` touched (their gradient is the gradient of `lookup.rows`).
    pub fn step(&mut self, table: &Tensor, lookup: &Lookup, index: &LookupIndex) {
        tch::no_grad(|| match self.config {
            OptimizerConfig::Sgd { lr } => {
                for (_, p) in &self.dense {
                    let g = p.grad();
                    if g.defined() {
                        let mut p = p.shallow_clone();
                        let _ = p
                            .f_sub_(&(g * lr))
                            .expect("shapes of a parameter and its gradient agree");
                    }
                }
                let g = lookup.rows.grad();
                if g.defined() {
                    let mut table = table.shallow_clone();
                    let _ = table.index_add_(0, &index.unique, &(g * -lr));
                }
            }
        })
    }
}
