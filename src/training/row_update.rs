//! The update of the embedding-table rows a batch touched: SGD, sparse Adagrad or SparseAdam on
//! `rows` (distinct) of a table and its state, given their summed gradient.
//!
//! Two implementations of the same arithmetic. `apply_tensors` is a handful of libtorch ops
//! (gather, element-wise, scatter), each a pass over the `[U, width]` rows with its own
//! allocation, and runs on any device. `apply_fused` is one pass in plain Rust over contiguous
//! f32 CPU tensors: for MLET's k-wide rows the separate passes cost as much as the projection
//! itself. Both compute each element with the same f32 operations in the same order (libtorch
//! casts a Python-style scalar to the tensor's f32 before using it). They agree bitwise except
//! for the square root: libtorch's vectorised CPU `sqrt` is off by one ulp for about a sixth of
//! inputs (measured against numpy's correctly rounded one), Rust's `f32::sqrt` is correctly
//! rounded; a test bounds the difference.
use tch::{Device, Kind, Tensor};

use crate::parallel::{parts_for, run_parts};
use crate::simd::Kernel;

/// One update rule with its scalars for this step.
#[derive(Clone, Copy, Debug)]
pub enum RowRule {
    /// `p -= lr · g`.
    Sgd { lr: f64 },
    /// `sum += g²; p -= lr · g / (sqrt(sum) + eps)` (torch.optim.Adagrad's sparse branch).
    Adagrad { lr: f64, eps: f64 },
    /// torch.optim.SparseAdam: lazy moments of the touched rows;
    /// `step_size = lr · sqrt(1-β2ᵗ)/(1-β1ᵗ)`.
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        step_size: f64,
    },
}

/// A step's row update: the rule, L2 weight decay (added to the rows' gradient) and the state
/// tensors the rule keeps (none, `sum`, or `exp_avg` and `exp_avg_sq`), shaped as the table.
pub struct RowUpdate<'a> {
    pub rule: RowRule,
    pub weight_decay: f64,
    pub state: &'a [Tensor],
}

impl RowUpdate<'_> {
    /// Updates `rows` (distinct) of `table` with their summed gradient `g`, fused where the
    /// tensors allow it.
    pub fn apply(&self, table: &Tensor, rows: &Tensor, g: &Tensor) {
        if fusable(table, rows, g, self.state) {
            self.apply_fused(table, rows, g)
        } else {
            self.apply_tensors(table, rows, g)
        }
    }

    /// The update as libtorch ops (any device).
    pub fn apply_tensors(&self, table: &Tensor, rows: &Tensor, g: &Tensor) {
        let g = if self.weight_decay != 0.0 {
            // a departure from torch (which refuses weight decay with sparse gradients): the
            // decay of the touched rows only, so that the update stays sparse
            g + table.index_select(0, rows) * self.weight_decay
        } else {
            g.shallow_clone()
        };
        let update = match self.rule {
            RowRule::Sgd { lr } => g * -lr,
            RowRule::Adagrad { lr, eps } => {
                // torch.optim.Adagrad's sparse branch:
                //   state_sum.add_(sparse(g²)); std = state_sum.sparse_mask(grad).sqrt_().add_(eps)
                //   param.add_(sparse(g / std), alpha=-lr)
                let mut sum = self.state[0].shallow_clone();
                let _ = sum.index_add_(0, rows, &g.square());
                let std = sum.index_select(0, rows).sqrt() + eps;
                (g / std) * -lr
            }
            RowRule::Adam {
                beta1,
                beta2,
                eps,
                step_size,
            } => {
                // torch.optim._functional.sparse_adam, step by step
                let (mut m, mut v) = (self.state[0].shallow_clone(), self.state[1].shallow_clone());
                let old_m = m.index_select(0, rows);
                let m_update = (&g - &old_m) * (1.0 - beta1);
                let _ = m.index_add_(0, rows, &m_update);
                let old_v = v.index_select(0, rows);
                let v_update = (g.square() - &old_v) * (1.0 - beta2);
                let _ = v.index_add_(0, rows, &v_update);
                let numer = m_update + old_m;
                let denom = (v_update + old_v).sqrt() + eps;
                (numer / denom) * -step_size
            }
        };
        let mut table = table.shallow_clone();
        let _ = table.index_add_(0, rows, &update);
    }

    /// The update in one pass over contiguous f32 CPU tensors (see `fusable`).
    pub fn apply_fused(&self, table: &Tensor, rows: &Tensor, g: &Tensor) {
        assert!(
            fusable(table, rows, g, self.state),
            "apply_fused on tensors it cannot read"
        );
        let width = table.size()[1] as usize;
        // SAFETY: `fusable` checked that every tensor is a contiguous CPU tensor of the kind and
        // shape read here; the table and the state tensors are distinct allocations (state is
        // made by `Optimizer::state_like`), and `rows` are distinct and in range, so the mutable row
        // slices below never overlap and no other reference to them is alive meanwhile.
        unsafe {
            let rows = std::slice::from_raw_parts(rows.data_ptr() as *const i64, rows.numel());
            let grad = std::slice::from_raw_parts(g.data_ptr() as *const f32, g.numel());
            // the table's data, then each state tensor's (data_ptr is a call into libtorch:
            // once per tensor, not per row)
            let bases: Vec<*mut f32> = std::iter::once(table)
                .chain(self.state)
                .map(|t| t.data_ptr() as *mut f32)
                .collect();
            // the rows in one run per thread: distinct rows, so the runs write disjoint memory
            let parts = parts_for(rows.len() * width * (1 + self.state.len()));
            let per_part = rows.len().div_ceil(parts).max(1);
            let runs = rows
                .chunks(per_part)
                .zip(grad.chunks(per_part * width))
                .map(|(rows, grad)| FusedRows {
                    rule: self.rule,
                    wd: self.weight_decay as f32,
                    rows,
                    grad,
                    bases: &bases,
                    width,
                })
                .collect();
            run_parts(runs);
        }
    }
}

