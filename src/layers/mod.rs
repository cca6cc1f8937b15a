//! Building blocks shared by the models.
mod attention;
mod cin;
mod cross;
mod dnn;
mod fm;
mod interaction;
mod linear_part;
mod mlp;

pub use attention::InteractingLayer;
pub use cin::Cin;
pub use cross::CrossNet;
pub use dnn::Dnn;
pub use fm::{bi_interaction, fm_cross_term};
pub use interaction::DotInteraction;
pub use linear_part::LinearPart;
pub use mlp::Mlp;
