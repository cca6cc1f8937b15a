//! One run's resolved settings. Every struct rejects unknown keys so that a typo is an error
//! naming the key instead of a silently ignored setting.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::data::SynthConfig;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Experiment name; a run's directory is `output/<name>/<run>`.
    pub name: String,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub embedding: EmbeddingConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default = "default_output")]
    pub output: PathBuf,
}

fn default_output() -> PathBuf {
    PathBuf::from("runs")
}

/// Where the examples come from. A prepared cache at `cache` is used as it is; otherwise it is
/// prepared there from `raw` (a file in `format`) or from the synthetic generator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default)]
    pub synthetic: Option<SynthConfig>,
    #[serde(default)]
    pub raw: Option<PathBuf>,
    #[serde(default)]
    pub format: Option<RawFormat>,
    /// Column schema for `format: csv`.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Categories seen fewer times in training map to the out-of-vocabulary row.
    #[serde(default = "one")]
    pub min_count: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFormat {
    Criteo,
    Avazu,
    Csv,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// DLRM (Naumov et al. 2019): bottom MLP on dense features to width d, pairwise dot
    /// products of all d-vectors, top MLP to one logit.
    Dlrm {
        /// Hidden widths of the bottom MLP; a last layer of width d is appended.
        #[serde(default = "dlrm_bottom")]
        bottom_mlp: Vec<usize>,
        /// Hidden widths of the top MLP; a last layer of width 1 is appended.
        #[serde(default = "dlrm_top")]
        top_mlp: Vec<usize>,
    },
}

fn dlrm_bottom() -> Vec<usize> {
    vec![512, 256, 128]
}

fn dlrm_top() -> Vec<usize> {
    vec![512, 256]
}

impl ModelConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Dlrm { .. } => "dlrm",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingKind {
    /// One `n x d` table per field.
    #[default]
    Single,
    /// MLET: an `n x k` table times a `k x d` projection per field, collapsed after training.
    Mlet,
}

/// How the (wide) tables are initialised. The Gaussian projection of MLET is set by `init_std`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TableInit {
    /// Glorot uniform, bound sqrt(6 / (n + width)): the MLET paper's choice.
    #[default]
    Xavier,
    /// Glorot normal, std sqrt(2 / (n + width)).
    XavierNormal,
    /// Uniform in ±1/sqrt(n), as DLRM's reference code does.
    UniformSqrtN,
    /// Normal(0, table_std²), as DeepCTR-Torch does (std 1e-4).
    Normal,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Embedding dimension d seen by the model (and kept for inference).
    pub dim: usize,
    #[serde(default)]
    pub kind: EmbeddingKind,
    /// MLET inner dimension (ignored for `single`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Std of MLET's Gaussian projection; 0.25 is the paper's DLRM setting.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    #[serde(default)]
    pub table_init: TableInit,
    /// Std for `table_init: normal`.
    #[serde(default = "default_table_std")]
    pub table_std: f64,
}

fn default_init_std() -> f64 {
    0.25
}

fn default_table_std() -> f64 {
    1e-4
}

impl EmbeddingConfig {
    /// The inner width of the trained table: k for MLET, d otherwise.
    pub fn width(&self) -> usize {
        match self.kind {
            EmbeddingKind::Single => self.dim,
            EmbeddingKind::Mlet => self.k.unwrap_or(0),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Plain SGD; embedding rows are updated only where the batch touched them.
    Sgd { lr: f64 },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd { lr: 0.2 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "one_usize")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// libtorch intra-op threads; all cores when absent.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Shuffle the training rows each epoch (seeded).
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Write a training-log line every this many batches.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Stop after this many batches (for quick checks); the whole epoch when absent.
    #[serde(default)]
    pub max_steps: Option<usize>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 1,
            batch_size: default_batch(),
            seed: 1,
            device: default_device(),
            threads: None,
            shuffle: true,
            log_every: default_log_every(),
            max_steps: None,
        }
    }
}

fn one_usize() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    128
}
fn default_device() -> String {
    "cpu".into()
}
fn default_log_every() -> usize {
    200
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            batch_size: default_eval_batch(),
        }
    }
}

fn default_eval_batch() -> usize {
    8192
}

impl RunConfig {
    /// Settings that parse but cannot run, reported with the key that holds them.
    pub fn validate(&self) -> Result<(), String> {
        let e = &self.embedding;
        if e.dim == 0 {
            return Err("embedding.dim: must be at least 1".into());
        }
        if e.kind == EmbeddingKind::Mlet {
            match e.k {
                None => return Err("embedding.k: required when embedding.kind is mlet".into()),
                Some(0) => return Err("embedding.k: must be at least 1 (got 0)".into()),
                Some(_) => {}
            }
            if !(e.init_std.is_finite() && e.init_std > 0.0) {
                return Err(format!(
                    "embedding.init_std: must be a positive number (got {})",
                    e.init_std
                ));
            }
        }
        if e.table_init == TableInit::Normal && !(e.table_std.is_finite() && e.table_std > 0.0) {
            return Err("embedding.table_std: must be a positive number".into());
        }
        match &self.model {
            ModelConfig::Dlrm {
                bottom_mlp,
                top_mlp,
            } => {
                if bottom_mlp.contains(&0) {
                    return Err("model.bottom_mlp: layer widths must be at least 1".into());
                }
                if top_mlp.contains(&0) {
                    return Err("model.top_mlp: layer widths must be at least 1".into());
                }
            }
        }
        match self.optimizer {
            OptimizerConfig::Sgd { lr } if !(lr.is_finite() && lr > 0.0) => {
                return Err(format!(
                    "optimizer.lr: must be a positive number (got {lr})"
                ));
            }
            _ => {}
        }
        let t = &self.training;
        if t.epochs == 0 {
            return Err("training.epochs: must be at least 1".into());
        }
        if t.batch_size == 0 {
            return Err("training.batch_size: must be at least 1".into());
        }
        if t.log_every == 0 {
            return Err("training.log_every: must be at least 1".into());
        }
        if t.threads == Some(0) {
            return Err("training.threads: must be at least 1".into());
        }
        if self.eval.batch_size == 0 {
            return Err("eval.batch_size: must be at least 1".into());
        }
        let d = &self.data;
        if d.synthetic.is_some() && d.raw.is_some() {
            return Err("data: give either `synthetic` or `raw`, not both".into());
        }
        if d.synthetic.is_none() && d.raw.is_none() && d.cache.is_none() {
            return Err(
                "data: give `synthetic`, `raw` (with `format`) or a prepared `cache`".into(),
            );
        }
        if d.raw.is_some() && d.format.is_none() {
            return Err("data.format: required with data.raw (criteo, avazu or csv)".into());
        }
        if d.format == Some(RawFormat::Csv) && d.schema.is_none() {
            return Err("data.schema: required with format csv".into());
        }
        Ok(())
    }
}
