//! DLRM's dot interaction: pairwise inner products of the dense vector and all embeddings.
use tch::{Device, Tensor};

pub struct DotInteraction {
    /// Flat positions of the strictly lower triangle of the `(F+1) x (F+1)` Gram matrix.
    lower: Tensor,
}

impl DotInteraction {
    pub fn new(num_fields: usize, device: Device) -> Self {
        let n = num_fields as i64 + 1;
        let lower: Vec<i64> = (0..n)
            .flat_map(|i| (0..i).map(move |j| i * n + j))
            .collect();
        DotInteraction {
            lower: Tensor::from_slice(&lower).to_device(device),
        }
    }

    /// Output width for `F` fields and dimension `d`: d + (F+1)F/2.
    pub fn output_width(num_fields: usize, dim: usize) -> usize {
        dim + (num_fields + 1) * num_fields / 2
    }

    /// `dense`: `[B, d]`, `emb`: `[B, F, d]` → `[B, d + (F+1)F/2]` (the dense vector first,
    /// then the products, as DLRM concatenates them).
    pub fn forward(&self, dense: &Tensor, emb: &Tensor) -> Tensor {
        let all = Tensor::cat(&[dense.unsqueeze(1), emb.shallow_clone()], 1);
        let gram = all.bmm(&all.transpose(1, 2)).flatten(1, -1);
        let pairs = gram.index_select(1, &self.lower);
        Tensor::cat(&[dense.shallow_clone(), pairs], 1)
    }
}
