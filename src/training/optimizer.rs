//! Optimizers written over tensors rather than wrapping `torch::optim`, so that the embedding
//! tables get sparse row updates and all state lives in tensors that can be saved.
use std::collections::BTreeMap;
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

/// SGD, Adagrad (torch.optim.Adagrad; for tables its sparse-gradient path) or Adam
/// (torch.optim.Adam for dense parameters; torch.optim.SparseAdam's lazy update for tables).
pub struct Optimizer {
    config: OptimizerConfig,
    /// Trainable dense parameters (MLPs, MLET projections), in name order.
    dense: Vec<(String, Tensor)>,
    /// Per-parameter state (`<name>.sum`, `<name>.exp_avg`, `<name>.exp_avg_sq`), created lazily
    /// with the parameter's shape; for tables, row `i` belongs to table row `i`.
    state: BTreeMap<String, Tensor>,
    /// Steps each parameter has been updated (Adam's bias correction).
    steps: BTreeMap<String, i64>,
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
            state: BTreeMap::new(),
            steps: BTreeMap::new(),
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
        tch::no_grad(|| {
            let dense: Vec<(String, Tensor)> = self
                .dense
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect();
            for (name, p) in dense {
                let g = p.grad();
                if g.defined() {
                    self.update_dense(&name, &p, &g);
                }
            }
            for s in sparse {
                let g = s.lookup.rows.grad();
                if g.defined() {
                    self.update_rows(&format!("{}.table", s.name), s.table, &index.unique, &g);
                }
            }
        })
    }

    fn state_like(&mut self, key: String, like: &Tensor, fill: f64) -> Tensor {
        self.state
            .entry(key)
            .or_insert_with(|| like.zeros_like().fill_(fill))
            .shallow_clone()
    }

    fn next_step(&mut self, name: &str) -> i64 {
        let step = self.steps.entry(name.to_string()).or_insert(0);
        *step += 1;
        *step
    }

    fn update_dense(&mut self, name: &str, p: &Tensor, g: &Tensor) {
        let c = self.config.clone();
        let lr = self.lr_of(name);
        let g = if c.weight_decay > 0.0 {
            g + p * c.weight_decay
        } else {
            g.shallow_clone()
        };
        let mut p = p.shallow_clone();
        match c.kind {
            OptimizerKind::Sgd => {
                let _ = p.f_sub_(&(g * lr)).expect("shapes agree");
            }
            OptimizerKind::Adagrad => {
                let mut sum =
                    self.state_like(format!("{name}.sum"), &p, c.initial_accumulator_value);
                let _ = sum.addcmul_(&g, &g);
                let denom = sum.sqrt() + c.eps.unwrap_or(1e-10);
                let _ = p.f_sub_(&(g / denom * lr)).expect("shapes agree");
            }
            OptimizerKind::Adam => {
                let [b1, b2] = c.betas;
                let step = self.next_step(name);
                let mut m = self.state_like(format!("{name}.exp_avg"), &p, 0.0);
                let mut v = self.state_like(format!("{name}.exp_avg_sq"), &p, 0.0);
                let _ = m.lerp_(&g, 1.0 - b1);
                let _ = v.g_mul_scalar_(b2).addcmul_(&(&g * (1.0 - b2)), &g);
                let bc1 = 1.0 - b1.powi(step as i32);
                let bc2 = 1.0 - b2.powi(step as i32);
                let denom = v.sqrt() / bc2.sqrt() + c.eps.unwrap_or(1e-8);
                let _ = p.f_sub_(&(&m / denom * (lr / bc1))).expect("shapes agree");
            }
        }
    }

    /// Updates rows `rows` of `table` with their (already summed) gradient `g`; state rows
    /// outside `rows` are not touched.
    fn update_rows(&mut self, name: &str, table: &Tensor, rows: &Tensor, g: &Tensor) {
        let c = self.config.clone();
        let lr = self.lr_of(name);
        let g = if c.weight_decay > 0.0 {
            // only on the touched rows: decay stays sparse
            g + table.index_select(0, rows) * c.weight_decay
        } else {
            g.shallow_clone()
        };
        let update = match c.kind {
            OptimizerKind::Sgd => g * -lr,
            OptimizerKind::Adagrad => {
                let mut sum =
                    self.state_like(format!("{name}.sum"), table, c.initial_accumulator_value);
                let _ = sum.index_add_(0, rows, &g.square());
                let denom = sum.index_select(0, rows).sqrt() + c.eps.unwrap_or(1e-10);
                g / denom * -lr
            }
            OptimizerKind::Adam => {
                let [b1, b2] = c.betas;
                let step = self.next_step(name);
                let mut m = self.state_like(format!("{name}.exp_avg"), table, 0.0);
                let mut v = self.state_like(format!("{name}.exp_avg_sq"), table, 0.0);
                let m_rows = m.index_select(0, rows).lerp(&g, 1.0 - b1);
                let v_rows = v.index_select(0, rows) * b2 + g.square() * (1.0 - b2);
                let _ = m.index_copy_(0, rows, &m_rows);
                let _ = v.index_copy_(0, rows, &v_rows);
                let bc1 = 1.0 - b1.powi(step as i32);
                let bc2 = 1.0 - b2.powi(step as i32);
                let step_size = lr * bc2.sqrt() / bc1;
                m_rows / (v_rows.sqrt() + c.eps.unwrap_or(1e-8)) * -step_size
            }
        };
        let mut table = table.shallow_clone();
        let _ = table.index_add_(0, rows, &update);
    }

    /// Everything needed to continue training: state tensors and step counts (as 0-d tensors),
    /// under stable names.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .state
            .iter()
            .map(|(k, v)| (format!("state.{k}"), v.shallow_clone()))
            .collect();
        out.extend(
            self.steps
                .iter()
                .map(|(k, &s)| (format!("steps.{k}"), Tensor::from(s))),
        );
        out
    }

    /// Restores what `state_tensors` returned.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) {
        for (name, t) in tensors {
            if let Some(k) = name.strip_prefix("state.") {
                self.state.insert(k.to_string(), t);
            } else if let Some(k) = name.strip_prefix("steps.") {
                self.steps.insert(k.to_string(), t.int64_value(&[]));
            }
        }
    }
}
