//! AutoInt's attention on contiguous f32 CPU memory, one sample at a time: the scores of every
//! head, their softmax and the weighted sum of the values, then the residual and ReLU; and the
//! backward pass of all of it. In libtorch these are batched products of `[F, d/h] × [d/h, F]`
//! per sample and head, too small for a GEMM kernel to reach its rate, with the softmax as
//! separate passes over memory; here a sample's queries, keys, values and scores stay in the
//! L1 cache from the first product to the last. The loops are compiled for each head width
//! `d/h` in 1, 2, 4, …, 64 (a width in registers), over blocks of `ROWS` score rows (independent
//! sums that overlap). Samples are shared out over libtorch's threads; every output is summed
//! in a fixed order without fused multiply-adds, so the bits do not depend on the thread count
//! or the CPU.
use tch::Tensor;

use crate::cpu_f32::{dot, fusable, slice, slice_mut, take, take_mut};
use crate::parallel::{row_parts, run_parts};
use crate::simd::Kernel;

/// Score rows are padded to whole runs of this many lanes; partial sums and maxima run in as
/// many lanes (a fixed order, whatever the vector width).
const LANES: usize = 8;

/// Score rows computed together.
const ROWS: usize = 4;

/// The layer's shape: `fields` rows of `dim` values per sample, `heads` heads of `dim / heads`
/// columns, and the projections' columns `[Q | K | V | R]` (`R`, the residual, where `residual`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    pub fields: usize,
    pub dim: usize,
    pub heads: usize,
    pub residual: bool,
}

