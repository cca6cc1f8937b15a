//! The results table: one row per finished run, read and written as CSV, and the summaries the
//! paper's figures and Table 3 are made of (mean ± std over seeds, best init σ, memory reduction).
//!
//! Pure Rust; nothing here touches tensors.
pub(crate) mod csv;
mod frequency;
mod runtime;
pub(crate) mod summary;

pub use frequency::{frequency_gains, write_frequency_gains_csv, FrequencyGain};
pub use runtime::{runtime_table, write_runtime_csv, RuntimeRow};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use summary::{
    best_init_std, max_memory_reduction, memory_reduction, select_points, summarize,
    write_memory_reduction_csv, write_summary_csv, BestSigma, BestSigmas, MaxMemoryReduction,
    MemoryReduction, SummaryRow,
};

use self::csv::Table;

/// Frequency deciles recorded per run (`crate::metrics::frequency`).
const DECILES: usize = crate::metrics::frequency::GROUPS;

/// One finished run: its settings and its final metrics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResultRow {
    pub experiment: String,
    pub run: String,
    /// The data set and its scale, e.g. `synthetic-300000` or `criteo`.
    pub dataset: String,
    /// The model name, e.g. `dlrm`.
    pub model: String,
    /// Embedding dimension.
    pub d: usize,
    /// MLET inner width; `None` for the single-layer baseline (written `baseline` in the CSV).
    pub k: Option<usize>,
    /// Embedding sets (paper 004's multi-embedding; 1 for a single embedding).
    pub sets: usize,
    /// Init σ of the MLET factor layer (ignored for the baseline).
    pub init_std: f64,
    pub seed: u64,
    pub lr: f64,
    pub optimizer: String,
    pub test_auc: f64,
    pub test_logloss: f64,
    pub test_pr_auc: f64,
    pub valid_auc: f64,
    pub valid_logloss: f64,
    pub train_seconds: f64,
    pub samples_per_s: f64,
    pub training_embedding_params: i64,
    pub inference_embedding_params: i64,
    /// Test PR-AUC on Table 4's set A (10% most frequent samples) and set B (10% least).
    pub test_pr_auc_a: f64,
    pub test_pr_auc_b: f64,
    /// Test PR-AUC per frequency decile, least frequent first (empty when not recorded).
    pub test_pr_auc_deciles: Vec<f64>,
    /// Median and 90th percentile of the time per training step, and the run's peak memory.
    pub step_ms_median: f64,
    pub step_ms_p90: f64,
    pub peak_rss_mb: f64,
    pub run_dir: String,
}

impl ResultRow {
    /// Whether this is a single-layer baseline run.
    pub fn is_baseline(&self) -> bool {
        self.k.is_none()
    }

    /// Embedding size per field at inference, `sets · d` (paper 004's "embedding size").
    pub fn total_dim(&self) -> usize {
        self.sets * self.d
    }
}

/// Columns that results tables written before they existed lack (read as NaN).
const OPTIONAL_COLUMNS: [&str; 16] = [
    "test_pr_auc_a",
    "test_pr_auc_b",
    "test_pr_auc_decile1",
    "test_pr_auc_decile2",
    "test_pr_auc_decile3",
    "test_pr_auc_decile4",
    "test_pr_auc_decile5",
    "test_pr_auc_decile6",
    "test_pr_auc_decile7",
    "test_pr_auc_decile8",
    "test_pr_auc_decile9",
    "test_pr_auc_decile10",
    "step_ms_median",
    "step_ms_p90",
    "peak_rss_mb",
    "sets",
];

/// The columns of the results CSV, in the order they are written: these, then
/// [`OPTIONAL_COLUMNS`], then `run_dir`.
pub const RESULT_COLUMNS: [&str; 19] = [
    "experiment",
    "run",
    "dataset",
    "model",
    "d",
    "k",
    "init_std",
    "seed",
    "lr",
    "optimizer",
    "test_auc",
    "test_logloss",
    "test_pr_auc",
    "valid_auc",
    "valid_logloss",
    "train_seconds",
    "samples_per_s",
    "training_embedding_params",
    "inference_embedding_params",
];

fn all_columns() -> Vec<&'static str> {
    let mut cols: Vec<&str> = RESULT_COLUMNS.to_vec();
    cols.extend(OPTIONAL_COLUMNS);
    cols.push("run_dir");
    cols
}

/// The distinct (model, dataset) pairs of a results table, sorted.
pub fn model_dataset_pairs(rows: &[ResultRow]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.model.clone(), r.dataset.clone()))
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// How `k` is written: `baseline` or the integer.
pub fn format_k(k: Option<usize>) -> String {
    k.map_or_else(|| "baseline".to_string(), |k| k.to_string())
}

