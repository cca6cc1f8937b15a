//! One run's resolved settings. Every struct rejects unknown keys so that a typo is an error
//! naming the key instead of a silently ignored setting.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::models::{
    AutointConfig, DcnConfig, Dcnv2Config, DeepfmConfig, DlrmConfig, DnnConfig, FinalMlpConfig,
    IpnnConfig, L2Config, NfmConfig, NfwfmConfig, WdlConfig, XdeepfmConfig,
};
use crate::data::{InputFormat, SynthConfig};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Experiment name; a run's directory is `output/<name>/<run>`.
    pub name: String,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub embedding: EmbeddingConfig,
    /// Absent in an experiment file: the model family's (see [`Family`]).
    pub optimizer: OptimizerConfig,
    /// Keys absent in an experiment file: the model family's (see [`Family`]).
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
/// prepared there from `raw` (a file in `format`, split by the format's rule), from `train`,
/// `valid` and `test` (a predefined split, vocabulary from `train` alone) or from the synthetic
/// generator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub synthetic: Option<SynthConfig>,
    pub raw: Option<PathBuf>,
    /// A predefined split: the training file (all three of train, valid, test are required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    pub format: Option<RawFormat>,
    /// Column schema for `format: csv`.
    pub schema: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    /// Categories seen fewer times in training map to the out-of-vocabulary row.
    pub min_count: u32,
    /// A seeded random split with these fractions, replacing the format's usual one (Criteo's
    /// day split, 90/5/5 random otherwise). Not with a predefined split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<DataSplit>,
}

/// `data.split`: each data line goes to the test split with probability `test`, to validation
/// with probability `valid`, else to training; a pure function of (`seed`, line position), so
/// the sizes are binomial around the fractions (see docs/data.md). Paper 004's 8/1/1 split with
/// seed 0 is `{valid: 0.1, test: 0.1, seed: 0}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSplit {
    pub valid: f64,
    pub test: f64,
    #[serde(default)]
    pub seed: u64,
}

impl DataSplit {
    /// The prepare rule of this split.
    pub fn rule(&self) -> crate::data::SplitRule {
        crate::data::SplitRule::Random {
            valid_fraction: self.valid,
            test_fraction: self.test,
        }
    }

    /// Part of the default cache name: `split0.1-0.1-seed0`.
    pub fn tag(&self) -> String {
        format!("split{}-{}-seed{}", self.valid, self.test, self.seed)
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
        for (key, f) in [("valid", self.valid), ("test", self.test)] {
            if !ok(f) {
                return Err(format!("data.split.{key}: a fraction in [0, 1) (got {f})"));
            }
        }
        if self.valid + self.test >= 1.0 {
            return Err(format!(
                "data.split: valid ({}) and test ({}) must sum to less than 1, leaving rows to \
                 train on",
                self.valid, self.test
            ));
        }
        Ok(())
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            synthetic: None,
            raw: None,
            train: None,
            valid: None,
            test: None,
            format: None,
            schema: None,
            cache: None,
            min_count: 1,
            split: None,
        }
    }
}

impl DataConfig {
    /// The prepared cache: `cache` when given, else where the data set's is by default (with
    /// `-split<valid>-<test>-seed<seed>` appended under a `split`, so that caches of one source
    /// split two ways do not replace each other).
    pub fn cache_dir(&self) -> PathBuf {
        match &self.cache {
            Some(dir) => dir.clone(),
            None if self.split.is_some() => {
                let base = DataConfig {
                    split: None,
                    ..self.clone()
                }
                .cache_dir();
                let tag = self.split.as_ref().map(DataSplit::tag).unwrap_or_default();
                let mut name = base.file_name().unwrap_or_default().to_os_string();
                name.push("-");
                name.push(tag);
                base.with_file_name(name)
            }
            None => {
                let files = match self.split_files() {
                    Some((train, valid, test)) => vec![train, valid, test],
                    None => self.raw.as_deref().into_iter().collect(),
                };
                crate::data::default_cache_dir(
                    self.synthetic.as_ref(),
                    &files,
                    self.input_format().as_ref(),
                    self.min_count,
                )
            }
        }
    }

    /// The train, valid and test files of a predefined split.
    pub fn split_files(&self) -> Option<(&Path, &Path, &Path)> {
        Some((
            self.train.as_deref()?,
            self.valid.as_deref()?,
            self.test.as_deref()?,
        ))
    }

