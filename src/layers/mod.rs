//! Building blocks shared by the models.
mod attention;
mod cin;
mod cin_loops;
mod cross;
mod cross_v2;
mod dnn;
mod final_mlp;
mod fm;
mod fwfm;
mod inner_product;
mod interaction;
mod linear_part;
mod mlp;
mod mlp_block;

pub use attention::InteractingLayer;
pub use cin::{Cin, CinTape};
pub use cross::CrossNet;
pub use cross_v2::CrossNetV2;
pub use dnn::Dnn;
pub use final_mlp::{AggregationInit, FeatureSelection, InteractionAggregation};
pub use fm::{bi_interaction, fm_cross_term};
pub use fwfm::FieldWeightedPooling;
pub use inner_product::InnerProduct;
pub use interaction::DotInteraction;
pub use linear_part::LinearPart;
pub use mlp::Mlp;
pub use mlp_block::{batch_norm1d, LinearInit, MlpBlock, MlpBlockConfig};
