//! Initialisation of one field's slice of the table (`[n, width]`).
use tch::Tensor;

use crate::config::{EmbeddingConfig, TableInit};

pub(super) fn fill_table(slice: &Tensor, cfg: &EmbeddingConfig) {
    let (n, width) = (slice.size()[0] as f64, slice.size()[1] as f64);
    let mut slice = slice.shallow_clone();
    match cfg.table_init {
        TableInit::Xavier => {
            let bound = (6.0 / (n + width)).sqrt();
            let _ = slice.uniform_(-bound, bound);
        }
        TableInit::XavierNormal => {
            let _ = slice.normal_(0.0, (2.0 / (n + width)).sqrt());
        }
        TableInit::UniformSqrtN => {
            let bound = 1.0 / n.sqrt();
            let _ = slice.uniform_(-bound, bound);
        }
        TableInit::Normal => {
            let _ = slice.normal_(0.0, cfg.table_std);
        }
    }
}