/// `apply_fused`'s pass over the rows: `bases` are the table's data, then each state tensor's.
/// Made only by `apply_fused`, whose checks are what `run` relies on: each base points to a
/// distinct contiguous `[N, width]` f32 allocation, `rows` are distinct and below N, and `grad`
/// holds `rows.len()` rows of `width`.
struct FusedRows<'a> {
    rule: RowRule,
    wd: f32,
    rows: &'a [i64],
    grad: &'a [f32],
    bases: &'a [*mut f32],
    width: usize,
}

// SAFETY: the pointers are only written through at the rows of `rows`; `apply_fused` gives each
// thread a disjoint run of distinct rows, so no two threads touch the same memory
unsafe impl Send for FusedRows<'_> {}

impl Kernel for FusedRows<'_> {
    #[inline(always)]
    fn run(self) {
        let FusedRows {
            rule,
            wd,
            rows,
            grad,
            bases,
            width,
        } = self;
        // SAFETY: see the struct: every row slice is inside its allocation, and distinct rows
        // of distinct allocations never overlap
        unsafe { update_rows(rule, wd, rows, grad, bases, width) }
    }
}

/// # Safety
/// As `FusedRows`'s contract.
#[inline(always)]
unsafe fn update_rows(
    rule: RowRule,
    wd: f32,
    rows: &[i64],
    grad: &[f32],
    bases: &[*mut f32],
    width: usize,
) {
    let row_of = |tensor: usize, r: i64| {
        std::slice::from_raw_parts_mut(bases[tensor].add(r as usize * width), width)
    };
    for (i, &r) in rows.iter().enumerate() {
        // the rows are scattered over a large table: each is a cache miss, which the
        // arithmetic of one row is too long to overlap with the next row's on its own
        if let Some(&ahead) = rows.get(i + PREFETCH_ROWS) {
            for t in 0..bases.len() {
                prefetch(row_of(t, ahead));
            }
        }
        let p = row_of(0, r);
        let g = &grad[i * width..(i + 1) * width];
        match rule {
            RowRule::Sgd { lr } => {
                let neg_lr = -lr as f32;
                for (p, &g) in p.iter_mut().zip(g) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *p += g * neg_lr;
                }
            }
            RowRule::Adagrad { lr, eps } => {
                let (neg_lr, eps) = (-lr as f32, eps as f32);
                let sum = row_of(1, r);
                for ((p, s), &g) in p.iter_mut().zip(sum.iter_mut()).zip(g) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *s += g * g;
                    *p += (g / (s.sqrt() + eps)) * neg_lr;
                }
            }
            RowRule::Adam {
                beta1,
                beta2,
                eps,
                step_size,
            } => {
                let (one_b1, one_b2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
                let (eps, neg_step) = (eps as f32, -step_size as f32);
                let (m, v) = (row_of(1, r), row_of(2, r));
                for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    let (old_m, old_v) = (*m, *v);
                    let m_update = (g - old_m) * one_b1;
                    let v_update = (g * g - old_v) * one_b2;
                    *m = old_m + m_update;
                    *v = old_v + v_update;
                    let denom = (v_update + old_v).sqrt() + eps;
                    *p += ((m_update + old_m) / denom) * neg_step;
                }
            }
        }
    }
}

/// How far ahead of the row being updated `apply_fused` asks for rows to be loaded.
const PREFETCH_ROWS: usize = 8;

/// Asks for `row`'s cache lines to be loaded (a hint; nothing on other architectures).
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: prefetching is a hint that never faults; the address is inside the slice
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                line.as_ptr() as *const i8,
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
}

