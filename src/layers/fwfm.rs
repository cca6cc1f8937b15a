//! The field-weighted pooling of paper 004's NFwFM (thuml/Multi-Embedding `torchfm/model/fwfm.py`,
//! class `NFwFM`): FwFM's field-pair weights (Pan et al. 2018) kept per embedding coordinate
//! instead of summed, so the pooled `[B, d]` vector can feed an MLP as NFM's bi-interaction does.
//!
//! Exactly what the authors' code sums: out[b, k] = Σ_{i=1..F} Σ_{j=1..F} w_ij · e_bik · e_bjk
//! over ALL ordered pairs — the diagonal i = j (w_ii e_i²) included, and (i, j) and (j, i) both,
//! with w not symmetrised — i.e. `einsum("bik,ij,bjk->bk", e, w, e)`. Their code materialises
//! the `[B, d, F, F]` outer products; here it is e ⊙ (W e) summed over fields, `[B, F, d]` at most.
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct FieldWeightedPooling {
    /// `[1, F, F]`, the authors' `weight`.
    weight: Tensor,
}

impl FieldWeightedPooling {
    /// `weight` ~ N(0, 1), as the authors' `torch.randn`. VarStore name `weight`.
    pub fn new(path: &nn::Path, num_fields: usize) -> FieldWeightedPooling {
        let f = num_fields as i64;
        FieldWeightedPooling {
            weight: path.randn("weight", &[1, f, f], 0.0, 1.0),
        }
    }

    /// `emb` `[B, F, d]` → `[B, d]`.
    pub fn forward(&self, emb: &Tensor) -> Tensor {
        // (W e)[b, i, k] = Σ_j w_ij e_bjk: [F, F] · [B, F, d] broadcasts over the batch.
        let mixed = self.weight.squeeze_dim(0).matmul(emb);
        (emb * mixed).sum_dim_intlist(1, false, emb.kind())
    }

    /// `{prefix}weight` `[1, F, F]`.
    pub fn state_dict(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![(format!("{prefix}weight"), self.weight.shallow_clone())]
    }
}
