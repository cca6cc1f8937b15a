//! Theorem 1 of paper 001, numerically, on the project's MLET embedding and SGD step.
//!
//! The paper writes the effective table as `W = W1 · W2` with `W1` (d x k) and `W2` (k x n); the
//! project stores it transposed, `E = T · P` (n x d) with `T` (n x k) and `P` (k x d). So
//! `W = Eᵀ`, `W1 = Pᵀ`, `W2 = Tᵀ`, and the gradient with respect to `W` is `G_W = G_Eᵀ`. With
//! `W1 = U1 S1 V1ᵀ` and `W2 = U2 S2 V2ᵀ` (full bases: `U1` is d x d, `V2` is n x n; singular
//! values past the rank are 0), the theorem says that one SGD step on the factors moves `W` along
//! `u1_i v2_jᵀ` by `-η (σ1(i)² + σ2(j)²) (u1_iᵀ G_W v2_j)` to first order. The full bases are
//! the eigenvectors of `W1 W1ᵀ` (d x d) and `W2ᵀ W2` (n x n), whose eigenvalues are the squared
//! singular values, zeros included.
use tch::{nn, Device, Kind, Tensor};

use mlet::config::{EmbeddingConfig, EmbeddingKind, OptimizerConfig, TableInit};
use mlet::embedding::{Embeddings, LookupIndex};
use mlet::training::{Optimizer, SparseGrad};

/// libtorch's generator is global and tests run in parallel threads (no test here trains a
/// whole run under it, so the library's lock serves).
use mlet::training::torch_rng_lock as rng_lock;

const BATCH: usize = 16;

/// One field before a step: its factors, `G_E` and, after the step, `ΔE`.
struct FieldStep {
    t: Tensor,
    p: Tensor,
    g: Tensor,
    delta: Tensor,
}

/// One SGD step of rate `lr` on an MLET embedding with fields `cards`, dimension `d`, inner
/// dimension `k`, under a fixed non-linear loss of the looked-up vectors (double precision).
fn sgd_step(lr: f64, cards: &[usize], d: usize, k: usize) -> Vec<FieldStep> {
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let cfg = EmbeddingConfig {
        dim: d,
        kind: EmbeddingKind::Mlet,
        k: Some(k),
        init_std: 0.5,
        table_init: TableInit::Xavier,
        table_std: 1e-4,
        sets: 1,
        hash: None,
    };
    let emb = Embeddings::new(&(vs.root() / "emb"), cards, &cfg).unwrap();
    let mut opt = Optimizer::new(
        &OptimizerConfig {
            lr,
            ..mlet::config::Family::Dlrm.optimizer()
        },
        &vs,
    );
    // skewed indices, so that rows repeat and most rows are not in the batch
    let f = cards.len();
    let cat: Vec<i64> = (0..BATCH * f)
        .map(|i| {
            let n = cards[i % f] as f64;
            let u = ((i * 7919 + 13) % 101) as f64 / 101.0;
            (u * u * n) as i64
        })
        .collect();
    let target = Tensor::randn(
        [BATCH as i64, f as i64, d as i64],
        (Kind::Double, Device::Cpu),
    );
    let loss_of = |out: &Tensor| (out.tanh() - &target).square().sum(Kind::Double);
    let index = LookupIndex::new(&cat, emb.offsets(), emb.cardinalities(), Device::Cpu).unwrap();

    // G_E = dL/dE at the collapsed table
    let before = emb.collapse().table;
    let e = before.detach().set_requires_grad(true);
    let out = e
        .index_select(0, &index.unique)
        .index_select(0, &index.inverse)
        .view([BATCH as i64, f as i64, d as i64]);
    loss_of(&out).backward();
    let g = e.grad();
    let proj = emb.projection.as_ref().unwrap().detach().copy();
    let tables = emb.table.detach().copy();

    let lookup = emb.lookup(&index);
    opt.zero_grad();
    loss_of(&lookup.output).backward();
    emb.backward(&lookup);
    opt.step(&[SparseGrad {
        name: "emb",
        table: &emb.table,
        lookup: &lookup,
        l2: 0.0,
    }]);
    let delta = emb.collapse().table - before;
    emb.offsets()
        .iter()
        .zip(emb.cardinalities())
        .enumerate()
        .map(|(i, (&off, &n))| FieldStep {
            t: tables.narrow(0, off, n),
            p: proj.get(i as i64),
            g: g.narrow(0, off, n),
            delta: delta.narrow(0, off, n),
        })
        .collect()
}

