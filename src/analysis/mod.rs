//! Analyses of a finished run, without retraining: the spectra of its collapsed tables, low-rank
//! (SVD) truncation and 8-bit quantisation, each evaluated on the run's own test split. Results
//! are written beside the run, under `<run>/analysis/`.
pub mod compression;
pub mod linalg;
pub mod quantize;
pub mod spectrum;
pub mod svd;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

use crate::atomic::write_atomic;
use crate::data::{Dataset, Split};
use crate::export::{load_run, LoadedRun};
use crate::metrics::{self, Metrics};
use crate::results::{model_dataset_pairs, read_results_csv, ResultRow};
use crate::training::{eval_batch_size, predict};

/// A grid's finished runs (`<grid_dir>/results.csv`), which must all be of one model on one
/// data set (`what` names the table being built, for the errors). Returns the rows, the model
/// and the data set.
pub fn read_grid_results(grid_dir: &Path, what: &str) -> Result<(Vec<ResultRow>, String, String)> {
    if !grid_dir.is_dir() {
        bail!("{}: no such grid output directory", grid_dir.display());
    }
    let results_path = grid_dir.join("results.csv");
    if !results_path.is_file() {
        bail!(
            "{}: missing; run `mlet grid` on the experiment first (GRID_OUTPUT_DIR is \
             <output>/<name>)",
            results_path.display()
        );
    }
    let results = read_results_csv(&results_path)?;
    let groups = model_dataset_pairs(&results);
    if groups.len() != 1 {
        bail!(
            "{}: {what} needs runs of one model on one data set, found {:?}",
            results_path.display(),
            groups
        );
    }
    let (model, dataset) = groups.into_iter().next().expect("one group");
    Ok((results, model, dataset))
}

/// Where the analyses of a run are written.
pub const ANALYSIS_DIR: &str = "analysis";

/// A finished run with collapsed `n x d` embeddings (what inference keeps) and, for the
/// analyses that evaluate, the data cache it was trained on.
pub struct AnalysisRun {
    pub run: LoadedRun,
    pub dataset: Option<Dataset>,
    pub device: Device,
    field_names: Vec<String>,
}

impl AnalysisRun {
    /// Loads the run at `dir`, collapses its embeddings and opens the data cache it was trained
    /// on (an error when the cache is gone or no longer matches the run).
    pub fn open(dir: &Path, device: Device) -> Result<AnalysisRun> {
        let out = Self::open_tables(dir, device)?;
        if out.dataset.is_none() {
            let cache = out.run.config.data.cache_dir();
            let why = match Dataset::open(&cache) {
                Err(e) => format!("{e:#}"),
                Ok(_) => "its cardinalities differ from the run's".to_string(),
            };
            bail!(
                "{}: the run's data cache {} cannot be used ({why}); prepare it again with the \
                 run's data settings",
                dir.display(),
                cache.display()
            );
        }
        Ok(out)
    }

    /// Loads the run's collapsed tables only; the data cache is opened when it is still there
    /// and matches (for field names), and is not needed.
    pub fn open_tables(dir: &Path, device: Device) -> Result<AnalysisRun> {
        let mut run = load_run(dir, device)?;
        run.model.vs.freeze();
        run.model.collapse();
        let dataset = Dataset::open(&run.config.data.cache_dir())
            .ok()
            .filter(|d| d.cardinalities() == run.shape.cardinalities.as_slice());
        let field_names = match &dataset {
            Some(d) => d.meta.field_names.clone(),
            None => (1..=run.shape.cardinalities.len())
                .map(|i| format!("C{i}"))
                .collect(),
        };
        Ok(AnalysisRun {
            run,
            dataset,
            device,
            field_names,
        })
    }

    /// The names of the categorical fields, in table order (`C1..CF` without the data cache).
    pub fn field_names(&self) -> &[String] {
        &self.field_names
    }

    /// Per table: its name (`set{m}.{field}` under multi-embedding) and a view (not a copy) of
    /// its collapsed `[n, d]` table.
    pub fn field_tables(&self) -> Vec<(String, Tensor)> {
        let emb = &self.run.model.embeddings;
        emb.offsets()
            .iter()
            .zip(emb.cardinalities())
            .zip(&emb.table_names(self.field_names()))
            .map(|((&off, &n), name)| (name.clone(), emb.table.narrow(0, off, n)))
            .collect()
    }

    /// Metrics of the model as it is now on the test split.
    pub fn evaluate_test(&self) -> Result<Metrics> {
        let dataset = self
            .dataset
            .as_ref()
            .context("this analysis needs the run's data cache")?;
        let data = dataset.split(Split::Test);
        if data.len == 0 {
            bail!("{}: the test split is empty", dataset.dir().display());
        }
        let batch = eval_batch_size(&self.run.config.eval, &self.run.model);
        let logits = predict(&self.run.model, &data, batch, None, self.device)?;
        metrics::evaluate(&logits, data.label).context("evaluating the test split")
    }

    /// Runs `f` with the embedding table temporarily replaced by `table` (same shape), then puts
    /// the original back.
    pub fn with_table<R>(&mut self, table: Tensor, f: impl FnOnce(&AnalysisRun) -> R) -> R {
        let original = std::mem::replace(&mut self.run.model.embeddings.table, table);
        let out = f(self);
        self.run.model.embeddings.table = original;
        out
    }

    /// Writes `value` as `<run>/analysis/<name>` (atomically) and returns the path.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<PathBuf> {
        let dir = self.run.dir.join(ANALYSIS_DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(name);
        write_atomic(&path, serde_json::to_string_pretty(value)?.as_bytes())?;
        Ok(path)
    }
}
