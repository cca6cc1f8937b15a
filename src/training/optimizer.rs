//! Optimizers written over tensors rather than wrapping `torch::optim`, so that the embedding
//! tables get sparse row updates and all state lives in tensors that can be saved.
//!
//! Three kinds, each mirroring a torch optimizer operation by operation (the same formulas in the
//! same order, so that they agree with torch to rounding; `tests/optimizers.rs` compares them):
//!
//! | kind | dense parameters | embedding tables (rows a batch touched) |
//! |---|---|---|
//! | `sgd` | `torch.optim.SGD` (no momentum) | the same rule on the touched rows |
//! | `adagrad` | `torch.optim.Adagrad` | `torch.optim.Adagrad` on a sparse gradient |
//! | `adam` | `torch.optim.Adam` (L2 weight decay, not AdamW) | `torch.optim.SparseAdam` (lazy) |
//!
//! Departures from torch: no `lr_decay`, `momentum`, `amsgrad` or `maximize`; weight decay on a
//! table is added to the gradient of the touched rows only (torch's sparse Adagrad and
//! SparseAdam reject weight decay), so rows a batch does not look up are never decayed.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

use super::dense_update::{DenseRule, DenseUpdate};
use super::row_update::{RowRule, RowUpdate};
use crate::config::{L2Config, OptimizerConfig, OptimizerKind};
use crate::embedding::{Lookup, PROJECTION};
use crate::huge_pages;
use crate::models::{CtrModel, EMBEDDING_PATH, LINEAR_PATH};

/// A sparse table's gradient after the model's backward pass: the rows `lookup.unique` of
/// `table` received `lookup.rows_grad()`.
pub struct SparseGrad<'a> {
    /// The table's VarStore prefix (`emb`, `linear`), naming its optimizer state.
    pub name: &'a str,
    pub table: &'a Tensor,
    pub lookup: &'a Lookup,
    /// The L2 penalty `l2 · Σ w²` over the rows looked up and over the table's MLET projection,
    /// applied in the update as its gradient `2 · l2 · w` (as weight decay) rather than through
    /// autograd: the same gradient without passes to square the weights and to differentiate
    /// that.
    pub l2: f64,
}

impl<'a> SparseGrad<'a> {
    /// The sparse gradients of every table of `model` after a forward pass gave `lookups`, with
    /// `l2.embedding` on the embedding's rows and `l2.linear` on the linear part's.
    pub fn of_model(
        model: &'a CtrModel,
        lookups: &'a [Lookup],
        l2: &L2Config,
    ) -> Vec<SparseGrad<'a>> {
        model
            .sparse_tables()
            .into_iter()
            .zip(lookups)
            .map(|((name, emb), lookup)| SparseGrad {
                name,
                table: &emb.table,
                lookup,
                l2: if name == LINEAR_PATH {
                    l2.linear
                } else {
                    l2.embedding
                },
            })
            .collect()
    }
}

/// Adagrad's default `eps` (torch.optim.Adagrad).
pub const ADAGRAD_EPS: f64 = 1e-10;
/// Adam's default `eps` (torch.optim.Adam and SparseAdam).
pub const ADAM_EPS: f64 = 1e-8;

