//! Singular values and low-rank truncation of tall `[n, d]` tables in bounded memory.
//!
//! Embedding tables have millions of rows and a few dozen columns, so everything goes through
//! the `d x d` Gram matrix `AᵀA = V Σ² Vᵀ`, accumulated over row chunks in double precision: its
//! eigenvalues are the squared singular values and its eigenvectors the right singular vectors.
//! Memory is `O(chunk · d + d²)` beyond the table itself; no `n x n` or `n x d` factor `U` is
//! formed. Squaring costs precision only for singular values below about `1e-8 · σ_max`, far
//! under every threshold used here (effective rank counts values above `0.01 · σ_max`).
use tch::{Device, Kind, Tensor};

/// Rows per chunk when streaming a table (a 64-wide f64 chunk is 32 MiB).
const CHUNK_ROWS: i64 = 1 << 16;

/// The right singular structure of a table: singular values in descending order and the
/// matching right singular vectors as the columns of `vectors` (`[d, d]`, f64, on the CPU).
pub struct RightSingular {
    pub values: Vec<f64>,
    pub vectors: Tensor,
}

/// `AᵀA` of a `[n, d]` table, in f64 on the CPU.
pub fn gram(table: &Tensor) -> Tensor {
    let (n, d) = table.size2().expect("a table is two-dimensional");
    tch::no_grad(|| {
        let mut g = Tensor::zeros([d, d], (Kind::Double, Device::Cpu));
        let mut start = 0;
        while start < n {
            let len = CHUNK_ROWS.min(n - start);
            let chunk = table
                .narrow(0, start, len)
                .to_device(Device::Cpu)
                .to_kind(Kind::Double);
            g += chunk.tr().matmul(&chunk);
            start += len;
        }
        g
    })
}

/// Singular values (descending, clamped at 0) and right singular vectors of `table`.
pub fn right_singular(table: &Tensor) -> RightSingular {
    let (eigenvalues, eigenvectors) = gram(table).linalg_eigh("L");
    // eigh sorts ascending; flip both to descending
    let eigenvalues = eigenvalues.flip([0]);
    let vectors = eigenvectors.flip([1]);
    let values = Vec::<f64>::try_from(&eigenvalues)
        .expect("f64 eigenvalues")
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    RightSingular { values, vectors }
}

/// Singular values of `table`, descending.
pub fn singular_values(table: &Tensor) -> Vec<f64> {
    right_singular(table).values
}

/// Overwrites `table` (`[n, d]`) by its best rank-`rank` approximation `A V_r V_rᵀ` (the
/// truncated SVD), chunk by chunk. A table with at most `rank` rows or columns is left as it is
/// (it already has rank ≤ `rank`). Returns the relative Frobenius error `‖A − A_r‖ / ‖A‖`
/// (`sqrt(Σ_{i>r} σ_i² / Σ σ_i²)`, 0 for a zero table).
pub fn truncate_in_place(table: &Tensor, rank: usize) -> f64 {
    let (n, d) = table.size2().expect("a table is two-dimensional");
    if rank as i64 >= n.min(d) {
        return 0.0;
    }
    let svd = right_singular(table);
    let total: f64 = svd.values.iter().map(|s| s * s).sum();
    let dropped: f64 = svd.values[rank..].iter().map(|s| s * s).sum();
    let v_r = svd.vectors.narrow(1, 0, rank as i64);
    let projector = v_r.matmul(&v_r.tr());
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = CHUNK_ROWS.min(n - start);
            let mut rows = table.narrow(0, start, len);
            let low = rows
                .to_device(Device::Cpu)
                .to_kind(Kind::Double)
                .matmul(&projector)
                .to_kind(rows.kind())
                .to_device(rows.device());
            rows.copy_(&low);
            start += len;
        }
    });
    if total > 0.0 {
        (dropped / total).sqrt()
    } else {
        0.0
    }
}