/// Eigen-decomposition of a symmetric matrix, descending: (λ, eigenvectors as columns).
fn eigh_desc(m: &Tensor) -> (Tensor, Tensor) {
    let (l, v) = m.linalg_eigh("L");
    (l.flip([0]), v.flip([1]))
}

/// A field's step in the theorem's basis, in the paper's orientation.
struct InBasis {
    /// `σ1(i)² + σ2(j)²`, d x n.
    weight: Tensor,
    /// `u1_iᵀ G_W v2_j`, d x n.
    g: Tensor,
    /// `u1_iᵀ ΔW v2_j` of the real step, d x n.
    actual: Tensor,
    /// `u1_iᵀ (-η (W1 W1ᵀ G_W + G_W W2ᵀ W2)) v2_j` (Eq. 2), d x n.
    eq2: Tensor,
}

fn in_basis(s: &FieldStep, lr: f64) -> InBasis {
    let w1 = s.p.tr(); // d x k
    let w2 = s.t.tr(); // k x n
    let g_w = s.g.tr(); // d x n
    let delta_w = s.delta.tr();
    let (s1_sq, u1) = eigh_desc(&w1.matmul(&w1.tr())); // d eigenvalues σ1(i)², zeros past k
    let (s2_sq, v2) = eigh_desc(&w2.tr().matmul(&w2)); // n eigenvalues σ2(j)², zeros past k
    let (s1_sq, s2_sq) = (s1_sq.clamp_min(0.0), s2_sq.clamp_min(0.0));
    let weight = s1_sq.unsqueeze(1) + s2_sq.unsqueeze(0);
    let to_basis = |m: &Tensor| u1.tr().matmul(m).matmul(&v2);
    let eq2 = (w1.matmul(&w1.tr()).matmul(&g_w) + g_w.matmul(&w2.tr()).matmul(&w2)) * -lr;
    InBasis {
        weight,
        g: to_basis(&g_w),
        actual: to_basis(&delta_w),
        eq2: to_basis(&eq2),
    }
}

fn norm(t: &Tensor) -> f64 {
    t.norm().double_value(&[])
}

/// Norms of the real step's error against the theorem, of its zero-weight part and of its
/// positive-weight part, summed over fields; and the count of zero-weight directions.
struct Measured {
    error: f64,
    zero_part: f64,
    positive_part: f64,
    predicted: f64,
    zero_count: i64,
}

fn measure(lr: f64, cards: &[usize], d: usize, k: usize) -> Measured {
    let mut m = Measured {
        error: 0.0,
        zero_part: 0.0,
        positive_part: 0.0,
        predicted: 0.0,
        zero_count: 0,
    };
    for s in sgd_step(lr, cards, d, k) {
        let b = in_basis(&s, lr);
        let theorem = &b.weight * &b.g * -lr;
        // the theorem is Eq. 2 written in the singular bases: equal up to rounding
        let identity = norm(&(&theorem - &b.eq2)) / norm(&b.eq2);
        assert!(identity < 1e-12, "Eq. 7 vs Eq. 2 in the basis: {identity}");
        let top = b.weight.max().double_value(&[]);
        let zero = b.weight.lt(1e-12 * top);
        m.zero_count += zero.sum(Kind::Int64).int64_value(&[]);
        let zero = zero.to_kind(Kind::Double);
        m.error += norm(&(&b.actual - &theorem)).powi(2);
        m.zero_part += norm(&(&b.actual * &zero)).powi(2);
        m.positive_part += norm(&(&b.actual * (1.0 - &zero))).powi(2);
        m.predicted += norm(&theorem).powi(2);
    }
    m.error = m.error.sqrt();
    m.zero_part = m.zero_part.sqrt();
    m.positive_part = m.positive_part.sqrt();
    m.predicted = m.predicted.sqrt();
    m
}

