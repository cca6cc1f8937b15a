//! MLET's projection of a lookup's distinct rows, table by table: `[U, k]` rows, sorted by table
//! with `per_table[t]` rows of table t, times their table's `[k, d]` projection; and the
//! gradients of that product.
//!
//! Two implementations of the same sums. `*_tensors` are libtorch matrix products, one or two per
//! table, and run on any device. The loops here run over contiguous f32 CPU tensors: a batch
//! touches about a hundred distinct rows of each of Criteo's 26 tables, and 52-78 small matrix
//! products a step cost more in libtorch's per-call work (views, dispatch, threading decisions)
//! than in arithmetic. Every output element is summed in a fixed order with separate multiplies
//! and adds (no fused multiply-add), so the loops give the same bits whatever vector width the
//! CPU offers.
use tch::Tensor;

use crate::cpu_f32::{fusable, slice, slice_mut, take, take_mut};
use crate::parallel::{parts_for, run_parts};
use crate::simd::Kernel;

/// `[U, d]`: each distinct row times its table's projection.
pub fn forward(rows: &Tensor, per_table: &[i64], projection: &Tensor) -> Tensor {
    let d = projection.size()[2];
    let out = rows.new_empty([rows.size()[0], d], (rows.kind(), rows.device()));
    if !fusable(&[rows, projection]) {
        return forward_tensors(rows, per_table, projection, out);
    }
    let (k, d) = (rows.size()[1] as usize, d as usize);
    // SAFETY: `fusable` checked that both inputs are contiguous f32 CPU tensors; `out` is a
    // fresh contiguous f32 CPU tensor of U·d values, distinct from them
    let (mut rows, mut projection, mut out_rest) =
        unsafe { (slice(rows), slice(projection), slice_mut(&out)) };
    // tables in groups of about equal rows, one group per thread
    let groups = table_groups(per_table, parts_for(rows.len() * d));
    let parts = groups
        .into_iter()
        .map(|tables| {
            let n = rows_of(&per_table[tables.clone()]);
            Forward {
                rows: take(&mut rows, n * k),
                projection: take(&mut projection, tables.len() * k * d),
                out: take_mut(&mut out_rest, n * d),
                per_table: &per_table[tables],
                k,
                d,
            }
        })
        .collect();
    run_parts(parts);
    out
}

/// The gradients of `forward` given `grad` (`[U, d]`) of its output: returns the rows' (`[U, k]`,
/// `grad_t · P_tᵀ`) and adds each table's `rows_tᵀ · grad_t` to `projection_grad` (`[T, k, d]`).
pub fn backward(
    rows: &Tensor,
    grad: &Tensor,
    per_table: &[i64],
    projection: &Tensor,
    projection_grad: &Tensor,
) -> Tensor {
    let rows_grad = rows.empty_like();
    if !fusable(&[rows, grad, projection, projection_grad]) {
        backward_tensors(
            rows,
            grad,
            per_table,
            projection,
            projection_grad,
            &rows_grad,
        );
        return rows_grad;
    }
    let (k, d) = (rows.size()[1] as usize, projection.size()[2] as usize);
    // each table's projection transposed (`[d, k]`), so that a row's gradient is summed along
    // contiguous memory
    let transposed = projection.transpose(1, 2).contiguous();
    // SAFETY: `fusable` checked every input is a contiguous f32 CPU tensor; `rows_grad` and
    // `transposed` are fresh ones; `projection_grad` is the one tensor written besides
    // `rows_grad`, and none of the others aliases it (it is a gradient, they are not)
    let (mut rows, mut grad, mut transposed, mut rows_grad_rest, mut projection_grad) = unsafe {
        (
            slice(rows),
            slice(grad),
            slice(&transposed),
            slice_mut(&rows_grad),
            slice_mut(projection_grad),
        )
    };
    let groups = table_groups(per_table, parts_for(2 * rows.len() * d));
    let parts = groups
        .into_iter()
        .map(|tables| {
            let n = rows_of(&per_table[tables.clone()]);
            let kd = tables.len() * k * d;
            Backward {
                rows: take(&mut rows, n * k),
                grad: take(&mut grad, n * d),
                transposed: take(&mut transposed, kd),
                rows_grad: take_mut(&mut rows_grad_rest, n * k),
                projection_grad: take_mut(&mut projection_grad, kd),
                per_table: &per_table[tables],
                k,
                d,
            }
        })
        .collect();
    run_parts(parts);
    rows_grad
}

