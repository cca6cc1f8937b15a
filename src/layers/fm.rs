//! Factorization-machine second-order term (Rendle 2010), as DeepCTR-Torch's `FM`.
use tch::Tensor;

/// `emb`: `[B, F, d]` → `[B, 1]`: ½ Σ_k ((Σ_f v_fk)² − Σ_f v_fk²).
pub fn fm_cross_term(emb: &Tensor) -> Tensor {
    let square_of_sum = emb.sum_dim_intlist(1, true, emb.kind()).square();
    let sum_of_square = emb.square().sum_dim_intlist(1, true, emb.kind());
    (square_of_sum - sum_of_square).sum_dim_intlist(2, false, emb.kind()) * 0.5
}

/// NFM's bi-interaction pooling: `emb` `[B, F, d]` → `[B, d]`, ½ ((Σ_f v_f)² − Σ_f v_f²).
pub fn bi_interaction(emb: &Tensor) -> Tensor {
    let square_of_sum = emb.sum_dim_intlist(1, false, emb.kind()).square();
    let sum_of_square = emb.square().sum_dim_intlist(1, false, emb.kind());
    (square_of_sum - sum_of_square) * 0.5
}