/// SGD, Adagrad or Adam over a model's dense parameters and its embedding tables.
///
/// - **SGD** mirrors `torch.optim.SGD` without momentum: `p -= lr · (g + wd · p)`.
/// - **Adagrad** mirrors `torch.optim.Adagrad` (`lr_decay = 0`): `sum += g²`,
///   `p -= lr · g / (sqrt(sum) + eps)`, `sum` starting at `initial_accumulator_value`, weight
///   decay added to the gradient. Tables follow torch's sparse-gradient branch of the same
///   optimizer for the touched rows: `sum[rows] += g²`,
///   `table[rows] -= lr · g / (sqrt(sum[rows]) + eps)`.
/// - **Adam** mirrors `torch.optim.Adam` (bias correction, weight decay added to the gradient,
///   not decoupled): `m = lerp(m, g, 1-β1)`, `v = β2 v + (1-β2) g²`,
///   `p -= lr/(1-β1ᵗ) · m / (sqrt(v)/sqrt(1-β2ᵗ) + eps)`. Tables are updated lazily as
///   `torch.optim.SparseAdam` does: only the touched rows' moments are updated, and their step
///   is `lr · sqrt(1-β2ᵗ)/(1-β1ᵗ) · m / (sqrt(v) + eps)` (eps outside the bias correction, as in
///   SparseAdam), where `t` counts the optimizer steps that updated the table (every step in
///   training, so the global step count), not the steps that touched a given row.
///
/// Weight decay on tables (a departure: torch rejects it with sparse gradients) is added to the
/// gradient of the touched rows only. Learning rates: `embedding_lr` (or `lr`) for the tables
/// and MLET projections, `lr` for everything else.
///
/// State is kept per parameter under `<param>.<slot>` (`sum`, `exp_avg`, `exp_avg_sq`), created
/// with the parameter's shape on its first update; a table's state has the table's shape and row
/// `i` belongs to table row `i`, so untouched rows keep their state.
pub struct Optimizer {
    config: OptimizerConfig,
    device: Device,
    /// Trainable dense parameters (MLPs, MLET projections), in name order.
    dense: Vec<(String, Tensor)>,
    /// Per-parameter state tensors, by `<param>.<slot>`.
    state: BTreeMap<String, Tensor>,
    /// Updates each parameter has received (Adam's bias correction), by parameter name.
    steps: BTreeMap<String, i64>,
    /// Calls of `step`.
    step: i64,
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
            device: vs.device(),
            dense,
            state: BTreeMap::new(),
            steps: BTreeMap::new(),
            step: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.dense {
            p.zero_grad();
        }
    }

    /// How many times `step` has been called (restored by `load_state`).
    pub fn steps_taken(&self) -> i64 {
        self.step
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

    fn eps(&self) -> f64 {
        self.config.eps.unwrap_or(match self.config.kind {
            OptimizerKind::Adam => ADAM_EPS,
            _ => ADAGRAD_EPS,
        })
    }

    /// Applies one update after `backward()`: every dense parameter with a gradient, and the
    /// rows each sparse table's lookup read. In place, under `no_grad`.
    pub fn step(&mut self, sparse: &[SparseGrad]) {
        self.step += 1;
        tch::no_grad(|| {
            let dense: Vec<(String, Tensor)> = self
                .dense
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect();
            for (name, p) in dense {
                let g = p.grad();
                if g.defined() {
                    let l2 = sparse
                        .iter()
                        .find(|s| {
                            let rest = name.strip_prefix(s.name);
                            rest.and_then(|r| r.strip_prefix('.')) == Some(PROJECTION)
                        })
                        .map_or(0.0, |s| s.l2);
                    self.update_dense(&name, &p, &g, 2.0 * l2);
                }
            }
            for s in sparse {
                let g = s.lookup.rows_grad();
                if g.defined() {
                    let rows = &s.lookup.unique;
                    self.update_rows(&format!("{}.table", s.name), s.table, rows, &g, s.l2);
                }
            }
        })
    }

    /// The state tensor `key`, created as `like`'s shape filled with `fill` on first use (in huge
    /// pages where it is large: a table's state is read at the same scattered rows as the table).
    fn state_like(&mut self, key: String, like: &Tensor, fill: f64) -> Tensor {
        self.state
            .entry(key)
            .or_insert_with(|| huge_pages::filled(&like.size(), fill, (like.kind(), like.device())))
            .shallow_clone()
    }

    fn next_step(&mut self, name: &str) -> i64 {
        let step = self.steps.entry(name.to_string()).or_insert(0);
        *step += 1;
        *step
    }

    /// torch.optim.SGD / Adagrad / Adam (single-tensor path) on one dense parameter, with
    /// `decay` (an L2 penalty's) added to the configured weight decay.
    fn update_dense(&mut self, name: &str, p: &Tensor, g: &Tensor, decay: f64) {
        let c = self.config.clone();
        let lr = self.lr_of(name);
        let eps = self.eps();
        let (rule, state) = match c.kind {
            OptimizerKind::Sgd => (DenseRule::Sgd { lr }, vec![]),
            OptimizerKind::Adagrad => {
                let sum = self.state_like(format!("{name}.sum"), p, c.initial_accumulator_value);
                (DenseRule::Adagrad { lr, eps }, vec![sum])
            }
            OptimizerKind::Adam => return self.update_dense_adam(name, p, g, decay),
        };
        DenseUpdate {
            rule,
            weight_decay: c.weight_decay + decay,
            state: &state,
        }
        .apply(p, g);
    }

    /// torch.optim.Adam (single-tensor path) on one dense parameter.
    fn update_dense_adam(&mut self, name: &str, p: &Tensor, g: &Tensor, decay: f64) {
        let c = self.config.clone();
        let lr = self.lr_of(name);
        let eps = self.eps();
        // torch: grad = grad.add(param, alpha=weight_decay)
        let weight_decay = c.weight_decay + decay;
        let g = if weight_decay != 0.0 {
            g + p * weight_decay
        } else {
            g.shallow_clone()
        };
        let mut p = p.shallow_clone();
        let [b1, b2] = c.betas;
        let step = self.next_step(name) as f64;
        let mut m = self.state_like(format!("{name}.exp_avg"), &p, 0.0);
        let mut v = self.state_like(format!("{name}.exp_avg_sq"), &p, 0.0);
        // exp_avg.lerp_(grad, 1 - beta1)
        let _ = m.lerp_(&g, 1.0 - b1);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        let _ = v.g_mul_scalar_(b2);
        let _ = v.addcmul_(&(&g * (1.0 - b2)), &g);
        // Python's float ** float is C's pow, as f64::powf
        let bc1 = 1.0 - b1.powf(step);
        let bc2 = 1.0 - b2.powf(step);
        let step_size = lr / bc1;
        let denom = v.sqrt() / bc2.powf(0.5) + eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        let _ = p
            .f_add_(&((&m * -step_size) / denom))
            .expect("shapes agree");
    }

    /// Updates rows `rows` (distinct) of `table` with their summed gradient `g` plus that of
    /// the penalty `l2 · Σ w²`; table and state rows outside `rows` are not touched.
    fn update_rows(&mut self, name: &str, table: &Tensor, rows: &Tensor, g: &Tensor, l2: f64) {
        let c = self.config.clone();
        let lr = self.lr_of(name);
        let eps = self.eps();
        let (rule, state) = match c.kind {
            OptimizerKind::Sgd => (RowRule::Sgd { lr }, vec![]),
            OptimizerKind::Adagrad => {
                let sum =
                    self.state_like(format!("{name}.sum"), table, c.initial_accumulator_value);
                (RowRule::Adagrad { lr, eps }, vec![sum])
            }
            OptimizerKind::Adam => {
                let [beta1, beta2] = c.betas;
                let step = self.next_step(name) as f64;
                let m = self.state_like(format!("{name}.exp_avg"), table, 0.0);
                let v = self.state_like(format!("{name}.exp_avg_sq"), table, 0.0);
                let (bc1, bc2) = (1.0 - beta1.powf(step), 1.0 - beta2.powf(step));
                let rule = RowRule::Adam {
                    beta1,
                    beta2,
                    eps,
                    step_size: lr * bc2.sqrt() / bc1,
                };
                (rule, vec![m, v])
            }
        };
        RowUpdate {
            rule,
            weight_decay: c.weight_decay + 2.0 * l2,
            state: &state,
        }
        .apply(table, rows, g);
    }

    /// Everything needed to continue training exactly: the state tensors (`state.<param>.<slot>`),
    /// each parameter's update count (`steps.<param>`, int64 `[1]`) and the number of `step`
    /// calls (`step`, int64 `[1]`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            vec![("step".into(), Tensor::from_slice(&[self.step]))];
        out.extend(
            self.state
                .iter()
                .map(|(k, v)| (format!("state.{k}"), v.shallow_clone())),
        );
        out.extend(
            self.steps
                .iter()
                .map(|(k, &s)| (format!("steps.{k}"), Tensor::from_slice(&[s]))),
        );
        out
    }

    /// Replaces the optimizer's state with what `state_tensors` returned (moved to the
    /// parameters' device). Refuses state of another optimizer kind and state whose shape does
    /// not match its dense parameter.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let slots: &[&str] = match self.config.kind {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Adagrad => &["sum"],
            OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
        };
        let shape_of = |param: &str| {
            self.dense
                .iter()
                .find(|(n, _)| n == param)
                .map(|(_, p)| p.size())
        };
        let mut state = BTreeMap::new();
        let mut steps = BTreeMap::new();
        let mut step = None;
        for (name, t) in tensors {
            let count = || -> Result<i64> {
                if t.kind() != Kind::Int64 || t.numel() != 1 {
                    bail!("optimizer state {name}: expected one int64");
                }
                Ok(t.int64_value(&[0]))
            };
            if name == "step" {
                step = Some(count()?);
            } else if let Some(param) = name.strip_prefix("steps.") {
                steps.insert(param.to_string(), count()?);
            } else if let Some(key) = name.strip_prefix("state.") {
                let (param, slot) = key
                    .rsplit_once('.')
                    .with_context(|| format!("optimizer state {name}: no slot name"))?;
                if !slots.contains(&slot) {
                    bail!(
                        "optimizer state {name}: not state of {} (saved by another optimizer?)",
                        self.config.kind.name()
                    );
                }
                if let Some(shape) = shape_of(param) {
                    if shape != t.size() {
                        bail!(
                            "optimizer state {name}: shape {:?}, the parameter's is {shape:?}",
                            t.size()
                        );
                    }
                }
                state.insert(key.to_string(), t.to_device(self.device));
            } else {
                bail!("unexpected optimizer state tensor {name}");
            }
        }
        self.step = step.context("optimizer state: no step count")?;
        self.state = state;
        self.steps = steps;
        Ok(())
    }

    /// Writes `state_tensors` to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .state_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.contiguous()))
            .collect();
        crate::tensor_file::write_safetensors(&tensors, path)
    }

    /// Restores the state `save` wrote.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = crate::tensor_file::read(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        self.load_state(tensors)
            .with_context(|| format!("in {}", path.display()))
    }
}
