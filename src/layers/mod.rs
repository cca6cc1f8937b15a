//! Building blocks shared by the models.
mod interaction;
mod mlp;

pub use interaction::DotInteraction;
pub use mlp::Mlp;
