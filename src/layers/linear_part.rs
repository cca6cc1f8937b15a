//! The linear ("wide") logit of DeepCTR-Torch models: the per-category weights of every field
//! (looked up by the model's linear table) plus a linear map of the dense features.
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct LinearPart {
    /// `[num_dense, 1]`, DeepCTR's `linear_model.weight`; absent without dense features.
    dense_weight: Option<Tensor>,
}

impl LinearPart {
    /// Dense weight ~ N(0, init_std²) as DeepCTR-Torch initialises it.
    pub fn new(path: &nn::Path, num_dense: usize, init_std: f64) -> LinearPart {
        let dense_weight =
            (num_dense > 0).then(|| path.randn("weight", &[num_dense as i64, 1], 0.0, init_std));
        LinearPart { dense_weight }
    }

    /// `sparse`: `[B, F, 1]` per-category weights, `dense`: `[B, m]` → `[B, 1]`.
    pub fn forward(&self, sparse: &Tensor, dense: &Tensor) -> Tensor {
        let logit = sparse.sum_dim_intlist(1, false, sparse.kind());
        match &self.dense_weight {
            Some(w) => logit + dense.matmul(w),
            None => logit,
        }
    }

    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.dense_weight
            .iter()
            .map(|w| ("linear_model.weight".to_string(), w.shallow_clone()))
            .collect()
    }
}
