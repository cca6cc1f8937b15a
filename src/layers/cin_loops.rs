//! The CIN's element-wise work on contiguous f32 CPU memory: the first layer's field-pair
//! products and their gradient, and the gradients of a later layer's outer product. In
//! libtorch these are index_select/index_add passes over columns and batched matrix-vector
//! products of shape [H, F] × [F], which run well below memory speed; here each row n of the
//! batch is one pass over its values. Rows are shared out over libtorch's threads, each output
//! summed in a fixed order without fused multiply-adds: the same bits for any thread count and
//! CPU. The callers keep libtorch versions for other devices, kinds and for autograd.
use tch::Tensor;

use crate::cpu_f32::{dot, fusable, slice, slice_mut, take, take_mut};
use crate::parallel::{row_parts, run_parts};
use crate::simd::Kernel;

/// `[N, F]` → `[N, F(F+1)/2]`: `x[n, h] · x[n, m]` for `h ≤ m`, pairs in the order `(0, 0),
/// (0, 1), …, (F-1, F-1)`. `None` where the loops cannot read `x`.
pub(super) fn pair_products(x: &Tensor) -> Option<Tensor> {
    if !fusable(&[x]) {
        return None;
    }
    let (n, f) = (x.size()[0] as usize, x.size()[1] as usize);
    let p = f * (f + 1) / 2;
    let out = x.new_empty([n as i64, p as i64], (x.kind(), x.device()));
    // SAFETY: `x` is a contiguous f32 CPU tensor (checked), `out` a fresh one
    let (mut xs, mut outs) = unsafe { (slice(x), slice_mut(&out)) };
    let parts = row_parts(n, n * p)
        .into_iter()
        .map(|rows| Pairs {
            x: take(&mut xs, rows * f),
            out: take_mut(&mut outs, rows * p),
            fields: f,
        })
        .collect();
    run_parts(parts);
    Some(out)
}

/// The gradient of `x` `[N, F]` from that of its [`pair_products`] `[N, P]`. `None` where the
/// loops cannot read them.
pub(super) fn pair_products_backward(x: &Tensor, grad: &Tensor) -> Option<Tensor> {
    if !fusable(&[x, grad]) {
        return None;
    }
    let (n, f) = (x.size()[0] as usize, x.size()[1] as usize);
    let p = f * (f + 1) / 2;
    let out = x.zeros_like();
    // SAFETY: inputs checked contiguous f32 CPU; `out` a fresh such tensor
    let (mut xs, mut gs, mut outs) = unsafe { (slice(x), slice(grad), slice_mut(&out)) };
    let parts = row_parts(n, 2 * n * p)
        .into_iter()
        .map(|rows| PairsBackward {
            x: take(&mut xs, rows * f),
            grad: take(&mut gs, rows * p),
            out: take_mut(&mut outs, rows * f),
            fields: f,
        })
        .collect();
    run_parts(parts);
    Some(out)
}

/// The gradients of `z[n, h·F + m] = hidden[n, h] · x[n, m]` from `grad` `[N, H·F]`: hidden's
/// `[N, H]` (`Σ_m grad[n, h, m] · x[n, m]`) and x's `[N, F]` (`Σ_h grad[n, h, m] ·
/// hidden[n, h]`). `None` where the loops cannot read them.
pub(super) fn outer_backward(
    hidden: &Tensor,
    x: &Tensor,
    grad: &Tensor,
) -> Option<(Tensor, Tensor)> {
    if !fusable(&[hidden, x, grad]) {
        return None;
    }
    let (n, h, f) = (
        x.size()[0] as usize,
        hidden.size()[1] as usize,
        x.size()[1] as usize,
    );
    let grad_hidden = hidden.empty_like();
    let grad_x = x.empty_like();
    // SAFETY: inputs checked contiguous f32 CPU; the outputs are fresh such tensors
    let (mut hs, mut xs, mut gs, mut ghs, mut gxs) = unsafe {
        (
            slice(hidden),
            slice(x),
            slice(grad),
            slice_mut(&grad_hidden),
            slice_mut(&grad_x),
        )
    };
    let parts = row_parts(n, 2 * n * h * f)
        .into_iter()
        .map(|rows| OuterBackward {
            hidden: take(&mut hs, rows * h),
            x: take(&mut xs, rows * f),
            grad: take(&mut gs, rows * h * f),
            grad_hidden: take_mut(&mut ghs, rows * h),
            grad_x: take_mut(&mut gxs, rows * f),
            maps: h,
            fields: f,
        })
        .collect();
    run_parts(parts);
    Some((grad_hidden, grad_x))
}

struct Pairs<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    fields: usize,
}

impl Kernel for Pairs<'_> {
    #[inline(always)]
    fn run(self) {
        let f = self.fields;
        let p = f * (f + 1) / 2;
        for (x, out) in self.x.chunks_exact(f).zip(self.out.chunks_exact_mut(p)) {
            let mut at = 0;
            for h in 0..f {
                let xh = x[h];
                for (o, &xm) in out[at..at + f - h].iter_mut().zip(&x[h..]) {
                    *o = xh * xm;
                }
                at += f - h;
            }
        }
    }
}

struct PairsBackward<'a> {
    x: &'a [f32],
    grad: &'a [f32],
    out: &'a mut [f32],
    fields: usize,
}