    /// How `raw` is read (None: no format given, or `csv` without its schema).
    pub fn input_format(&self) -> Option<InputFormat> {
        Some(match self.format? {
            RawFormat::Criteo => InputFormat::Criteo,
            RawFormat::Avazu => InputFormat::Avazu,
            RawFormat::Csv => InputFormat::Csv {
                schema: self.schema.clone()?,
            },
        })
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFormat {
    Criteo,
    Avazu,
    Csv,
}

/// `model`: the kind (`kind: deepfm`) and that model's settings (see `config::models`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    Dlrm(DlrmConfig),
    Wdl(WdlConfig),
    Deepfm(DeepfmConfig),
    Xdeepfm(XdeepfmConfig),
    Dcn(DcnConfig),
    Autoint(AutointConfig),
    Nfm(NfmConfig),
    /// Paper 004's models; they take `embedding.sets` above 1 (as xDeepFM does).
    Dnn(DnnConfig),
    Ipnn(IpnnConfig),
    Nfwfm(NfwfmConfig),
    Dcnv2(Dcnv2Config),
    Finalmlp(FinalMlpConfig),
}

impl ModelConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Dlrm(_) => "dlrm",
            ModelConfig::Wdl(_) => "wdl",
            ModelConfig::Deepfm(_) => "deepfm",
            ModelConfig::Xdeepfm(_) => "xdeepfm",
            ModelConfig::Dcn(_) => "dcn",
            ModelConfig::Autoint(_) => "autoint",
            ModelConfig::Nfm(_) => "nfm",
            ModelConfig::Dnn(_) => "dnn",
            ModelConfig::Ipnn(_) => "ipnn",
            ModelConfig::Nfwfm(_) => "nfwfm",
            ModelConfig::Dcnv2(_) => "dcnv2",
            ModelConfig::Finalmlp(_) => "finalmlp",
        }
    }

    /// The kinds that take several embedding sets (`embedding.sets`).
    pub const MULTI_EMBEDDING_KINDS: [&'static str; 6] =
        ["dnn", "ipnn", "nfwfm", "dcnv2", "finalmlp", "xdeepfm"];

    pub fn supports_sets(&self) -> bool {
        Self::MULTI_EMBEDDING_KINDS.contains(&self.name())
    }

    pub fn family(&self) -> Family {
        Family::of_kind(self.name())
    }

    /// The L2 settings (DLRM and paper 004's models have none: the latter regularise through
    /// the optimizer's weight decay, as their authors do).
    pub fn l2(&self) -> L2Config {
        match self {
            ModelConfig::Wdl(c) => c.l2.clone(),
            ModelConfig::Deepfm(c) => c.l2.clone(),
            ModelConfig::Xdeepfm(c) => c.l2.clone(),
            ModelConfig::Dcn(c) => c.l2.clone(),
            ModelConfig::Autoint(c) => c.l2.clone(),
            ModelConfig::Nfm(c) => c.l2.clone(),
            ModelConfig::Dlrm(_)
            | ModelConfig::Dnn(_)
            | ModelConfig::Ipnn(_)
            | ModelConfig::Nfwfm(_)
            | ModelConfig::Dcnv2(_)
            | ModelConfig::Finalmlp(_) => L2Config::NONE,
        }
    }

    /// Settings that parse but cannot run, reported with the key that holds them (`model.…`).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ModelConfig::Dlrm(c) => c.validate(),
            ModelConfig::Wdl(c) => c.validate(),
            ModelConfig::Deepfm(c) => c.validate(),
            ModelConfig::Xdeepfm(c) => c.validate(),
            ModelConfig::Dcn(c) => c.validate(),
            ModelConfig::Autoint(c) => c.validate(),
            ModelConfig::Nfm(c) => c.validate(),
            ModelConfig::Dnn(c) => c.validate(),
            ModelConfig::Ipnn(c) => c.validate(),
            ModelConfig::Nfwfm(c) => c.validate(),
            ModelConfig::Dcnv2(c) => c.validate(),
            ModelConfig::Finalmlp(c) => c.validate(),
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
    /// Multi-embedding (paper 004): independent embedding sets per field, each looked up and fed
    /// to its own copy of the model's interaction; 1 is a plain (single) embedding.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub sets: usize,
    /// The modulo hashing trick on some fields' ids (see `embedding::hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashConfig>,
}

/// `embedding.hash`: which fields have their ids mapped to `id % buckets` (one of `largest`
/// and `fields`) and how many buckets they get (one of `fraction` and `buckets`). Checked
/// against the data when a run starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HashConfig {
    /// The this-many fields of largest cardinality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest: Option<usize>,
    /// Fields by name (the data cache's field names, e.g. `C3` or `device_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Buckets as a fraction of each field's cardinality (rounded up), in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// The same number of buckets for every hashed field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<usize>,
}

