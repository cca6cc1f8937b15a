//! Training and evaluation of one run: optimizer, loop, run directory.
mod device;
mod optimizer;
mod run_dir;
mod trainer;

pub use device::{describe as describe_device, parse_device};
pub use optimizer::{Optimizer, SparseGrad};
pub use run_dir::{RunDir, CHECKPOINT, METRICS};
pub use trainer::{
    batch_tensors, predict, train_run, train_run_interrupted, train_step, Divergence,
    EmbeddingParams, RunMetrics, RunOptions, TrainSummary, OPTIMIZER_STATE, WEIGHTS,
};

/// Versions recorded in every run directory.
pub fn versions() -> serde_json::Value {
    serde_json::json!({
        "mlet": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("MLET_GIT_COMMIT"),
        "tch": "0.26.0",
        "torch": env!("MLET_TORCH_VERSION"),
    })
}
