//! Spectra of a run's collapsed tables: per field the singular values, the effective rank of
//! paper 002 (§2.2.1: singular values above 0.01 of the largest) and the information abundance
//! of paper 004 (Definition 1: sum of the singular values over the largest).
//!
//! A zero table (every singular value 0) has effective rank 0 and information abundance 0: it
//! carries no direction at all, and 0 cannot be mistaken for a real table's abundance, which is
//! at least 1. Nothing here produces NaN.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

use super::{linalg, AnalysisRun, ANALYSIS_DIR};
use crate::config::EmbeddingKind;
use crate::results::csv::write_table;

/// Singular values above this fraction of the largest count towards the effective rank.
pub const RANK_THRESHOLD: f64 = 0.01;

/// `spectrum.json` and `spectrum.csv` under `<run>/analysis/`.
pub const JSON_NAME: &str = "spectrum.json";
pub const CSV_NAME: &str = "spectrum.csv";

/// The number of singular values strictly above `RANK_THRESHOLD` times the largest (0 for a
/// zero table). `values` need not be sorted.
pub fn effective_rank(values: &[f64]) -> usize {
    let top = values.iter().cloned().fold(0.0, f64::max);
    if top <= 0.0 {
        return 0;
    }
    values.iter().filter(|&&s| s > RANK_THRESHOLD * top).count()
}

/// `Σ σ_i / max σ_i`, between 1 and the number of values; 0 for a zero table (or no values).
pub fn information_abundance(values: &[f64]) -> f64 {
    let top = values.iter().cloned().fold(0.0, f64::max);
    if top <= 0.0 {
        return 0.0;
    }
    values.iter().sum::<f64>() / top
}

/// The spectrum of one `[n, d]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpectrum {
    /// The field's name (`C1`, ... without the data cache).
    pub field: String,
    /// Its 0-based position among the run's categorical fields.
    pub index: usize,
    /// Rows of the table (n).
    pub cardinality: usize,
    /// Columns of the table (d).
    pub dim: usize,
    pub effective_rank: usize,
    pub information_abundance: f64,
    /// All `min(n, d)` singular values, descending.
    pub singular_values: Vec<f64>,
}

impl FieldSpectrum {
    /// σ_i / σ_1 for every i; empty for a zero table.
    pub fn normalised(&self) -> Vec<f64> {
        match self.singular_values.first() {
            Some(&top) if top > 0.0 => self.singular_values.iter().map(|s| s / top).collect(),
            _ => Vec::new(),
        }
    }
}

/// The spectra of every field of a run, as written to `spectrum.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpectrum {
    /// The run directory's name (used as its label in figures).
    pub run: String,
    pub dir: PathBuf,
    pub model: String,
    /// `single` or `mlet`.
    pub embedding: String,
    /// MLET's inner dimension (absent for single-layer runs).
    pub k: Option<usize>,
    /// The embedding dimension d.
    pub dim: usize,
    pub rank_threshold: f64,
    pub fields: Vec<FieldSpectrum>,
}

impl RunSpectrum {
    /// `name (single, d=8)` or `name (MLET k=32, d=8)`.
    pub fn label(&self) -> String {
        match self.k {
            Some(k) => format!("{} (MLET k={k}, d={})", self.run, self.dim),
            None => format!("{} (single, d={})", self.run, self.dim),
        }
    }

    /// The field named `key`, or else at 0-based position `key`; the error names the run and its
    /// fields.
    pub fn find_field(&self, key: &str) -> Result<&FieldSpectrum> {
        if let Some(f) = self.fields.iter().find(|f| f.field == key) {
            return Ok(f);
        }
        if let Ok(i) = key.parse::<usize>() {
            return self.fields.get(i).with_context(|| {
                format!(
                    "--fields: position {i} is out of range: run {} has {} fields (0..{})",
                    self.dir.display(),
                    self.fields.len(),
                    self.fields.len().saturating_sub(1)
                )
            });
        }
        let names: Vec<&str> = self.fields.iter().map(|f| f.field.as_str()).collect();
        bail!(
            "--fields: run {} has no field `{key}` (expected a field name, one of {}, or a 0-based \
             position)",
            self.dir.display(),
            names.join(", ")
        )
    }

