//! `mlet`: multi-layer embedding training (MLET) for CTR models on libtorch.
//!
//! Data flows one way: `data` (raw files → memory-mapped cache → batches) → `embedding`
//! (single-layer or MLET tables) → `models` (built from `layers`) → `training` (optimizer,
//! loop, run directories) → `metrics` → `experiments` (grids) → `results` and `plots`. `config` holds the YAML experiment schema and never
//! touches tensors; `cli` turns command lines into calls of the library.
pub mod analysis;
mod atomic;
pub mod cli;
pub mod config;
mod cpu_f32;
pub mod data;
pub mod embedding;
pub mod experiments;
pub mod export;
#[cfg(test)]
mod fuzz;
mod grad;
mod huge_pages;
pub mod layers;
pub mod metrics;
pub mod models;
mod parallel;
pub mod plots;
pub mod results;
pub mod serve;
mod simd;
pub mod tensor_file;
#[cfg(test)]
mod test_values;
mod torch_error;
pub mod training;
