//! What `metrics.json` holds for a finished (or diverged) run.
use serde::{Deserialize, Serialize};

use super::runtime::Runtime;
use crate::metrics::{FrequencyMetrics, Metrics};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub samples: usize,
    /// Mean loss over the last logging interval (NaN, written null, when training diverged).
    #[serde(deserialize_with = "null_as_nan")]
    pub final_loss: f64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbeddingParams {
    /// Parameters trained (MLET: Σn·k + F·k·d).
    pub training: i64,
    /// Parameters kept for inference after collapsing (Σn·d).
    pub inference: i64,
}

/// Everything `metrics.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMetrics {
    pub experiment: String,
    pub run: String,
    pub valid: Option<Metrics>,
    pub test: Option<Metrics>,
    pub train: TrainSummary,
    pub embedding_params: EmbeddingParams,
    /// Largest |logit difference| between the trained and the collapsed model on test rows.
    #[serde(deserialize_with = "null_as_nan")]
    pub collapse_max_abs_diff: f64,
    pub eval_seconds: f64,
    /// Set when a non-finite loss stopped training; no evaluation then.
    #[serde(default)]
    pub diverged: Option<Divergence>,
    /// The test split by sample frequency: Table 4's sets A and B and every decile (absent for
    /// diverged runs and runs written before it existed).
    #[serde(default)]
    pub test_by_frequency: Option<FrequencyMetrics>,
    /// Time per step and peak memory.
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// With `training.early_stopping`: the epoch whose weights were restored and evaluated
    /// (0: the initial weights), the epochs trained and whether training stopped before
    /// `training.epochs` (and `max_steps`) ran out. Absent without early stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_run: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<bool>,
}

/// JSON has no NaN: serde_json writes it as null, and this reads null back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Where training stopped on a non-finite loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Divergence {
    pub step: usize,
    pub epoch: usize,
    pub samples: usize,
    pub loss: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training diverged: the loss is {} at step {} (epoch {}, {} samples seen); try a \
             smaller learning rate or embedding.init_std",
            self.loss, self.step, self.epoch, self.samples
        )
    }
}
