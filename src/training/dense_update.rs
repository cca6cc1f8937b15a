//! The update of one dense parameter (an MLP's weights, an MLET projection): torch.optim.SGD or
//! Adagrad, operation by operation.
//!
//! Two implementations of the same arithmetic, as for the table rows (`row_update`).
//! `apply_tensors` is torch's sequence of libtorch ops and runs on any device and for Adam.
//! `apply_fused` is one pass over contiguous f32 CPU memory: a model has tens of small
//! parameters, and Adagrad's five libtorch calls per parameter (each with its dispatch and an
//! allocation) cost more than the arithmetic, about a tenth of a DeepFM step. Adam stays with
//! the libtorch ops: its `lerp_` is computed with fused multiply-adds on the CPU, which the
//! loop would not reproduce bit for bit.
use tch::{Device, Kind, Tensor};

use crate::parallel::{parts_for, run_parts};
use crate::simd::Kernel;

/// SGD's and Adagrad's rules for a dense parameter, with this step's scalars.
#[derive(Clone, Copy, Debug)]
pub enum DenseRule {
    /// `p -= g · lr`.
    Sgd { lr: f64 },
    /// `sum += g·g; p += (g · -lr) / (sqrt(sum) + eps)` (torch.optim.Adagrad, `lr_decay` 0).
    Adagrad { lr: f64, eps: f64 },
}

/// A step's update of one dense parameter: the rule, weight decay (added to the gradient as
/// `g + p · wd`, as torch) and Adagrad's `sum`, shaped as the parameter.
pub struct DenseUpdate<'a> {
    pub rule: DenseRule,
    pub weight_decay: f64,
    pub state: &'a [Tensor],
}

impl DenseUpdate<'_> {
    /// Updates `p` in place with its gradient `g`, fused where the tensors allow it.
    pub fn apply(&self, p: &Tensor, g: &Tensor) {
        if fusable(p, g, self.state) {
            self.apply_fused(p, g)
        } else {
            self.apply_tensors(p, g)
        }
    }

    /// torch's operations (any device).
    pub fn apply_tensors(&self, p: &Tensor, g: &Tensor) {
        // torch: grad = grad.add(param, alpha=weight_decay)
        let g = if self.weight_decay != 0.0 {
            g + p * self.weight_decay
        } else {
            g.shallow_clone()
        };
        let mut p = p.shallow_clone();
        match self.rule {
            DenseRule::Sgd { lr } => {
                let _ = p.f_sub_(&(g * lr)).expect("shapes agree");
            }
            DenseRule::Adagrad { lr, eps } => {
                // state_sum.addcmul_(grad, grad); std = state_sum.sqrt().add_(eps)
                let mut sum = self.state[0].shallow_clone();
                let _ = sum.addcmul_(&g, &g);
                let std = sum.sqrt() + eps;
                // param.addcdiv_(grad, std, value=-lr) = param + (-lr · grad) / std
                let _ = p.f_add_(&((&g * -lr) / std)).expect("shapes agree");
            }
        }
    }

    /// The update in one pass over contiguous f32 CPU tensors (see `fusable`).
    pub fn apply_fused(&self, p: &Tensor, g: &Tensor) {
        assert!(
            fusable(p, g, self.state),
            "apply_fused on tensors it cannot read"
        );
        let n = p.numel();
        if n == 0 {
            return;
        }
        // SAFETY: `fusable` checked that the parameter, its gradient and its state are
        // contiguous f32 CPU tensors of n values; a parameter, its gradient and its state are
        // distinct allocations, so the mutable slices do not overlap
        let (p, g, sum) = unsafe {
            (
                std::slice::from_raw_parts_mut(p.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts(g.data_ptr() as *const f32, n),
                self.state
                    .first()
                    .map(|s| std::slice::from_raw_parts_mut(s.data_ptr() as *mut f32, n)),
            )
        };
        let per_part = n.div_ceil(parts_for(n * (1 + self.state.len())));
        let wd = self.weight_decay as f32;
        let parts: Vec<FusedDense> = match (self.rule, sum) {
            (DenseRule::Adagrad { .. }, Some(sum)) => p
                .chunks_mut(per_part)
                .zip(g.chunks(per_part))
                .zip(sum.chunks_mut(per_part))
                .map(|((p, g), sum)| FusedDense {
                    rule: self.rule,
                    wd,
                    p,
                    g,
                    sum,
                })
                .collect(),
            (DenseRule::Sgd { .. }, _) => p
                .chunks_mut(per_part)
                .zip(g.chunks(per_part))
                .map(|(p, g)| FusedDense {
                    rule: self.rule,
                    wd,
                    p,
                    g,
                    sum: &mut [],
                })
                .collect(),
            (DenseRule::Adagrad { .. }, None) => panic!("Adagrad without its sum"),
        };
        run_parts(parts);
    }
}

