//! Spectra of a run's collapsed tables: per field the singular values, the effective rank of
//! paper 002 (§2.2.1: singular values above 0.01 of the largest) and the information abundance
//! of paper 004 (Definition 1: sum of the singular values over the largest).
//!
//! Under multi-embedding (`embedding.sets: M`, paper 004) a field has M tables `E_1 … E_M` of
//! `[n, d]`. Its whole embedding is the concatenation `[E_1 | … | E_M]` (`n x M·d`), which is what
//! paper 004 §5(a) compares with a single-embedding table of width M·d; §5(b) looks at each set's
//! table on its own. Both come from one bounded-memory pass over the rows: the Gram matrix of the
//! concatenation (`linalg::gram_side_by_side`), whose diagonal `d x d` blocks are the sets' own
//! Gram matrices.
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

/// The spectrum of one `[n, d]` table: a field's whole embedding, or one embedding set's table
/// of it under multi-embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSpectrum {
    /// The table's name: the field's (`C1`, ... without the data cache) for its whole embedding,
    /// `set{m}.{field}` for set m's table.
    pub field: String,
    /// The field's 0-based position among the run's categorical fields.
    pub index: usize,
    /// The embedding set (0-based) of a per-set table; absent for a field's whole embedding (all
    /// its sets side by side; with one set, its only table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<usize>,
    /// Rows of the table (n).
    pub cardinality: usize,
    /// Columns of the table: d for a set's table, M·d for a field's whole embedding.
    pub dim: usize,
    pub effective_rank: usize,
    pub information_abundance: f64,
    /// All `min(n, d)` singular values, descending.
    pub singular_values: Vec<f64>,
}

impl FieldSpectrum {
    /// The spectrum of a table with singular values `values` (any order; stored descending).
    pub fn from_values(
        field: &str,
        index: usize,
        set: Option<usize>,
        (n, d): (usize, usize),
        mut values: Vec<f64>,
    ) -> FieldSpectrum {
        values.sort_by(|a, b| b.total_cmp(a));
        FieldSpectrum {
            field: field.to_string(),
            index,
            set,
            cardinality: n,
            dim: d,
            effective_rank: effective_rank(&values),
            information_abundance: information_abundance(&values),
            singular_values: values,
        }
    }

    /// `all` for a field's whole embedding, else the set's index (the CSV's `set` column).
    pub fn set_label(&self) -> String {
        self.set
            .map_or_else(|| "all".to_string(), |m| m.to_string())
    }

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
    /// The embedding dimension d (of each set).
    pub dim: usize,
    /// Embedding sets M (1 unless multi-embedding; absent in files written before it existed).
    #[serde(default = "one")]
    pub sets: usize,
    pub rank_threshold: f64,
    /// Every field's whole embedding (`n x M·d`: its sets side by side), in field order.
    pub fields: Vec<FieldSpectrum>,
    /// With several sets, every set's table of every field (`n x d`), set-major like the fused
    /// table (set 0's fields, then set 1's, ...); empty with one set.
    #[serde(default)]
    pub per_set: Vec<FieldSpectrum>,
}

fn one() -> usize {
    1
}

impl RunSpectrum {
    /// `name (single, d=8)` or `name (MLET k=32, d=8)`; with several sets `name (ME 4x10)` or
    /// `name (MLET k=32, ME 4x10)` (M sets of d).
    pub fn label(&self) -> String {
        let shape = if self.sets > 1 {
            format!("ME {}x{}", self.sets, self.dim)
        } else {
            format!("d={}", self.dim)
        };
        match self.k {
            Some(k) => format!("{} (MLET k={k}, {shape})", self.run),
            None if self.sets > 1 => format!("{} ({shape})", self.run),
            None => format!("{} (single, {shape})", self.run),
        }
    }

    /// Whether this is a plain single-embedding, single-layer run (the baseline of the figures).
    pub fn is_baseline(&self) -> bool {
        self.k.is_none() && self.sets <= 1
    }

