//! DLRM (Naumov et al., 2019, arXiv:1906.00091) as configured in the MLET paper: a bottom MLP
//! maps the dense features to width d, the dot interaction takes pairwise inner products of that
//! vector and the F embeddings, and a top MLP maps [dense vector, products] to one logit.
use anyhow::{bail, Result};
use tch::{nn, nn::Module, Tensor};

use super::{Features, Network, NetworkShape};
use crate::config::DlrmConfig;
use crate::layers::{DotInteraction, Mlp};

pub struct Dlrm {
    bottom: Mlp,
    interaction: DotInteraction,
    top: Mlp,
    activation_floats: usize,
}

impl Dlrm {
    pub fn new(path: &nn::Path, shape: &NetworkShape, cfg: &DlrmConfig) -> Result<Dlrm> {
        if shape.num_dense == 0 {
            bail!("DLRM's bottom MLP needs dense features; this data set has none");
        }
        let (fields, dim) = (shape.fields, shape.dim);
        let bottom: Vec<usize> = std::iter::once(shape.num_dense)
            .chain(cfg.bottom_mlp.iter().copied())
            .chain(std::iter::once(dim))
            .collect();
        let top: Vec<usize> = std::iter::once(DotInteraction::output_width(fields, dim))
            .chain(cfg.top_mlp.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        // both MLPs' layers, and the interaction's [F+1, d] stack and its Gram matrix
        let activation_floats = bottom.iter().sum::<usize>()
            + (fields + 1) * (dim + fields + 1)
            + top.iter().sum::<usize>();
        Ok(Dlrm {
            // DLRM applies ReLU after the bottom MLP's last layer too.
            bottom: Mlp::new(&(path / "bottom"), &bottom, true),
            interaction: DotInteraction::new(fields, path.device()),
            top: Mlp::new(&(path / "top"), &top, false),
            activation_floats,
        })
    }
}

impl Network for Dlrm {
    fn forward(&self, x: &Features, _train: bool) -> Tensor {
        let bottom = self.bottom.forward(x.dense);
        let z = self.interaction.forward(&bottom, x.emb);
        self.top.forward(&z).squeeze_dim(1)
    }

    fn activation_floats_per_row(&self) -> usize {
        self.activation_floats
    }
}