impl HashConfig {
    /// What can be checked without the data.
    pub fn validate(&self) -> Result<(), String> {
        match (self.largest, &self.fields) {
            (Some(_), Some(_)) => {
                return Err("embedding.hash: give either `largest` or `fields`, not both".into())
            }
            (None, None) => {
                return Err(
                    "embedding.hash: give `largest` (the n largest fields) or `fields` (by name)"
                        .into(),
                )
            }
            (Some(0), None) => {
                return Err("embedding.hash.largest: must be at least 1 (got 0)".into())
            }
            (None, Some(f)) if f.is_empty() => {
                return Err("embedding.hash.fields: name at least one field".into())
            }
            _ => {}
        }
        match (self.fraction, self.buckets) {
            (Some(_), Some(_)) => {
                Err("embedding.hash: give either `fraction` or `buckets`, not both".into())
            }
            (None, None) => Err(
                "embedding.hash: give `fraction` (of each field's cardinality) or `buckets`".into(),
            ),
            (Some(p), None) if !(p > 0.0 && p < 1.0) => Err(format!(
                "embedding.hash.fraction: a number in (0, 1) (got {p})"
            )),
            (None, Some(0)) => Err("embedding.hash.buckets: must be at least 1 (got 0)".into()),
            _ => Ok(()),
        }
    }
}

fn default_init_std() -> f64 {
    EmbeddingConfig::DEFAULT_INIT_STD
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn default_table_std() -> f64 {
    1e-4
}

impl EmbeddingConfig {
    /// σ of MLET's projection when none is given: the paper's DLRM setting.
    pub const DEFAULT_INIT_STD: f64 = 0.25;

    /// What an `embedding:` section with only `dim`, `kind` and `k` gives.
    pub fn new(dim: usize, kind: EmbeddingKind, k: Option<usize>) -> EmbeddingConfig {
        EmbeddingConfig {
            dim,
            kind,
            k,
            init_std: default_init_std(),
            table_init: TableInit::default(),
            table_std: default_table_std(),
            sets: one(),
            hash: None,
        }
    }

    /// The inner width of the trained table: k for MLET, d otherwise.
    pub fn width(&self) -> usize {
        match self.kind {
            EmbeddingKind::Single => self.dim,
            EmbeddingKind::Mlet => self.k.unwrap_or(0),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adagrad,
    Adam,
}

/// The optimizer. Embedding rows are always updated sparsely (only the rows a batch touched,
/// with lazy, row-wise state for Adagrad and Adam). `kind` and `lr` are required in a section
/// that names another optimizer than the model family's default ([`Family::optimizer`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// Learning rate of the embedding tables (and MLET projections); `lr` when absent.
    #[serde(default)]
    pub embedding_lr: Option<f64>,
    /// Coupled L2, added to the gradient as torch.optim's SGD, Adagrad and Adam do (not AdamW);
    /// on embedding tables only to the rows a batch looks up (docs/training.md).
    #[serde(default)]
    pub weight_decay: f64,
    /// Adagrad default 1e-10, Adam default 1e-8.
    #[serde(default)]
    pub eps: Option<f64>,
    /// Adam's (β1, β2).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adagrad's initial accumulator value.
    #[serde(default)]
    pub initial_accumulator_value: f64,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

impl OptimizerConfig {
    /// `kind` at `lr` with every other setting at its default (torch.optim's).
    pub fn new(kind: OptimizerKind, lr: f64) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            lr,
            embedding_lr: None,
            weight_decay: 0.0,
            eps: None,
            betas: default_betas(),
            initial_accumulator_value: 0.0,
        }
    }
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adagrad => "adagrad",
            OptimizerKind::Adam => "adam",
        }
    }
}

/// How the batch loss is reduced: DLRM averages, DeepCTR-Torch sums (which scales its learning
/// rates accordingly).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    #[default]
    Mean,
    Sum,
}

/// Absent keys take [`Default`] (DLRM's); an experiment file's absent keys take its model
/// family's ([`Family::training`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; all cores when absent.
    pub threads: Option<usize>,
    /// Shuffle the training rows each epoch (seeded).
    pub shuffle: bool,
    /// Write a training-log line every this many batches.
    pub log_every: usize,
    /// Stop after this many batches (for quick checks); the whole epoch when absent.
    pub max_steps: Option<usize>,
    pub loss_reduction: LossReduction,
    /// Write a resumable checkpoint into the partial run directory every this many steps
    /// (see docs/training.md); none when absent.
    pub checkpoint_every: Option<usize>,
    /// Evaluate on the validation split before training and after every epoch, stop when
    /// `patience` epochs pass without improvement and restore the best epoch's weights before
    /// the test evaluation (see docs/training.md). Off when absent (or `null`, which turns a
    /// model family's default off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