impl Heads {
    /// Columns of the projections `[Q | K | V | R]`.
    pub fn width(&self) -> usize {
        (3 + self.residual as usize) * self.dim
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// A score row's length, padded so that its loops run in whole lanes.
    fn padded_fields(&self) -> usize {
        self.fields.next_multiple_of(LANES)
    }

    /// Multiply-adds of one sample's attention, forward and backward (for sharing out).
    fn work_per_sample(&self) -> usize {
        6 * self.fields * self.fields * self.dim
    }
}

/// Calls `$run::<DH>($args)` for the head width `$dh` in 1, 2, 4, …, 64; `None` for another.
macro_rules! by_head_dim {
    ($dh:expr, $run:ident($($arg:expr),*)) => {
        match $dh {
            1 => Some($run::<1>($($arg),*)),
            2 => Some($run::<2>($($arg),*)),
            4 => Some($run::<4>($($arg),*)),
            8 => Some($run::<8>($($arg),*)),
            16 => Some($run::<16>($($arg),*)),
            32 => Some($run::<32>($($arg),*)),
            64 => Some($run::<64>($($arg),*)),
            _ => None,
        }
    };
}

/// `p` `[B·F, width]` (the projections `[Q | K | V | R]`) → the layer's output `[B, F, d]`,
/// `relu(Σ_g softmax_g(Q_j K_jᵀ) V_j + R)` per head `j`, and the softmax `[B, heads, F, F]`
/// its backward pass reads. `None` where the loops cannot read `p` or are not compiled for
/// the head width.
pub(super) fn forward(p: &Tensor, shape: Heads) -> Option<(Tensor, Tensor)> {
    if !fusable(&[p]) {
        return None;
    }
    let Heads {
        fields: f,
        dim: d,
        heads: h,
        ..
    } = shape;
    let n = p.numel() / (f * shape.width());
    let opts = (p.kind(), p.device());
    let y = Tensor::empty([n as i64, f as i64, d as i64], opts);
    let probs = Tensor::empty([n as i64, h as i64, f as i64, f as i64], opts);
    by_head_dim!(shape.head_dim(), run_forward(p, &y, &probs, shape))?;
    Some((y, probs))
}

fn run_forward<const DH: usize>(p: &Tensor, y: &Tensor, probs: &Tensor, shape: Heads) {
    let (f, d, h, w) = (shape.fields, shape.dim, shape.heads, shape.width());
    let n = p.numel() / (f * w);
    // SAFETY: `p` is a contiguous f32 CPU tensor (checked); the outputs are fresh such tensors
    let (mut ps, mut ys, mut probs_s) = unsafe { (slice(p), slice_mut(y), slice_mut(probs)) };
    let parts = row_parts(n, n * shape.work_per_sample())
        .into_iter()
        .map(|rows| Forward::<DH> {
            p: take(&mut ps, rows * f * w),
            y: take_mut(&mut ys, rows * f * d),
            probs: take_mut(&mut probs_s, rows * h * f * f),
            shape,
        })
        .collect();
    run_parts(parts);
}

/// The gradient of `p` `[B·F, width]` from that of the output of [`forward`] `grad`
/// `[B, F, d]`, given `p`, the softmax and the output `y` it returned. `None` where the loops
/// cannot read them.
pub(super) fn backward(
    p: &Tensor,
    probs: &Tensor,
    y: &Tensor,
    grad: &Tensor,
    shape: Heads,
) -> Option<Tensor> {
    if !fusable(&[p, probs, y, grad]) {
        return None;
    }
    let grad_p = p.empty_like();
    by_head_dim!(
        shape.head_dim(),
        run_backward(p, probs, y, grad, &grad_p, shape)
    )?;
    Some(grad_p)
}

fn run_backward<const DH: usize>(
    p: &Tensor,
    probs: &Tensor,
    y: &Tensor,
    grad: &Tensor,
    grad_p: &Tensor,
    shape: Heads,
) {
    let (f, d, h, w) = (shape.fields, shape.dim, shape.heads, shape.width());
    let n = p.numel() / (f * w);
    // SAFETY: inputs checked contiguous f32 CPU; `grad_p` a fresh such tensor
    let (mut ps, mut probs_s, mut ys, mut gs, mut gps) = unsafe {
        (
            slice(p),
            slice(probs),
            slice(y),
            slice(grad),
            slice_mut(grad_p),
        )
    };
    let parts = row_parts(n, n * shape.work_per_sample())
        .into_iter()
        .map(|rows| Backward::<DH> {
            p: take(&mut ps, rows * f * w),
            probs: take(&mut probs_s, rows * h * f * f),
            y: take(&mut ys, rows * f * d),
            grad: take(&mut gs, rows * f * d),
            grad_p: take_mut(&mut gps, rows * f * w),
            shape,
        })
        .collect();
    run_parts(parts);
}

/// Row `row` of a matrix with rows of `stride` values: its `DH` values from column `col`.
#[inline(always)]
fn head<const DH: usize>(m: &[f32], stride: usize, col: usize, row: usize) -> &[f32; DH] {
    m[row * stride + col..][..DH].try_into().unwrap()
}

#[inline(always)]
fn head_mut<const DH: usize>(
    m: &mut [f32],
    stride: usize,
    col: usize,
    row: usize,
) -> &mut [f32; DH] {
    (&mut m[row * stride + col..][..DH]).try_into().unwrap()
}

/// `out[c·padded + g] = m[g·stride + col + c]` for `c < DH`, `g < fields`; zeros beyond `fields`.
#[inline(always)]
fn transpose_head<const DH: usize>(
    out: &mut [f32],
    m: &[f32],
    stride: usize,
    col: usize,
    fields: usize,
) {
    let padded = out.len() / DH;
    out.fill(0.0);
    for g in 0..fields {
        for (c, &v) in head::<DH>(m, stride, col, g).iter().enumerate() {
            out[c * padded + g] = v;
        }
    }
}

/// `out[r·padded + g] = Σ_c a[r0 + r][c] · bt[c·padded + g]` for `r < R` (the rows of `a`
/// are its `DH` values from column `col` of rows of `stride`), `c` in order.
#[inline(always)]
fn times_transposed<const R: usize, const DH: usize>(
    a: &[f32],
    stride: usize,
    col: usize,
    r0: usize,
    bt: &[f32],
    out: &mut [f32],
) {
    let chunks = bt.len() / DH / LANES;
    let rows: [&[f32; DH]; R] = std::array::from_fn(|r| head::<DH>(a, stride, col, r0 + r));
    let mut chunk = 0;
    while chunk + CHUNKS <= chunks {
        times_transposed_block::<R, DH, CHUNKS>(&rows, bt, out, chunk);
        chunk += CHUNKS;
    }
    for chunk in chunk..chunks {
        times_transposed_block::<R, DH, 1>(&rows, bt, out, chunk);
    }
}

/// Score chunks of `LANES` computed together: each broadcast value of a row serves them all
/// (two: with `ROWS` rows, 8 accumulators of AVX2's 16 vector registers; four spilled).
const CHUNKS: usize = 2;

/// [`times_transposed`]'s columns `chunk·LANES..(chunk + C)·LANES`.
#[inline(always)]
fn times_transposed_block<const R: usize, const DH: usize, const C: usize>(
    rows: &[&[f32; DH]; R],
    bt: &[f32],
    out: &mut [f32],
    chunk: usize,
) {
    let padded = bt.len() / DH;
    let mut acc = [[[0.0f32; LANES]; C]; R];
    for c in 0..DH {
        let b: &[f32] = &bt[c * padded + chunk * LANES..][..C * LANES];
        for (acc, row) in acc.iter_mut().zip(rows) {
            let x = row[c];
            for (acc, b) in acc.iter_mut().zip(b.chunks_exact(LANES)) {
                for (a, &b) in acc.iter_mut().zip(b) {
                    *a += x * b;
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (i, acc) in acc.iter().enumerate() {
            out[r * padded + (chunk + i) * LANES..][..LANES].copy_from_slice(acc);
        }
    }
}

/// The `R` rows of `coef` `[R, fields]`, checked long enough for [`coefficient`].
#[inline(always)]
fn coefficient_rows<const R: usize>(coef: &[f32], fields: usize) -> [&[f32]; R] {
    assert!(coef.len() >= R * fields);
    std::array::from_fn(|r| &coef[r * fields..(r + 1) * fields])
}

/// `row[g]` for `g < fields`, the length `coefficient_rows` checked: without the bounds check
/// in the innermost loops, whose index arithmetic otherwise costs as many instructions as
/// their vector work.
#[inline(always)]
fn coefficient(row: &[f32], g: usize) -> f32 {
    debug_assert!(g < row.len());
    // SAFETY: callers index rows from `coefficient_rows` with `g < fields`, their length
    unsafe { *row.get_unchecked(g) }
}

/// `Σ_g coef[r·fields + g] · m[g]` for `r < R` (`m[g]`: row g's `DH` values from column `col`,
/// rows of `stride`), `g` in order.
#[inline(always)]
fn weighted<const R: usize, const DH: usize>(
    coef: &[f32],
    fields: usize,
    m: &[f32],
    stride: usize,
    col: usize,
) -> [[f32; DH]; R] {
    let coefs = coefficient_rows::<R>(coef, fields);
    assert!(col + DH <= stride);
    let mut acc = [[0.0f32; DH]; R];
    for (g, m_row) in m.chunks_exact(stride).take(fields).enumerate() {
        let v: &[f32; DH] = m_row[col..col + DH].try_into().unwrap();
        for (acc, c) in acc.iter_mut().zip(&coefs) {
            let a = coefficient(c, g);
            for (o, &x) in acc.iter_mut().zip(v) {
                *o += a * x;
            }
        }
    }
    acc
}

/// `target[g] += Σ_r coef[r·fields + g] · rows[r]` for every `g < fields` (`target[g]`: row g's
/// `DH` values from column `col`, rows of `stride`), `r` in order.
#[inline(always)]
fn scatter<const R: usize, const DH: usize>(
    coef: &[f32],
    fields: usize,
    rows: &[[f32; DH]; R],
    target: &mut [f32],
    stride: usize,
    col: usize,
) {
    let coefs = coefficient_rows::<R>(coef, fields);
    assert!(col + DH <= stride);
    for (g, t_row) in target.chunks_exact_mut(stride).take(fields).enumerate() {
        let t: &mut [f32; DH] = (&mut t_row[col..col + DH]).try_into().unwrap();
        let mut acc = *t;
        for (row, c) in rows.iter().zip(&coefs) {
            let a = coefficient(c, g);
            for (o, &x) in acc.iter_mut().zip(row) {
                *o += a * x;
            }
        }
        *t = acc;
    }
}

/// `e^x` for `x ≤ 0` (softmax's shifted scores), within 2 ulp, in plain f32 arithmetic that
/// vectorises: `x = n·ln 2 + r`, `e^r` by Cephes' polynomial, `2^n` by the exponent's bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that n·LN2_HI is exact
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // adding 1.5·2²³ rounds to an integer, which the sum's low bits then hold
    const ROUND: f32 = 12_582_912.0;
    // below, e^x is under f32's smallest normal number; the result is flushed to 0
    let below = x < -87.0;
    let x = if below { -87.0 } else { x };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut y = 1.987_569_1e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 0.166_666_65;
    y = y * r + 0.5;
    y = y * (r * r) + r + 1.0;
    // 2^n from n's bits (integer arithmetic: a float-to-int conversion would not vectorise)
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    if below {
        0.0
    } else {
        y * scale
    }
}

/// `out = softmax(scores[..out.len()])`; `scores` is padded to whole lanes (the padding is
/// overwritten).
#[inline(always)]
fn softmax(scores: &mut [f32], out: &mut [f32]) {
    let f = out.len();
    scores[f..].fill(f32::NEG_INFINITY);
    let mut max = [f32::NEG_INFINITY; LANES];
    for chunk in scores.chunks_exact(LANES) {
        for (m, &s) in max.iter_mut().zip(chunk) {
            *m = if s > *m { s } else { *m };
        }
    }
    let max = max
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
    // one loop over the row, which the compiler vectorises (an unrolled one it did not)
    for s in scores.iter_mut() {
        *s = exp_nonpositive(*s - max);
    }
    let mut sum = [0.0f32; LANES];
    for chunk in scores.chunks_exact(LANES) {
        for (total, &s) in sum.iter_mut().zip(chunk) {
            *total += s;
        }
    }
    let inverse = 1.0 / sum.iter().sum::<f32>();
    for (o, &e) in out.iter_mut().zip(&scores[..f]) {
        *o = e * inverse;
    }
}

/// Softmax's backward pass for one row: `out = a ⊙ (grad_a − a·grad_a)`.
#[inline(always)]
fn softmax_backward(a: &[f32], grad_a: &[f32], out: &mut [f32]) {
    let centre = dot(a, grad_a);
    for ((o, &x), &g) in out.iter_mut().zip(a).zip(grad_a) {
        *o = x * (g - centre);
    }
}

struct Forward<'a, const DH: usize> {
    p: &'a [f32],
    y: &'a mut [f32],
    probs: &'a mut [f32],
    shape: Heads,
}

impl<const DH: usize> Forward<'_, DH> {
    /// Rows `r0..r0 + R` of head `j`'s softmax and output.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn rows<const R: usize>(
        p: &[f32],
        keys: &[f32],
        scores: &mut [f32],
        probs: &mut [f32],
        y: &mut [f32],
        shape: Heads,
        j: usize,
        r0: usize,
    ) {
        let (f, d, w) = (shape.fields, shape.dim, shape.width());
        let padded = keys.len() / DH;
        times_transposed::<R, DH>(p, w, j * DH, r0, keys, scores);
        let probs = &mut probs[r0 * f..(r0 + R) * f];
        for (s, a) in scores
            .chunks_exact_mut(padded)
            .zip(probs.chunks_exact_mut(f))
        {
            softmax(s, a);
        }
        let out = weighted::<R, DH>(probs, f, p, w, 2 * d + j * DH);
        for (r, out) in out.iter().enumerate() {
            *head_mut::<DH>(y, d, j * DH, r0 + r) = *out;
        }
    }
}