/// Writes the results table to `path` (CSV with a header; atomic: a hidden sibling is written and
/// renamed). Floats are written in Rust's shortest round-trip form, so reading gives back the same
/// values (`NaN` and `inf` included).
pub fn write_results_csv(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.experiment.clone(),
                r.run.clone(),
                r.dataset.clone(),
                r.model.clone(),
                r.d.to_string(),
                format_k(r.k),
                r.init_std.to_string(),
                r.seed.to_string(),
                r.lr.to_string(),
                r.optimizer.clone(),
                r.test_auc.to_string(),
                r.test_logloss.to_string(),
                r.test_pr_auc.to_string(),
                r.valid_auc.to_string(),
                r.valid_logloss.to_string(),
                r.train_seconds.to_string(),
                r.samples_per_s.to_string(),
                r.training_embedding_params.to_string(),
                r.inference_embedding_params.to_string(),
            ]
            .into_iter()
            .chain([r.test_pr_auc_a.to_string(), r.test_pr_auc_b.to_string()])
            .chain((0..DECILES).map(|i| {
                r.test_pr_auc_deciles
                    .get(i)
                    .map_or(f64::NAN, |v| *v)
                    .to_string()
            }))
            .chain([
                r.step_ms_median.to_string(),
                r.step_ms_p90.to_string(),
                r.peak_rss_mb.to_string(),
                r.sets.to_string(),
                r.run_dir.clone(),
            ])
            .collect()
        })
        .collect();
    csv::write_table(path, &all_columns(), &body)
}

/// Reads a results table written by [`write_results_csv`] (columns in any order; every column
/// required but the frequency and runtime ones, none unknown). Errors name the file, line, column and what was expected.
pub fn read_results_csv(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse_results_csv(&text, path)
}

/// Parses results-table text; `path` is used in error messages only.
pub fn parse_results_csv(text: &str, path: &Path) -> Result<Vec<ResultRow>> {
    let mut required = RESULT_COLUMNS.to_vec();
    required.push("run_dir");
    let t = Table::parse(text, path, &required)?;
    t.reject_unknown(&all_columns())?;
    let mut rows = Vec::with_capacity(t.records.len());
    const FLOAT: &str = "a number";
    for r in &t.records {
        let s = |name: &str| t.raw(r, name).text.clone();
        let d: usize = t.get(r, "d", "a positive integer")?;
        if d == 0 {
            let f = t.raw(r, "d");
            return Err(t.error(f, "d", "a positive integer", "d must be at least 1"));
        }
        let kf = t.raw(r, "k");
        let k = match kf.text.trim() {
            s if s.eq_ignore_ascii_case("baseline") => None,
            s => match s.parse::<usize>() {
                Ok(k) if k > 0 => Some(k),
                Ok(_) => return Err(t.error(kf, "k", "`baseline` or a positive integer", "k = 0")),
                Err(e) => return Err(t.error(kf, "k", "`baseline` or a positive integer", e)),
            },
        };
        rows.push(ResultRow {
            experiment: s("experiment"),
            run: s("run"),
            dataset: s("dataset"),
            model: s("model"),
            d,
            k,
            init_std: t.get(r, "init_std", FLOAT)?,
            seed: t.get(r, "seed", "a non-negative integer")?,
            lr: t.get(r, "lr", FLOAT)?,
            optimizer: s("optimizer"),
            test_auc: t.get(r, "test_auc", FLOAT)?,
            test_logloss: t.get(r, "test_logloss", FLOAT)?,
            test_pr_auc: t.get(r, "test_pr_auc", FLOAT)?,
            valid_auc: t.get(r, "valid_auc", FLOAT)?,
            valid_logloss: t.get(r, "valid_logloss", FLOAT)?,
            train_seconds: t.get(r, "train_seconds", FLOAT)?,
            samples_per_s: t.get(r, "samples_per_s", FLOAT)?,
            training_embedding_params: t.get(r, "training_embedding_params", "an integer")?,
            inference_embedding_params: t.get(r, "inference_embedding_params", "an integer")?,
            test_pr_auc_a: t.get_or_nan(r, "test_pr_auc_a")?,
            test_pr_auc_b: t.get_or_nan(r, "test_pr_auc_b")?,
            test_pr_auc_deciles: (1..=DECILES)
                .map(|i| t.get_or_nan(r, &format!("test_pr_auc_decile{i}")))
                .collect::<Result<_>>()?,
            step_ms_median: t.get_or_nan(r, "step_ms_median")?,
            step_ms_p90: t.get_or_nan(r, "step_ms_p90")?,
            peak_rss_mb: t.get_or_nan(r, "peak_rss_mb")?,
            // tables written before multi-embedding existed have one set
            sets: match t.get_or_nan(r, "sets")? {
                s if s.is_nan() => 1,
                s if s >= 1.0 && s.fract() == 0.0 => s as usize,
                _ => {
                    let f = t.raw(r, "sets");
                    return Err(t.error(f, "sets", "a positive integer", "not one"));
                }
            },
            run_dir: s("run_dir"),
        });
    }
    Ok(rows)
}