/// Consecutive tables in at most `parts` groups of about equal rows (every table in one, no
/// group empty unless all are).
fn table_groups(per_table: &[i64], parts: usize) -> Vec<std::ops::Range<usize>> {
    let total = rows_of(per_table) as f64;
    let mut groups = Vec::with_capacity(parts);
    let (mut first, mut seen) = (0, 0.0);
    for (t, &n) in per_table.iter().enumerate() {
        let target = total * (groups.len() + 1) as f64 / parts as f64;
        let last_group = groups.len() + 1 >= parts;
        // a table that would take the group further past its share than it falls short
        // without it starts the next group
        let after = seen + n as f64;
        if !last_group && t > first && after > target && target - seen < after - target {
            groups.push(first..t);
            first = t;
        }
        seen = after;
        if groups.len() + 1 < parts && seen >= total * (groups.len() + 1) as f64 / parts as f64 {
            groups.push(first..t + 1);
            first = t + 1;
        }
    }
    if first < per_table.len() || groups.is_empty() {
        groups.push(first..per_table.len());
    }
    groups
}

fn rows_of(per_table: &[i64]) -> usize {
    per_table.iter().sum::<i64>() as usize
}

/// The libtorch version of `forward`, writing into `out`.
fn forward_tensors(rows: &Tensor, per_table: &[i64], projection: &Tensor, out: Tensor) -> Tensor {
    let mut start = 0;
    for (t, &n) in per_table.iter().enumerate() {
        let _ = rows
            .narrow(0, start, n)
            .mm_out(&out.narrow(0, start, n), &projection.get(t as i64));
        start += n;
    }
    out
}

/// The libtorch version of `backward`, writing the rows' gradient into `rows_grad`.
fn backward_tensors(
    rows: &Tensor,
    grad: &Tensor,
    per_table: &[i64],
    projection: &Tensor,
    projection_grad: &Tensor,
    rows_grad: &Tensor,
) {
    let mut start = 0;
    for (t, &n) in per_table.iter().enumerate() {
        let (run, run_grad) = (rows.narrow(0, start, n), grad.narrow(0, start, n));
        let _ = run_grad.mm_out(
            &rows_grad.narrow(0, start, n),
            &projection.get(t as i64).tr(),
        );
        let _ = projection_grad.get(t as i64).addmm_(&run.tr(), &run_grad);
        start += n;
    }
}

/// Output columns summed at once: an accumulator of 16 f32 fits two AVX (four SSE) registers.
const LANES: usize = 16;

/// Accumulators summed side by side (8 AVX registers). Each is a chain of dependent adds: one
/// chain at a time would wait on the add's latency rather than use the CPU's throughput. Every
/// output element is still summed alone, in the same order, so grouping does not change the bits.
const STREAMS: usize = 4;

/// `out[r] = Σ_i x[r, i] · m[i]` for every row r of `x` (`m` `[width, w]`, `x` `[R, width]`),
/// summed over i in order.
#[inline(always)]
fn project(x: &[f32], m: &[f32], out: &mut [f32], w: usize) {
    let rows = out.len() / w;
    let chunks = w / LANES;
    // narrow outputs (d = 16): several rows at once; wide ones (k = 64): several chunks of a row
    let mut done = 0;
    if chunks == 1 {
        while done + STREAMS <= rows {
            project_block::<STREAMS, 1>(x, m, out, w, done, 0);
            done += STREAMS;
        }
    } else {
        for r in 0..rows {
            let mut c = 0;
            while c + STREAMS <= chunks {
                project_block::<1, STREAMS>(x, m, out, w, r, c * LANES);
                c += STREAMS;
            }
            for c in c..chunks {
                project_block::<1, 1>(x, m, out, w, r, c * LANES);
            }
        }
        done = rows;
    }
    for r in done..rows {
        project_block::<1, 1>(x, m, out, w, r, 0);
    }
    // a last chunk narrower than LANES
    let (col, n) = (chunks * LANES, w % LANES);
    if n != 0 {
        let width = m.len() / w;
        for (row, out) in x.chunks_exact(width).zip(out.chunks_exact_mut(w)) {
            let mut acc = [0.0f32; LANES];
            for (&xi, m_row) in row.iter().zip(m.chunks_exact(w)) {
                for (a, &mij) in acc.iter_mut().zip(&m_row[col..col + n]) {
                    *a += xi * mij;
                }
            }
            out[col..].copy_from_slice(&acc[..n]);
        }
    }
}