impl<const DH: usize> Kernel for Forward<'_, DH> {
    #[inline(always)]
    fn run(self) {
        let s = self.shape;
        let (f, d, h, w) = (s.fields, s.dim, s.heads, s.width());
        let padded = s.padded_fields();
        let mut keys = vec![0.0f32; DH * padded];
        let mut scores = vec![0.0f32; ROWS * padded];
        let samples = self
            .p
            .chunks_exact(f * w)
            .zip(self.y.chunks_exact_mut(f * d))
            .zip(self.probs.chunks_exact_mut(h * f * f));
        for ((p, y), probs) in samples {
            for (j, probs) in probs.chunks_exact_mut(f * f).enumerate() {
                transpose_head::<DH>(&mut keys, p, w, d + j * DH, f);
                let mut r0 = 0;
                while r0 + ROWS <= f {
                    Self::rows::<ROWS>(p, &keys, &mut scores, probs, y, s, j, r0);
                    r0 += ROWS;
                }
                for r0 in r0..f {
                    Self::rows::<1>(p, &keys, &mut scores[..padded], probs, y, s, j, r0);
                }
            }
            if s.residual {
                for (out, p) in y.chunks_exact_mut(d).zip(p.chunks_exact(w)) {
                    for (o, &r) in out.iter_mut().zip(&p[3 * d..]) {
                        *o += r;
                    }
                }
            }
            for o in y.iter_mut() {
                *o = if *o < 0.0 { 0.0 } else { *o };
            }
        }
    }
}