    /// The tables of embedding set `m` (0-based), in field order; empty when there is no such
    /// set. With one set, set 0 is the fields' whole embeddings.
    pub fn set_fields(&self, m: usize) -> Vec<&FieldSpectrum> {
        if self.sets <= 1 {
            return if m == 0 {
                self.fields.iter().collect()
            } else {
                Vec::new()
            };
        }
        self.per_set.iter().filter(|f| f.set == Some(m)).collect()
    }

    /// The table named `key`: a field's whole embedding (`C3`), a set's table (`set1.C3`), or
    /// else the field at 0-based position `key`; the error names the run and its fields.
    pub fn find_field(&self, key: &str) -> Result<&FieldSpectrum> {
        if let Some(f) = self
            .fields
            .iter()
            .chain(&self.per_set)
            .find(|f| f.field == key)
        {
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
        let sets = if self.sets > 1 {
            format!(", `set{{m}}.{{field}}` for m < {}", self.sets)
        } else {
            String::new()
        };
        bail!(
            "--fields: run {} has no field `{key}` (expected a field name, one of {}{sets}, or a \
             0-based position)",
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

    /// Writes `spectrum.csv` (field, cardinality, dim, effective_rank, information_abundance,
    /// set) atomically to `path`: the fields' whole embeddings (set `all`), then with several
    /// sets every set's tables (set `m`).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let rows: Vec<Vec<String>> = self
            .fields
            .iter()
            .chain(&self.per_set)
            .map(|f| {
                vec![
                    f.field.clone(),
                    f.cardinality.to_string(),
                    f.dim.to_string(),
                    f.effective_rank.to_string(),
                    f.information_abundance.to_string(),
                    f.set_label(),
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
                "set",
            ],
            &rows,
        )
    }
}

/// An error when `table` (of `name`) is not two-dimensional or holds NaN or infinite values;
/// else its shape.
fn check_table(name: &str, table: &Tensor) -> Result<(i64, i64)> {
    let shape = table
        .size2()
        .with_context(|| format!("field {name}: the table is not two-dimensional"))?;
    // one f64 sum is finite exactly when every entry is (NaN and ±inf propagate), without a
    // table-sized temporary
    let sum = tch::no_grad(|| table.sum(Kind::Double).double_value(&[]));
    if !sum.is_finite() {
        bail!("field {name}: the table holds NaN or infinite values");
    }
    Ok(shape)
}

/// The spectrum of one `[n, d]` table (any float kind, any device); an error if it holds NaN or
/// infinite values.
pub fn table_spectrum(field: &str, index: usize, table: &Tensor) -> Result<FieldSpectrum> {
    let (n, d) = check_table(field, table)?;
    // the Gram matrix is d x d, so only the first min(n, d) eigenvalues can be non-zero
    let mut values = linalg::singular_values_of_gram(&linalg::gram(table));
    values.truncate(n.min(d) as usize);
    Ok(FieldSpectrum::from_values(
        field,
        index,
        None,
        (n as usize, d as usize),
        values,
    ))
}

/// The spectra of one field under multi-embedding, from its M sets' `[n, d]` tables (`sets[m]`
/// is set m's; any float kind, any device): the whole embedding `[E_0 | … | E_{M-1}]`
/// (`n x M·d`, named `field`) and each set's table (named `set{m}.{field}`). One pass over the
/// rows (the concatenation's Gram matrix, whose diagonal blocks are the sets' own); the
/// concatenation is never formed. With one set, just the whole embedding. An error when a table
/// holds NaN or infinite values, or the sets' rows differ.
pub fn multi_set_spectrum(
    field: &str,
    index: usize,
    sets: &[Tensor],
) -> Result<(FieldSpectrum, Vec<FieldSpectrum>)> {
    if sets.is_empty() {
        bail!("field {field}: no embedding set");
    }
    if sets.len() == 1 {
        return Ok((table_spectrum(field, index, &sets[0])?, Vec::new()));
    }
    let names: Vec<String> = (0..sets.len()).map(|m| format!("set{m}.{field}")).collect();
    let shapes = names
        .iter()
        .zip(sets)
        .map(|(name, t)| check_table(name, t))
        .collect::<Result<Vec<_>>>()?;
    let n = shapes[0].0;
    if let Some((m, _)) = shapes.iter().enumerate().find(|(_, s)| s.0 != n) {
        bail!(
            "field {field}: set {m} has {} rows, set 0 has {n}: the sets cannot stand side by side",
            shapes[m].0
        );
    }
    let gram = linalg::gram_side_by_side(sets);
    let width: i64 = shapes.iter().map(|s| s.1).sum();
    let mut whole = linalg::singular_values_of_gram(&gram);
    whole.truncate(n.min(width) as usize);
    let whole = FieldSpectrum::from_values(field, index, None, (n as usize, width as usize), whole);
    let mut start = 0;
    let mut per_set = Vec::with_capacity(sets.len());
    for (m, (name, &(_, d))) in names.iter().zip(&shapes).enumerate() {
        let block = gram.narrow(0, start, d).narrow(1, start, d);
        let mut values = linalg::singular_values_of_gram(&block);
        values.truncate(n.min(d) as usize);
        per_set.push(FieldSpectrum::from_values(
            name,
            index,
            Some(m),
            (n as usize, d as usize),
            values,
        ));
        start += d;
    }
    Ok((whole, per_set))
}

/// The spectra of every collapsed table of `run`: each field's whole embedding and, with several
/// sets, each set's table.
pub fn run_spectrum(run: &AnalysisRun) -> Result<RunSpectrum> {
    let dir = &run.run.dir;
    let emb = &run.run.model.embeddings;
    let (sets, num_fields) = (emb.num_sets(), emb.num_fields());
    // M·F views, set-major: table m·F + f is set m's table of field f
    let tables = run.field_tables();
    if tables.len() != sets * num_fields {
        bail!(
            "{}: {} tables for {sets} sets of {num_fields} fields",
            dir.display(),
            tables.len()
        );
    }
    if run.field_names().len() != num_fields {
        bail!(
            "{}: {} field names for {num_fields} fields",
            dir.display(),
            run.field_names().len()
        );
    }
    let mut fields = Vec::with_capacity(num_fields);
    let mut per_field_sets = Vec::with_capacity(num_fields);
    for (f, name) in run.field_names().iter().enumerate() {
        let views: Vec<Tensor> = (0..sets)
            .map(|m| tables[m * num_fields + f].1.shallow_clone())
            .collect();
        let (whole, of_sets) =
            multi_set_spectrum(name, f, &views).with_context(|| format!("{}", dir.display()))?;
        fields.push(whole);
        per_field_sets.push(of_sets);
    }
    // field-major as computed; stored set-major, as the fused table is
    let per_set = (0..if sets > 1 { sets } else { 0 })
        .flat_map(|m| per_field_sets.iter().map(move |s| s[m].clone()))
        .collect();
    let emb_cfg = &run.run.config.embedding;
    Ok(RunSpectrum {
        run: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        dir: dir.clone(),
        model: run.run.config.model.name().to_string(),
        embedding: match emb_cfg.kind {
            EmbeddingKind::Single => "single".into(),
            EmbeddingKind::Mlet => "mlet".into(),
        },
        k: match emb_cfg.kind {
            EmbeddingKind::Single => None,
            EmbeddingKind::Mlet => emb_cfg.k,
        },
        dim: emb_cfg.dim,
        sets,
        rank_threshold: RANK_THRESHOLD,
        fields,
        per_set,
    })
}

/// Writes `<run>/analysis/spectrum.json` and `spectrum.csv`; returns both paths.
pub fn write_spectrum(run: &AnalysisRun, spectrum: &RunSpectrum) -> Result<Vec<PathBuf>> {
    let json = run.write_json(JSON_NAME, spectrum)?;
    let csv = run.run.dir.join(ANALYSIS_DIR).join(CSV_NAME);
    spectrum.write_csv(&csv)?;
    Ok(vec![json, csv])
}
