//! IPNN's inner-product layer (Qu et al. 2016): the inner product of every pair of field
//! embeddings, pairs (i, j), i < j, in row-major order — (0,1), (0,2), …, (0,F−1), (1,2), … —
//! as DeepCTR-Torch's `InnerProductLayer` and pytorch-fm's `InnerProductNetwork` (paper 004's
//! code) list them.
//!
//! Computed as the batched Gram matrix `E Eᵀ` `[B, F, F]` and one gather of its strict upper
//! triangle: smaller than the `[B, F(F−1)/2, d]` pair products whenever F < 2d + 1.
use tch::{Device, Tensor};

#[derive(Debug)]
pub struct InnerProduct {
    /// Flat positions `i·F + j` of the pairs in the `F × F` Gram matrix, in output order.
    upper: Tensor,
    num_fields: usize,
}

impl InnerProduct {
    pub fn new(num_fields: usize, device: Device) -> InnerProduct {
        let f = num_fields as i64;
        let upper: Vec<i64> = (0..f)
            .flat_map(|i| (i + 1..f).map(move |j| i * f + j))
            .collect();
        InnerProduct {
            upper: Tensor::from_slice(&upper).to_device(device),
            num_fields,
        }
    }

    /// F(F−1)/2.
    pub fn output_width(num_fields: usize) -> usize {
        num_fields * num_fields.saturating_sub(1) / 2
    }

    /// `emb` `[B, F, d]` → `[B, F(F−1)/2]`, column p = ⟨e_i, e_j⟩ for the p-th pair.
    pub fn forward(&self, emb: &Tensor) -> Tensor {
        assert_eq!(
            emb.size()[1],
            self.num_fields as i64,
            "InnerProduct built for {} fields, given {:?}",
            self.num_fields,
            emb.size()
        );
        emb.bmm(&emb.transpose(1, 2))
            .flatten(1, -1)
            .index_select(1, &self.upper)
    }
}