struct Backward<'a, const DH: usize> {
    p: &'a [f32],
    probs: &'a [f32],
    y: &'a [f32],
    grad: &'a [f32],
    grad_p: &'a mut [f32],
    shape: Heads,
}

/// A block's buffers in the backward pass: the softmax's gradient before and after it.
struct Scratch {
    grad_a: Vec<f32>,
    grad_s: Vec<f32>,
}

impl<const DH: usize> Backward<'_, DH> {
    /// Rows `r0..r0 + R` of head `j`: their share of `∂V_j` and `∂K_j`, and their `∂Q_j`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn rows<const R: usize>(
        p: &[f32],
        probs: &[f32],
        grad_z: &[f32],
        values: &[f32],
        scratch: &mut Scratch,
        gp: &mut [f32],
        shape: Heads,
        j: usize,
        r0: usize,
    ) {
        let (f, d, w) = (shape.fields, shape.dim, shape.width());
        let padded = values.len() / DH;
        let (q0, k0, v0) = (j * DH, d + j * DH, 2 * d + j * DH);
        let a = &probs[r0 * f..(r0 + R) * f];
        let grad_out: [[f32; DH]; R] =
            std::array::from_fn(|r| *head::<DH>(grad_z, d, j * DH, r0 + r));
        // ∂V_j[g] += Σ_r a[r, g] · ∂out[r]
        scatter::<R, DH>(a, f, &grad_out, gp, w, v0);
        // ∂a[r, g] = ∂out[r] · V_j[g]
        let grad_a = &mut scratch.grad_a[..R * padded];
        times_transposed::<R, DH>(grad_z, d, j * DH, r0, values, grad_a);
        // through the softmax
        let grad_s = &mut scratch.grad_s[..R * f];
        let rows = a.chunks_exact(f).zip(grad_a.chunks_exact(padded));
        for ((a, ga), gs) in rows.zip(grad_s.chunks_exact_mut(f)) {
            softmax_backward(a, &ga[..f], gs);
        }
        // ∂Q_j[r] = Σ_g ∂s[r, g] · K_j[g]; ∂K_j[g] += Σ_r ∂s[r, g] · Q_j[r]
        let grad_q = weighted::<R, DH>(grad_s, f, p, w, k0);
        for (r, gq) in grad_q.iter().enumerate() {
            *head_mut::<DH>(gp, w, q0, r0 + r) = *gq;
        }
        let queries: [[f32; DH]; R] = std::array::from_fn(|r| *head::<DH>(p, w, q0, r0 + r));
        scatter::<R, DH>(grad_s, f, &queries, gp, w, k0);
    }
}