    /// The names of the `count` fields with the most rows, largest first (ties by position).
    pub fn largest_fields(&self, count: usize) -> Vec<String> {
        let mut order: Vec<&FieldSpectrum> = self.fields.iter().collect();
        order.sort_by(|a, b| {
            b.cardinality
                .cmp(&a.cardinality)
                .then(a.index.cmp(&b.index))
        });
        order
            .into_iter()
            .take(count)
            .map(|f| f.field.clone())
            .collect()
    }

    /// Writes `spectrum.csv` (field, cardinality, dim, effective_rank, information_abundance)
    /// atomically to `path`.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let rows: Vec<Vec<String>> = self
            .fields
            .iter()
            .map(|f| {
                vec![
                    f.field.clone(),
                    f.cardinality.to_string(),
                    f.dim.to_string(),
                    f.effective_rank.to_string(),
                    f.information_abundance.to_string(),
                ]
            })
            .collect();
        write_table(
            path,
            &[
                "field",
                "cardinality",
                "dim",
                "effective_rank",
                "information_abundance",
            ],
            &rows,
        )
    }
}

/// The spectrum of one `[n, d]` table (any float kind, any device); an error if it holds NaN or
/// infinite values.
pub fn table_spectrum(field: &str, index: usize, table: &Tensor) -> Result<FieldSpectrum> {
    let (n, d) = table
        .size2()
        .with_context(|| format!("field {field}: the table is not two-dimensional"))?;
    // one f64 sum is finite exactly when every entry is (NaN and ±inf propagate), without a
    // table-sized temporary
    let sum = tch::no_grad(|| table.sum(Kind::Double).double_value(&[]));
    if !sum.is_finite() {
        bail!("field {field}: the table holds NaN or infinite values");
    }
    // the Gram matrix is d x d, so only the first min(n, d) eigenvalues can be non-zero
    let mut values = linalg::singular_values(table);
    values.truncate(n.min(d) as usize);
    Ok(FieldSpectrum {
        field: field.to_string(),
        index,
        cardinality: n as usize,
        dim: d as usize,
        effective_rank: effective_rank(&values),
        information_abundance: information_abundance(&values),
        singular_values: values,
    })
}

/// The spectra of every collapsed table of `run`.
pub fn run_spectrum(run: &AnalysisRun) -> Result<RunSpectrum> {
    let dir = &run.run.dir;
    let fields = run
        .field_tables()
        .iter()
        .enumerate()
        .map(|(i, (name, table))| table_spectrum(name, i, table))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("{}", dir.display()))?;
    let emb = &run.run.config.embedding;
    Ok(RunSpectrum {
        run: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        dir: dir.clone(),
        model: run.run.config.model.name().to_string(),
        embedding: match emb.kind {
            EmbeddingKind::Single => "single".into(),
            EmbeddingKind::Mlet => "mlet".into(),
        },
        k: match emb.kind {
            EmbeddingKind::Single => None,
            EmbeddingKind::Mlet => emb.k,
        },
        dim: emb.dim,
        rank_threshold: RANK_THRESHOLD,
        fields,
    })
}

/// Writes `<run>/analysis/spectrum.json` and `spectrum.csv`; returns both paths.
pub fn write_spectrum(run: &AnalysisRun, spectrum: &RunSpectrum) -> Result<Vec<PathBuf>> {
    let json = run.write_json(JSON_NAME, spectrum)?;
    let csv = run.run.dir.join(ANALYSIS_DIR).join(CSV_NAME);
    spectrum.write_csv(&csv)?;
    Ok(vec![json, csv])
}