/// `AᵀA` of the tables side by side, `A = [T_0 | T_1 | … | T_{M-1}]` (each `[n, d_m]`, the same
/// n; a field's embedding sets under multi-embedding): the `Σd_m x Σd_m` block matrix whose block
/// `(a, b)` is `T_aᵀ T_b`, in f64 on the CPU. Accumulated over row chunks like `gram`: only one
/// chunk of the concatenation (`chunk x Σd_m`) is ever formed, never `A` itself.
pub fn gram_side_by_side(tables: &[Tensor]) -> Tensor {
    assert!(!tables.is_empty(), "at least one table");
    let shapes: Vec<(i64, i64)> = tables
        .iter()
        .map(|t| t.size2().expect("a table is two-dimensional"))
        .collect();
    let n = shapes[0].0;
    assert!(
        shapes.iter().all(|&(rows, _)| rows == n),
        "tables side by side need the same rows: {shapes:?}"
    );
    let width: i64 = shapes.iter().map(|&(_, d)| d).sum();
    tch::no_grad(|| {
        let mut g = Tensor::zeros([width, width], (Kind::Double, Device::Cpu));
        let mut start = 0;
        while start < n {
            let len = CHUNK_ROWS.min(n - start);
            let parts: Vec<Tensor> = tables
                .iter()
                .map(|t| {
                    t.narrow(0, start, len)
                        .to_device(Device::Cpu)
                        .to_kind(Kind::Double)
                })
                .collect();
            let chunk = Tensor::cat(&parts, 1);
            g += chunk.tr().matmul(&chunk);
            start += len;
        }
        g
    })
}

/// Singular values (descending, clamped at 0) of any matrix `A` from its Gram matrix `AᵀA`
/// (symmetric, f64).
pub fn singular_values_of_gram(gram: &Tensor) -> Vec<f64> {
    let eigenvalues = gram.linalg_eigvalsh("L").flip([0]);
    Vec::<f64>::try_from(&eigenvalues)
        .expect("f64 eigenvalues")
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `U diag(s) Vᵀ` with random orthonormal `U` (`[n, d]`) and `V` (`[d, d]`).
    fn with_singular_values(n: i64, s: &[f64]) -> Tensor {
        // the generator is global: other tests draw from it in parallel
        let _rng = crate::training::torch_rng_lock();
        tch::manual_seed(7);
        let d = s.len() as i64;
        let opts = (Kind::Double, Device::Cpu);
        let (u, _) = Tensor::linalg_qr(&Tensor::randn([n, d], opts), "reduced");
        let (v, _) = Tensor::linalg_qr(&Tensor::randn([d, d], opts), "reduced");
        let sigma = Tensor::from_slice(s).diag(0);
        u.matmul(&sigma).matmul(&v.tr())
    }

    #[test]
    fn singular_values_of_a_known_matrix() {
        let s = [5.0, 3.0, 1.0, 0.5, 0.0];
        // more rows than one chunk, so the streaming sum is exercised
        let a = with_singular_values(CHUNK_ROWS + 123, &s);
        let got = singular_values(&a);
        for (g, e) in got.iter().zip(s) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {s:?}");
        }
    }

    #[test]
    fn truncation_is_the_best_low_rank_approximation() {
        let s = [4.0, 2.0, 1.0, 0.5];
        let a = with_singular_values(300, &s).to_kind(Kind::Float);
        let original = a.copy();
        let err = truncate_in_place(&a, 2);
        let expected = ((1.0f64 + 0.25) / (16.0 + 4.0 + 1.0 + 0.25)).sqrt();
        // the table is f32: its truncation error is exact to about f32 rounding
        assert!((err - expected).abs() < 1e-8, "{err} vs {expected}");
        let measured =
            (&original - &a).norm().double_value(&[]) / original.norm().double_value(&[]);
        assert!(
            (measured - expected).abs() < 1e-5,
            "{measured} vs {expected}"
        );
        let kept = singular_values(&a);
        assert!((kept[0] - 4.0).abs() < 1e-4 && (kept[1] - 2.0).abs() < 1e-4);
        assert!(kept[2] < 1e-3 && kept[3] < 1e-3, "{kept:?}");
    }

    #[test]
    fn tables_already_of_low_rank_stay() {
        let a = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
        let before = a.copy();
        assert_eq!(truncate_in_place(&a, 4), 0.0);
        assert_eq!(before, a);
    }
}