impl<const DH: usize> Kernel for Backward<'_, DH> {
    #[inline(always)]
    fn run(self) {
        let s = self.shape;
        let (f, d, h, w) = (s.fields, s.dim, s.heads, s.width());
        let padded = s.padded_fields();
        let mut values = vec![0.0f32; DH * padded];
        let mut scratch = Scratch {
            grad_a: vec![0.0f32; ROWS * padded],
            grad_s: vec![0.0f32; ROWS * f],
        };
        let mut grad_z = vec![0.0f32; f * d];
        let samples = self
            .p
            .chunks_exact(f * w)
            .zip(self.probs.chunks_exact(h * f * f))
            .zip(self.y.chunks_exact(f * d))
            .zip(self.grad.chunks_exact(f * d))
            .zip(self.grad_p.chunks_exact_mut(f * w));
        for ((((p, probs), y), grad), gp) in samples {
            // through the ReLU: its output is positive exactly where its input was
            for ((z, &g), &yv) in grad_z.iter_mut().zip(grad).zip(y) {
                *z = if yv > 0.0 { g } else { 0.0 };
            }
            gp.fill(0.0);
            if s.residual {
                for (gp, z) in gp.chunks_exact_mut(w).zip(grad_z.chunks_exact(d)) {
                    gp[3 * d..].copy_from_slice(z);
                }
            }
            for (j, probs) in probs.chunks_exact(f * f).enumerate() {
                transpose_head::<DH>(&mut values, p, w, 2 * d + j * DH, f);
                let mut r0 = 0;
                while r0 + ROWS <= f {
                    Self::rows::<ROWS>(p, probs, &grad_z, &values, &mut scratch, gp, s, j, r0);
                    r0 += ROWS;
                }
                for r0 in r0..f {
                    Self::rows::<1>(p, probs, &grad_z, &values, &mut scratch, gp, s, j, r0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::tests::with_parts;
    use tch::{Device, Kind};

    /// Within 2 ulp of e^x over softmax's range, exactly 0 below f32's normal range.
    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            let ulp = f32::EPSILON as f64 * exact;
            worst = worst.max(((exp_nonpositive(x) as f64) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// Samples are independent: any number of parts gives the same bits, forward and backward.
    #[test]
    fn parts_do_not_change_the_bits() {
        let shape = Heads {
            fields: 13,
            dim: 16,
            heads: 2,
            residual: true,
        };
        let opts = (Kind::Float, Device::Cpu);
        let n = 7;
        let p = Tensor::randn([n * 13, shape.width() as i64], opts) * 3.0;
        let grad = Tensor::randn([n, 13, 16], opts);
        let run = |parts| {
            with_parts(parts, || {
                let (y, probs) = forward(&p, shape).unwrap();
                let grad_p = backward(&p, &probs, &y, &grad, shape).unwrap();
                (y, probs, grad_p)
            })
        };
        let one = run(1);
        assert!(one.0.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        for parts in [2, 3, 7] {
            let many = run(parts);
            assert!(one.0.equal(&many.0) && one.1.equal(&many.1) && one.2.equal(&many.2));
        }
    }

    /// Head widths the loops are not compiled for are refused (the caller uses autograd).
    #[test]
    fn other_head_widths_are_refused() {
        let shape = Heads {
            fields: 4,
            dim: 12,
            heads: 4,
            residual: false,
        };
        let p = Tensor::zeros([4, shape.width() as i64], (Kind::Float, Device::Cpu));
        assert!(forward(&p, shape).is_none());
    }
}