/// `apply_fused`'s pass over a run of the parameter's values.
struct FusedDense<'a> {
    rule: DenseRule,
    wd: f32,
    p: &'a mut [f32],
    g: &'a [f32],
    /// Adagrad's sum for the same values (empty for SGD).
    sum: &'a mut [f32],
}

impl Kernel for FusedDense<'_> {
    #[inline(always)]
    fn run(self) {
        let FusedDense {
            rule,
            wd,
            p,
            g,
            sum,
        } = self;
        // libtorch casts a Python-style scalar to the tensor's f32 before using it
        match rule {
            DenseRule::Sgd { lr } => {
                let lr = lr as f32;
                for (p, &g) in p.iter_mut().zip(g) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *p -= g * lr;
                }
            }
            DenseRule::Adagrad { lr, eps } => {
                let (neg_lr, eps) = (-lr as f32, eps as f32);
                for ((p, s), &g) in p.iter_mut().zip(sum.iter_mut()).zip(g) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *s += g * g;
                    *p += (g * neg_lr) / (s.sqrt() + eps);
                }
            }
        }
    }
}

/// Whether `apply_fused` can read the tensors: all contiguous f32 on the CPU, of one shape.
fn fusable(p: &Tensor, g: &Tensor, state: &[Tensor]) -> bool {
    let cpu_f32 =
        |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    let shape = p.size();
    cpu_f32(p)
        && cpu_f32(g)
        && g.size() == shape
        && state.iter().all(|s| cpu_f32(s) && s.size() == shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps of `rule` on a `[37, 29]` parameter (more values than one part takes when
    /// cut), fused or as torch's ops: the parameter and the state after them.
    fn run(rule: DenseRule, weight_decay: f64, fused: bool) -> Vec<Vec<f32>> {
        let mut test_values = crate::test_values::TestValues::new(0x9E37_79B9_7F4A_7C15);
        let mut values = |offset: f32| test_values.tensor(&[37, 29], offset);
        let p = values(1.0);
        let state: Vec<Tensor> = match rule {
            DenseRule::Sgd { .. } => vec![],
            DenseRule::Adagrad { .. } => vec![values(0.0)],
        };
        let update = DenseUpdate {
            rule,
            weight_decay,
            state: &state,
        };
        for _ in 0..3 {
            let g = values(1.0);
            if fused {
                update.apply_fused(&p, &g);
            } else {
                update.apply_tensors(&p, &g);
            }
        }
        std::iter::once(&p)
            .chain(&state)
            .map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
            .collect()
    }

    /// The fused pass is torch's arithmetic: bitwise for SGD, within a few ulps for Adagrad
    /// (libtorch's vectorised square root is one ulp off for some inputs, and its `addcmul_`
    /// may fuse the multiply-add), with and without
    /// weight decay, cut into any number of parts.
    #[test]
    fn fused_update_is_torchs_arithmetic() {
        use crate::parallel::tests::with_parts;
        let rules = [
            DenseRule::Sgd { lr: 0.2 },
            DenseRule::Adagrad {
                lr: 0.02,
                eps: 1e-10,
            },
        ];
        for rule in rules {
            for wd in [0.0, 1e-2] {
                let reference = run(rule, wd, false);
                let allowed_ulps = if matches!(rule, DenseRule::Sgd { .. }) {
                    0
                } else {
                    4
                };
                for parts in [1, 2, 7] {
                    let fused = with_parts(parts, || run(rule, wd, true));
                    for (f, r) in fused.iter().zip(&reference) {
                        // in ulps of the values' scale (about 1): a value near zero that
                        // differs in its last bits is as close as one near 1 is
                        let worst = f
                            .iter()
                            .zip(r)
                            .map(|(a, b)| (a - b).abs() / f32::EPSILON)
                            .fold(0.0, f32::max);
                        assert!(
                            worst <= allowed_ulps as f32,
                            "{rule:?}, weight decay {wd}, {parts} parts: {worst} ulps of 1 apart"
                        );
                    }
                    if parts > 1 {
                        assert_eq!(fused, with_parts(1, || run(rule, wd, true)));
                    }
                }
            }
        }
    }

    #[test]
    fn only_cpu_f32_contiguous_tensors_of_one_shape_are_fused() {
        let opts = (Kind::Float, Device::Cpu);
        let p = Tensor::zeros([10, 4], opts);
        assert!(fusable(&p, &p.zeros_like(), &[p.zeros_like()]));
        assert!(!fusable(&p.to_kind(Kind::Double), &p, &[]));
        assert!(!fusable(&p, &p.tr().contiguous().tr(), &[]));
        assert!(!fusable(&p, &Tensor::zeros([4, 10], opts), &[]));
        assert!(!fusable(&p, &p, &[Tensor::zeros([10, 3], opts)]));
    }
}