/// `project` for the R rows from `r0` and the C chunks of LANES columns from `col`.
#[inline(always)]
fn project_block<const R: usize, const C: usize>(
    x: &[f32],
    m: &[f32],
    out: &mut [f32],
    w: usize,
    r0: usize,
    col: usize,
) {
    let width = m.len() / w;
    let x = &x[r0 * width..(r0 + R) * width];
    let mut acc = [[[0.0f32; LANES]; C]; R];
    for (i, m_row) in m.chunks_exact(w).enumerate() {
        let m_part = &m_row[col..col + C * LANES];
        for (r, acc) in acc.iter_mut().enumerate() {
            let xi = x[r * width + i];
            for (acc, m_chunk) in acc.iter_mut().zip(m_part.chunks_exact(LANES)) {
                for (a, &mij) in acc.iter_mut().zip(m_chunk) {
                    *a += xi * mij;
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let at = (r0 + r) * w + col;
        for (c, acc) in acc.iter().enumerate() {
            out[at + c * LANES..at + (c + 1) * LANES].copy_from_slice(acc);
        }
    }
}

/// `acc[i, j] += Σ_r x[r, i] · g[r, j]` (`x` `[R, k]`, `g` `[R, d]`), rows r in order.
#[inline(always)]
fn accumulate_outer(x: &[f32], g: &[f32], acc: &mut [f32], k: usize, d: usize) {
    let chunks = d / LANES;
    for c in 0..chunks {
        let mut i = 0;
        while i + STREAMS <= k {
            outer_block::<STREAMS>(x, g, acc, k, d, i, c * LANES);
            i += STREAMS;
        }
        for i in i..k {
            outer_block::<1>(x, g, acc, k, d, i, c * LANES);
        }
    }
    // a last chunk narrower than LANES
    let (col, n) = (chunks * LANES, d % LANES);
    if n != 0 {
        for (i, acc_row) in acc.chunks_exact_mut(d).enumerate() {
            let mut sum = [0.0f32; LANES];
            sum[..n].copy_from_slice(&acc_row[col..]);
            for (x_row, g_row) in x.chunks_exact(k).zip(g.chunks_exact(d)) {
                let xi = x_row[i];
                for (s, &gj) in sum.iter_mut().zip(&g_row[col..]) {
                    *s += xi * gj;
                }
            }
            acc_row[col..].copy_from_slice(&sum[..n]);
        }
    }
}

/// `accumulate_outer` for the I accumulator rows from `i0` and the LANES columns from `col`.
#[inline(always)]
fn outer_block<const I: usize>(
    x: &[f32],
    g: &[f32],
    acc: &mut [f32],
    k: usize,
    d: usize,
    i0: usize,
    col: usize,
) {
    let mut sum = [[0.0f32; LANES]; I];
    for (i, sum) in sum.iter_mut().enumerate() {
        let at = (i0 + i) * d + col;
        sum.copy_from_slice(&acc[at..at + LANES]);
    }
    for (x_row, g_row) in x.chunks_exact(k).zip(g.chunks_exact(d)) {
        let g_part: &[f32; LANES] = g_row[col..col + LANES].try_into().unwrap();
        for (sum, &xi) in sum.iter_mut().zip(&x_row[i0..i0 + I]) {
            for (s, &gj) in sum.iter_mut().zip(g_part) {
                *s += xi * gj;
            }
        }
    }
    for (i, sum) in sum.iter().enumerate() {
        let at = (i0 + i) * d + col;
        acc[at..at + LANES].copy_from_slice(sum);
    }
}

/// `forward`'s sums, table by table.
struct Forward<'a> {
    rows: &'a [f32],
    per_table: &'a [i64],
    projection: &'a [f32],
    out: &'a mut [f32],
    k: usize,
    d: usize,
}

impl Kernel for Forward<'_> {
    #[inline(always)]
    fn run(self) {
        let (k, d) = (self.k, self.d);
        let mut start = 0;
        for (t, &n) in self.per_table.iter().enumerate() {
            let end = start + n as usize;
            let p = &self.projection[t * k * d..(t + 1) * k * d];
            project(
                &self.rows[start * k..end * k],
                p,
                &mut self.out[start * d..end * d],
                d,
            );
            start = end;
        }
    }
}

/// `backward`'s sums, table by table.
struct Backward<'a> {
    rows: &'a [f32],
    grad: &'a [f32],
    /// Each table's projection transposed, `[T, d, k]`.
    transposed: &'a [f32],
    rows_grad: &'a mut [f32],
    projection_grad: &'a mut [f32],
    per_table: &'a [i64],
    k: usize,
    d: usize,
}

