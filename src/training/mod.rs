//! Training and evaluation of one run: optimizer, one step, the loop, checkpoints, evaluation,
//! run directory and its metrics.
mod checkpoint;
mod dense_update;
mod device;
mod early_stop;
mod evaluation;
pub mod memory;
mod optimizer;
mod progress;
mod row_update;
mod run_dir;
mod run_lock;
mod run_metrics;
mod runtime;
mod step;
mod trainer;

pub use checkpoint::torch_rng_lock;
pub use device::{
    describe as describe_device, load_cuda_library, load_cuda_library_if_driver, parse_device,
};
pub use early_stop::{BEST_WEIGHTS, EPOCHS_HEADER, EPOCHS_LOG};
pub use evaluation::{eval_batch_size, evaluate_split, evaluate_trained, predict, Evaluation};
pub use memory::{peak_rss_bytes, reset_peak_rss, MemoryBudget, PhasePeak};
pub use optimizer::{Optimizer, SparseGrad};
pub use run_dir::{RunDir, CHECKPOINT, METRICS};
pub use run_lock::{Acquired, RunLock};
pub use run_metrics::{Divergence, EmbeddingParams, RunMetrics, TrainSummary};
pub use runtime::Runtime;
pub use step::{batch_tensors, train_step};
pub use trainer::{train_run, train_run_interrupted, RunOptions};

/// The weights and the optimizer state, in the run directory and in its checkpoint.
pub const WEIGHTS: &str = "weights.safetensors";
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";

/// Versions recorded in every run directory.
pub fn versions() -> serde_json::Value {
    serde_json::json!({
        "mlet": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("MLET_GIT_COMMIT"),
        "tch": "0.26.0",
        "torch": env!("MLET_TORCH_VERSION"),
    })
}