/// `training.early_stopping`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without an improvement of the validation metric after which training stops.
    pub patience: usize,
    /// The validation metric watched: `auc` (higher is better) or `logloss` (lower is better).
    #[serde(default)]
    pub metric: StopMetric,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    #[default]
    Auc,
    Logloss,
}

impl StopMetric {
    pub fn name(self) -> &'static str {
        match self {
            StopMetric::Auc => "auc",
            StopMetric::Logloss => "logloss",
        }
    }

    /// Whether `new` is strictly better than `old` (any finite value beats NaN).
    pub fn improves(self, new: f64, old: f64) -> bool {
        if !new.is_finite() {
            return false;
        }
        if !old.is_finite() {
            return true;
        }
        match self {
            StopMetric::Auc => new > old,
            StopMetric::Logloss => new < old,
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 1,
            batch_size: 128,
            seed: 1,
            device: "cpu".into(),
            threads: None,
            shuffle: true,
            log_every: 200,
            max_steps: None,
            loss_reduction: LossReduction::Mean,
            checkpoint_every: None,
            early_stopping: None,
        }
    }
}

/// Where a model's training defaults come from: the setting its paper trained it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// DLRM as the MLET paper trains it: SGD at lr 0.2, batch 128, mean loss over the batch.
    Dlrm,
    /// WDL, DeepFM, xDeepFM, DCN, AutoInt, NFM as the MLET paper trains them: Adagrad at lr 0.02
    /// (paper 001), and DeepCTR-Torch 0.3.0's `fit`: batch 256, loss summed over the batch
    /// (`reduction='sum'`), which its L2 coefficients (1e-5) are scaled for.
    DeepCtr,
    /// Paper 004 (multi-embedding: DNN, IPNN, NFwFM, DCNv2, FinalMLP) as its authors' code
    /// trains it: Adam at lr 1e-3 with `weight_decay` 1e-6 (coupled L2, added to the gradient;
    /// on tables only the touched rows, see docs/training.md), batch 2048, mean BCE, at most 30
    /// epochs with early stopping on validation AUC (patience 3, best weights restored).
    MultiEmbedding,
}

impl Family {
    /// The family of `model.kind` (an unknown kind is rejected when the model is read).
    pub fn of_kind(kind: &str) -> Family {
        match kind {
            "dlrm" => Family::Dlrm,
            "dnn" | "ipnn" | "nfwfm" | "dcnv2" | "finalmlp" => Family::MultiEmbedding,
            _ => Family::DeepCtr,
        }
    }

    pub fn optimizer(self) -> OptimizerConfig {
        match self {
            Family::Dlrm => OptimizerConfig::new(OptimizerKind::Sgd, 0.2),
            Family::DeepCtr => OptimizerConfig::new(OptimizerKind::Adagrad, 0.02),
            Family::MultiEmbedding => OptimizerConfig {
                weight_decay: 1e-6,
                ..OptimizerConfig::new(OptimizerKind::Adam, 1e-3)
            },
        }
    }

    pub fn training(self) -> TrainingConfig {
        match self {
            Family::Dlrm => TrainingConfig::default(),
            Family::DeepCtr => TrainingConfig {
                batch_size: 256,
                loss_reduction: LossReduction::Sum,
                ..TrainingConfig::default()
            },
            Family::MultiEmbedding => TrainingConfig {
                epochs: 30,
                batch_size: 2048,
                loss_reduction: LossReduction::Mean,
                early_stopping: Some(EarlyStopping {
                    patience: 3,
                    metric: StopMetric::Auc,
                }),
                ..TrainingConfig::default()
            },
        }
    }
}

/// `eval`: how evaluation batches are sized.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// The most rows per evaluation batch.
    pub batch_size: usize,
    /// The most memory (MiB) a batch's activations may take, by the model's own estimate per
    /// row (`CtrModel::eval_bytes_per_row`): a model with large intermediates (xDeepFM's CIN)
    /// gets fewer than `batch_size` rows per batch.
    pub memory_mb: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            batch_size: 8192,
            memory_mb: 64,
        }
    }
}