impl Kernel for PairsBackward<'_> {
    #[inline(always)]
    fn run(self) {
        let f = self.fields;
        let p = f * (f + 1) / 2;
        let rows = self.x.chunks_exact(f).zip(self.grad.chunks_exact(p));
        for ((x, g), out) in rows.zip(self.out.chunks_exact_mut(f)) {
            // out[h] = Σ_{m ≥ h} g(h, m)·x[m] + Σ_{m ≤ h} g(m, h)·x[m]; the first sums in
            // `own`, the second accumulated into out[m] while pair row h is read
            let mut at = 0;
            for h in 0..f {
                let row = &g[at..at + f - h];
                let mut own = 0.0f32;
                for (&gm, &xm) in row.iter().zip(&x[h..]) {
                    own += gm * xm;
                }
                let xh = x[h];
                for (o, &gm) in out[h..].iter_mut().zip(row) {
                    *o += gm * xh;
                }
                out[h] += own;
                at += f - h;
            }
        }
    }
}

struct OuterBackward<'a> {
    hidden: &'a [f32],
    x: &'a [f32],
    grad: &'a [f32],
    grad_hidden: &'a mut [f32],
    grad_x: &'a mut [f32],
    maps: usize,
    fields: usize,
}

impl Kernel for OuterBackward<'_> {
    #[inline(always)]
    fn run(self) {
        let (h, f) = (self.maps, self.fields);
        let rows = self
            .hidden
            .chunks_exact(h)
            .zip(self.x.chunks_exact(f))
            .zip(self.grad.chunks_exact(h * f))
            .zip(self.grad_hidden.chunks_exact_mut(h))
            .zip(self.grad_x.chunks_exact_mut(f));
        for ((((hidden, x), g), gh), gx) in rows {
            gx.fill(0.0);
            for ((row, &hv), ghv) in g.chunks_exact(f).zip(hidden).zip(gh.iter_mut()) {
                *ghv = dot(row, x);
                for (o, &gm) in gx.iter_mut().zip(row) {
                    *o += gm * hv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::tests::with_parts;
    use crate::test_values::TestValues;
    use tch::Kind;

    /// Rows `x` `[N, F]`, maps `[N, H]` and gradients of the pair products `[N, P]` and of the
    /// outer product `[N, H·F]`, with F = 11 (a tail after the 8-wide partial sums).
    fn inputs() -> (Tensor, Tensor, Tensor, Tensor) {
        let mut v = TestValues::new(0x9E37_79B9_7F4A_7C15);
        let (n, f, h) = (37, 11, 6);
        (
            v.tensor(&[n, f], 1.0),
            v.tensor(&[n, h], 1.0),
            v.tensor(&[n, f * (f + 1) / 2], 1.0),
            v.tensor(&[n, h * f], 1.0),
        )
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let scale = b.abs().max().double_value(&[]);
        assert!(scale > 0.0);
        (a.to_kind(Kind::Double) - b).abs().max().double_value(&[]) / scale
    }

    /// Each loop against its definition (libtorch's index and broadcast operations; sums in
    /// f64).
    #[test]
    fn loops_compute_their_definitions() {
        let (x, hidden, grad_pairs, grad_outer) = inputs();
        let f = x.size()[1];
        let pairs: Vec<(i64, i64)> = (0..f).flat_map(|h| (h..f).map(move |m| (h, m))).collect();
        let left = Tensor::from_slice(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
        let right = Tensor::from_slice(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
        // one rounding per product, as libtorch's
        let products = x.index_select(1, &left) * x.index_select(1, &right);
        assert!(pair_products(&x).unwrap().equal(&products));
        let x64 = x.to_kind(Kind::Double);

        let g64 = grad_pairs.to_kind(Kind::Double);
        let grad_x = x64
            .zeros_like()
            .index_add(1, &left, &(&g64 * x64.index_select(1, &right)))
            .index_add(1, &right, &(&g64 * x64.index_select(1, &left)));
        let ours = pair_products_backward(&x, &grad_pairs).unwrap();
        assert!(max_rel_diff(&ours, &grad_x) < 1e-6);

        let (n, h) = (x.size()[0], hidden.size()[1]);
        let g = grad_outer.to_kind(Kind::Double).view([n, h, f]);
        let h64 = hidden.to_kind(Kind::Double);
        let grad_hidden = (&g * x64.unsqueeze(1)).sum_dim_intlist(2, false, Kind::Double);
        let grad_x = (&g * h64.unsqueeze(2)).sum_dim_intlist(1, false, Kind::Double);
        let (gh, gx) = outer_backward(&hidden, &x, &grad_outer).unwrap();
        assert!(max_rel_diff(&gh, &grad_hidden) < 1e-6);
        assert!(max_rel_diff(&gx, &grad_x) < 1e-6);
    }

    /// Rows shared out over any number of threads: the same bits as one part.
    #[test]
    fn loops_cut_into_parts_give_the_same_bits() {
        let (x, hidden, grad_pairs, grad_outer) = inputs();
        let run = |parts: usize| {
            with_parts(parts, || {
                let (gh, gx) = outer_backward(&hidden, &x, &grad_outer).unwrap();
                [
                    pair_products(&x).unwrap(),
                    pair_products_backward(&x, &grad_pairs).unwrap(),
                    gh,
                    gx,
                ]
            })
        };
        let one = run(1);
        for parts in [2, 3, 5] {
            for (i, (a, b)) in one.iter().zip(&run(parts)).enumerate() {
                assert!(a.equal(b), "output {i}, {parts} parts");
            }
        }
    }

    #[test]
    fn other_kinds_and_layouts_are_left_to_libtorch() {
        let (x, hidden, grad_pairs, grad_outer) = inputs();
        assert!(pair_products(&x.to_kind(Kind::Double)).is_none());
        assert!(pair_products(&x.tr()).is_none());
        assert!(pair_products_backward(&x, &grad_pairs.to_kind(Kind::Double)).is_none());
        assert!(outer_backward(&hidden.tr(), &x, &grad_outer).is_none());
    }
}