/// Whether `apply_fused` can read the tensors: all on the CPU and contiguous, the table and its
/// state `[N, width]` f32 with the same shape, `rows` int64 within the table, `g` `[U, width]`.
fn fusable(table: &Tensor, rows: &Tensor, g: &Tensor, state: &[Tensor]) -> bool {
    let cpu_f32 =
        |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    let shape = table.size();
    let laid_out = shape.len() == 2
        && cpu_f32(table)
        && cpu_f32(g)
        && g.size() == [rows.numel() as i64, shape[1]]
        && rows.device() == Device::Cpu
        && rows.kind() == Kind::Int64
        && rows.is_contiguous()
        && rows.dim() == 1
        && state.iter().all(|s| cpu_f32(s) && s.size() == shape);
    // distinctness is the caller's contract (`LookupIndex::unique`); the range is checked here,
    // on the host: two libtorch reductions would cost more than this loop over U ids
    laid_out
        && (rows.numel() == 0 || {
            // SAFETY: `rows` was just checked to be a contiguous int64 CPU tensor of numel() values
            let ids =
                unsafe { std::slice::from_raw_parts(rows.data_ptr() as *const i64, rows.numel()) };
            ids.iter().all(|&r| (0..shape[0]).contains(&r))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: RowRule, weight_decay: f64, fused: bool) -> Vec<Vec<f32>> {
        let mut test_values = crate::test_values::TestValues::new(0x9E37_79B9_7F4A_7C15);
        let mut values = |shape: [i64; 2], offset: f32| test_values.tensor(&shape, offset);
        let table = values([40, 24], 1.0);
        let slots = match rule {
            RowRule::Sgd { .. } => 0,
            RowRule::Adagrad { .. } => 1,
            RowRule::Adam { .. } => 2,
        };
        let state: Vec<Tensor> = (0..slots).map(|_| values([40, 24], 0.0)).collect();
        let rows = Tensor::from_slice(&[3i64, 7, 8, 21, 39, 0]);
        let update = RowUpdate {
            rule,
            weight_decay,
            state: &state,
        };
        let before = table.copy();
        for _ in 0..3 {
            let g = values([6, 24], 1.0);
            if fused {
                update.apply_fused(&table, &rows, &g);
            } else {
                update.apply_tensors(&table, &rows, &g);
            }
        }
        // rows never looked up (1, 2, ...) are exactly as they were
        let untouched = Tensor::from_slice(&[1i64, 2, 20, 38]);
        assert!(table
            .index_select(0, &untouched)
            .equal(&before.index_select(0, &untouched)));
        std::iter::once(&table)
            .chain(&state)
            .map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
            .collect()
    }

    /// The fused pass is the tensor ops' arithmetic (up to libtorch's square root), for every
    /// rule, with and without weight decay, over several steps (state carried), and leaves
    /// untouched rows alone.
    #[test]
    fn fused_update_is_the_tensor_ops_arithmetic() {
        let rules = [
            RowRule::Sgd { lr: 0.2 },
            RowRule::Adagrad {
                lr: 0.02,
                eps: 1e-10,
            },
            RowRule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                step_size: 1e-3 * (1.0f64 - 0.999).sqrt() / (1.0 - 0.9),
            },
        ];
        for rule in rules {
            for wd in [0.0, 1e-2] {
                let (fused, reference) = (run(rule, wd, true), run(rule, wd, false));
                // SGD has no square root: bitwise; otherwise a few ulps after three steps
                let allowed_ulps = if matches!(rule, RowRule::Sgd { .. }) {
                    0
                } else {
                    4
                };
                for (f, r) in fused.iter().zip(&reference) {
                    let worst = f
                        .iter()
                        .zip(r)
                        .map(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).abs())
                        .max()
                        .unwrap();
                    assert!(
                        worst <= allowed_ulps,
                        "{rule:?}, weight decay {wd}: {worst} ulps apart"
                    );
                }
            }
        }
    }

    /// The rows shared out over threads in any number of runs: the same bits as one run.
    #[test]
    fn fused_update_cut_into_parts_gives_the_same_bits() {
        use crate::parallel::tests::with_parts;
        let rule = RowRule::Adagrad {
            lr: 0.02,
            eps: 1e-10,
        };
        let one = with_parts(1, || run(rule, 1e-2, true));
        for parts in [2, 4, 6, 9] {
            assert_eq!(
                one,
                with_parts(parts, || run(rule, 1e-2, true)),
                "{parts} parts"
            );
        }
    }

    #[test]
    fn only_cpu_f32_contiguous_tensors_are_fused() {
        let opts = (Kind::Float, Device::Cpu);
        let table = Tensor::zeros([10, 4], opts);
        let rows = Tensor::from_slice(&[1i64, 2]);
        let g = Tensor::zeros([2, 4], opts);
        assert!(fusable(&table, &rows, &g, &[]));
        assert!(!fusable(&table.to_kind(Kind::Double), &rows, &g, &[]));
        assert!(!fusable(&table.tr().contiguous().tr(), &rows, &g, &[]));
        assert!(!fusable(&table, &Tensor::from_slice(&[1i64, 10]), &g, &[]));
        assert!(!fusable(&table, &rows, &g, &[Tensor::zeros([10, 3], opts)]));
    }
}