#[test]
fn k_below_d_leaves_directions_with_zero_first_order_weight() {
    let _rng = rng_lock();
    let (cards, d, k) = ([12usize, 9], 5, 3);
    let lrs = [1e-2, 5e-3, 2.5e-3];
    let runs: Vec<Measured> = lrs.iter().map(|&lr| measure(lr, &cards, d, k)).collect();
    // σ1(i) = 0 for i > k (W1 = Pᵀ has rank k < d) and σ2(j) = 0 for j > k (n > k): the
    // directions with both are (d - k)(n - k) per field
    let expected: usize = cards.iter().map(|n| (d - k) * (n - k)).sum();
    assert_eq!(runs[0].zero_count, expected as i64);
    for (lr, m) in lrs.iter().zip(&runs) {
        eprintln!(
            "lr {lr}: |actual - theorem| {:.3e}, zero-weight part {:.3e}, positive-weight part \
             {:.3e}, theorem {:.3e}",
            m.error, m.zero_part, m.positive_part, m.predicted
        );
        assert!(
            m.error < 0.05 * m.predicted,
            "first order does not dominate"
        );
        assert!(
            m.zero_part > 0.0,
            "the zero-weight directions did not move at all"
        );
        assert!(m.zero_part < 0.05 * m.positive_part);
    }
    for w in runs.windows(2) {
        let zero = w[0].zero_part / w[1].zero_part;
        let positive = w[0].positive_part / w[1].positive_part;
        let error = w[0].error / w[1].error;
        eprintln!("halving lr: zero-weight part / {zero:.4}, positive-weight part / {positive:.4}, error / {error:.4}");
        // the step is exactly quadratic in lr, and the zero-weight part has no linear term
        assert!(
            (zero - 4.0).abs() < 1e-6,
            "zero-weight part shrank by {zero}"
        );
        assert!(
            (1.8..2.2).contains(&positive),
            "positive part shrank by {positive}"
        );
        assert!(
            (3.0..5.0).contains(&error),
            "the error shrank by {error}, not ~4"
        );
    }
}

#[test]
fn k_above_d_weights_every_direction() {
    let _rng = rng_lock();
    let (cards, d, k) = ([12usize, 10], 4, 8);
    let lrs = [1e-2, 5e-3];
    let runs: Vec<Measured> = lrs.iter().map(|&lr| measure(lr, &cards, d, k)).collect();
    // W1 = Pᵀ has rank d, so every σ1(i) > 0 and no direction is left out
    assert_eq!(runs[0].zero_count, 0);
    assert!(runs[0].error < 0.05 * runs[0].predicted);
    let error = runs[0].error / runs[1].error;
    eprintln!("halving lr divided the error by {error:.4}");
    assert!(
        (3.0..5.0).contains(&error),
        "the error shrank by {error}, not ~4"
    );
}

#[test]
fn the_basis_is_the_singular_basis_of_the_factors() {
    let _rng = rng_lock();
    // the eigenvectors used above are singular vectors: σ from torch's SVD of the factor
    let s = sgd_step(1e-2, &[12], 5, 3).remove(0);
    let w1 = s.p.tr();
    let (s1_sq, u1) = eigh_desc(&w1.matmul(&w1.tr()));
    let (_, svd, _) = w1.svd(true, false);
    let sq: Vec<f64> = Vec::try_from(&s1_sq).unwrap();
    let sv: Vec<f64> = Vec::try_from(&svd).unwrap();
    assert_eq!(sv.len(), 3);
    for i in 0..5 {
        let expected = if i < 3 { sv[i] * sv[i] } else { 0.0 };
        assert!((sq[i] - expected).abs() < 1e-12, "{sq:?} vs {sv:?}");
    }
    // u1_i is a left singular vector: |W1ᵀ u1_i| = σ1(i)
    for i in 0..5 {
        let col = u1.select(1, i);
        let got = norm(&w1.tr().matmul(&col));
        assert!((got * got - sq[i as usize].max(0.0)).abs() < 1e-12);
    }
}