impl RunConfig {
    /// Settings that parse but cannot run, reported with the key that holds them.
    pub fn validate(&self) -> Result<(), String> {
        let e = &self.embedding;
        if e.dim == 0 {
            return Err("embedding.dim: must be at least 1".into());
        }
        if e.sets == 0 {
            return Err("embedding.sets: must be at least 1 (1 = a single embedding)".into());
        }
        if e.sets > 1 && !self.model.supports_sets() {
            return Err(format!(
                "embedding.sets: {} sets need a model with multi-embedding ({}); `{}` has one \
                 embedding set",
                e.sets,
                ModelConfig::MULTI_EMBEDDING_KINDS.join(", "),
                self.model.name()
            ));
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
        if let Some(h) = &e.hash {
            h.validate()?;
        }
        if e.table_init == TableInit::Normal && !(e.table_std.is_finite() && e.table_std > 0.0) {
            return Err("embedding.table_std: must be a positive number".into());
        }
        self.model.validate()?;
        let o = &self.optimizer;
        for (key, v) in [("lr", Some(o.lr)), ("embedding_lr", o.embedding_lr)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "optimizer.{key}: must be a positive number (got {v})"
                    ));
                }
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err("optimizer.weight_decay: a non-negative number".into());
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err("optimizer.betas: two numbers in [0, 1)".into());
        }
        if o.eps.is_some_and(|e| !(e.is_finite() && e > 0.0)) {
            return Err("optimizer.eps: a positive number".into());
        }
        if !(o.initial_accumulator_value.is_finite() && o.initial_accumulator_value >= 0.0) {
            return Err("optimizer.initial_accumulator_value: a non-negative number".into());
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
        if t.checkpoint_every == Some(0) {
            return Err("training.checkpoint_every: must be at least 1".into());
        }
        if t.threads == Some(0) {
            return Err("training.threads: must be at least 1".into());
        }
        if t.early_stopping.as_ref().is_some_and(|e| e.patience == 0) {
            return Err(
                "training.early_stopping.patience: must be at least 1 (epochs without an \
                 improvement before stopping)"
                    .into(),
            );
        }
        if self.eval.batch_size == 0 {
            return Err("eval.batch_size: must be at least 1".into());
        }
        if self.eval.memory_mb == 0 {
            return Err(
                "eval.memory_mb: must be at least 1 (MiB that one evaluation batch's activations \
                 may take)"
                    .into(),
            );
        }
        let d = &self.data;
        if d.synthetic.is_some() && d.raw.is_some() {
            return Err("data: give either `synthetic` or `raw`, not both".into());
        }
        let files = [("train", &d.train), ("valid", &d.valid), ("test", &d.test)];
        if let Some((key, _)) = files.iter().find(|(_, f)| f.is_some()) {
            if d.raw.is_some() || d.synthetic.is_some() {
                let other = if d.raw.is_some() { "raw" } else { "synthetic" };
                return Err(format!(
                    "data.{key}: a predefined split (train, valid, test) replaces `{other}`; give \
                     one or the other"
                ));
            }
            // valid is required: without it, grids would choose settings on the test rows.
            if let Some((missing, _)) = files.iter().find(|(_, f)| f.is_none()) {
                return Err(format!(
                    "data.{missing}: required with data.{key} (a predefined split needs all \
                     three files: train, valid and test)"
                ));
            }
            if d.format.is_none() {
                return Err("data.format: required with data.train (criteo, avazu or csv)".into());
            }
        }
        if d.synthetic.is_none() && d.raw.is_none() && d.train.is_none() && d.cache.is_none() {
            return Err(
                "data: give `synthetic`, `raw` (with `format`), `train`/`valid`/`test` \
                 (with `format`) or a prepared `cache`"
                    .into(),
            );
        }
        if d.raw.is_some() && d.format.is_none() {
            return Err("data.format: required with data.raw (criteo, avazu or csv)".into());
        }
        if d.format == Some(RawFormat::Csv) && d.schema.is_none() {
            return Err("data.schema: required with format csv".into());
        }
        if let Some(split) = &d.split {
            if d.train.is_some() {
                return Err(
                    "data.split: a predefined split (train, valid, test files) is already \
                     split; give one or the other"
                        .into(),
                );
            }
            if d.raw.is_none() && d.synthetic.is_none() {
                return Err(
                    "data.split: needs a source to split (`raw` or `synthetic`); a prepared \
                     `cache` alone is used as it was split"
                        .into(),
                );
            }
            split.validate()?;
        }
        Ok(())
    }
}