impl Kernel for Backward<'_> {
    #[inline(always)]
    fn run(self) {
        let (k, d) = (self.k, self.d);
        let kd = k * d;
        let mut start = 0;
        for (t, &n) in self.per_table.iter().enumerate() {
            let end = start + n as usize;
            let (rk, rd) = (start * k..end * k, start * d..end * d);
            let g = &self.grad[rd];
            project(
                g,
                &self.transposed[t * kd..(t + 1) * kd],
                &mut self.rows_grad[rk.clone()],
                k,
            );
            accumulate_outer(
                &self.rows[rk],
                g,
                &mut self.projection_grad[t * kd..(t + 1) * kd],
                k,
                d,
            );
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Shapes (k, d) that reach every branch of the loops: all narrower than a chunk of LANES;
    /// one full chunk of output columns plus a partial one, with rows (6, 9) and accumulator rows
    /// (70) that leave some over after groups of STREAMS, and rows' gradients of four full
    /// chunks plus a partial one.
    const SHAPES: [(i64, i64); 2] = [(12, 5), (70, 20)];

    /// Rows of three tables (one with no rows), a projection and an upstream gradient, from a
    /// local generator (libtorch's is global and shared with parallel tests).
    fn inputs((k, d): (i64, i64)) -> (Tensor, Vec<i64>, Tensor, Tensor) {
        let mut test_values = crate::test_values::TestValues::new(0x2545_F491_4F6C_DD1D);
        let mut values = |shape: &[i64]| test_values.tensor(shape, 1.0);
        let per_table = if k < LANES as i64 {
            vec![5i64, 0, 9]
        } else {
            vec![6i64, 0, 9]
        };
        let n = per_table.iter().sum::<i64>();
        (
            values(&[n, k]),
            per_table,
            values(&[3, k, d]),
            values(&[n, d]),
        )
    }

    /// `Σ_i a[i] · b[i]` in f32, in order from 0 (from `start`): the sum each output of the
    /// loops must equal bit for bit, however they group outputs.
    fn sum_in_order(start: f32, terms: impl Iterator<Item = (f32, f32)>) -> f32 {
        terms.fold(start, |acc, (a, b)| acc + a * b)
    }

    #[test]
    fn loops_sum_each_output_in_order() {
        for shape in SHAPES {
            let (rows, per_table, p, g) = inputs(shape);
            let (k, d) = (shape.0 as usize, shape.1 as usize);
            let v = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            let (x, pv, gv) = (v(&rows), v(&p), v(&g));
            let pg_start = p.ones_like();
            let (out, rows_grad) = (
                v(&forward(&rows, &per_table, &p)),
                v(&backward(&rows, &g, &per_table, &p, &pg_start)),
            );
            let pg = v(&pg_start);
            let mut r = 0;
            for (t, &n) in per_table.iter().enumerate() {
                let pt = |i: usize, j: usize| pv[t * k * d + i * d + j];
                for r in r..r + n as usize {
                    for j in 0..d {
                        let want = sum_in_order(0.0, (0..k).map(|i| (x[r * k + i], pt(i, j))));
                        assert_eq!(out[r * d + j].to_bits(), want.to_bits(), "{shape:?} out");
                    }
                    for i in 0..k {
                        let want = sum_in_order(0.0, (0..d).map(|j| (gv[r * d + j], pt(i, j))));
                        assert_eq!(rows_grad[r * k + i].to_bits(), want.to_bits(), "rows");
                    }
                }
                for i in 0..k {
                    for j in 0..d {
                        let terms = (r..r + n as usize).map(|r| (x[r * k + i], gv[r * d + j]));
                        let want = sum_in_order(1.0, terms);
                        let got = pg[t * k * d + i * d + j];
                        assert_eq!(got.to_bits(), want.to_bits(), "{shape:?} projection");
                    }
                }
                r += n as usize;
            }
        }
    }

    /// The loops against the libtorch products, and both against the definition in f64.
    #[test]
    fn loops_compute_the_tensor_products() {
        for shape in SHAPES {
            loops_compute_the_tensor_products_of(shape);
        }
    }

    fn loops_compute_the_tensor_products_of(shape: (i64, i64)) {
        let (rows, per_table, p, g) = inputs(shape);
        let fused = forward(&rows, &per_table, &p);
        let reference = forward_tensors(&rows, &per_table, &p, fused.empty_like());
        // the definition: row r of table t times P_t, in f64
        let table_of: Vec<i64> = per_table
            .iter()
            .enumerate()
            .flat_map(|(t, &n)| std::iter::repeat_n(t as i64, n as usize))
            .collect();
        let p_of_row = p
            .index_select(0, &Tensor::from_slice(&table_of))
            .to_kind(Kind::Double);
        let definition = rows
            .to_kind(Kind::Double)
            .unsqueeze(1)
            .bmm(&p_of_row)
            .squeeze_dim(1);
        let close = |a: &Tensor, b: &Tensor| {
            (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
                .abs()
                .max()
                .double_value(&[])
        };
        assert!(close(&fused, &definition) < 1e-5);
        assert!(close(&reference, &definition) < 1e-5);

        let (pg_fused, pg_reference) = (p.ones_like(), p.ones_like());
        let rows_grad = backward(&rows, &g, &per_table, &p, &pg_fused);
        let rows_grad_ref = rows.empty_like();
        backward_tensors(&rows, &g, &per_table, &p, &pg_reference, &rows_grad_ref);
        let g64 = g.to_kind(Kind::Double);
        let rows_grad_def = g64
            .unsqueeze(1)
            .bmm(&p_of_row.transpose(1, 2))
            .squeeze_dim(1);
        assert!(close(&rows_grad, &rows_grad_def) < 1e-5);
        assert!(close(&rows_grad_ref, &rows_grad_def) < 1e-5);
        // the projections' gradient was added to what was there (ones); table 1 has no rows
        let outer = rows.to_kind(Kind::Double).unsqueeze(2) * g64.unsqueeze(1);
        let pg_def = Tensor::zeros([3, shape.0, shape.1], (Kind::Double, Device::Cpu)).index_add(
            0,
            &Tensor::from_slice(&table_of),
            &outer,
        ) + 1.0;
        assert!(close(&pg_fused, &pg_def) < 1e-5);
        assert!(close(&pg_reference, &pg_def) < 1e-5);
        assert!(pg_fused.get(1).equal(&p.ones_like().get(1)));
    }

    /// Tables shared out over threads in any number of groups: the same bits as one group.
    #[test]
    fn loops_cut_into_parts_give_the_same_bits() {
        use crate::parallel::tests::with_parts;
        for shape in SHAPES {
            let (rows, per_table, p, g) = inputs(shape);
            let run = |parts: usize| {
                with_parts(parts, || {
                    let pg = p.ones_like();
                    let out = forward(&rows, &per_table, &p);
                    let rows_grad = backward(&rows, &g, &per_table, &p, &pg);
                    (out, rows_grad, pg)
                })
            };
            let one = run(1);
            for parts in [2, 3, 5] {
                let many = run(parts);
                assert!(one.0.equal(&many.0), "forward, {parts} parts");
                assert!(one.1.equal(&many.1), "rows' gradient, {parts} parts");
                assert!(one.2.equal(&many.2), "projections' gradient, {parts} parts");
            }
            assert_eq!(table_groups(&per_table, 2), [0..2, 2..3]);
        }
        assert_eq!(table_groups(&[4, 4, 4, 4], 2), [0..2, 2..4]);
        assert_eq!(table_groups(&[4, 4, 4, 4], 1), vec![0..4]);
        assert_eq!(table_groups(&[1, 1], 5), [0..1, 1..2]);
        assert_eq!(table_groups(&[1, 1, 9, 1], 2), [0..2, 2..4]);
        assert_eq!(table_groups(&[], 2), vec![0..0]);
    }

    #[test]
    fn other_layouts_take_the_tensor_path() {
        let (rows, per_table, p, _) = inputs(SHAPES[0]);
        let fused = forward(&rows, &per_table, &p);
        // a transposed (non-contiguous) projection of the same values: the same products
        let strided = p.transpose(1, 2).contiguous().transpose(1, 2);
        assert!(!fusable(&[&strided]));
        let via_tensors = forward(&rows, &per_table, &strided);
        let diff = (&fused - &via_tensors).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        let doubles = forward(
            &rows.to_kind(Kind::Double),
            &per_table,
            &p.to_kind(Kind::Double),
        );
        assert_eq!(doubles.kind(), Kind::Double);
    }
}
