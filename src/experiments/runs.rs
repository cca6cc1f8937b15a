//! Running the runs of an experiment file one after the other, in this process.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::config::{DataConfig, RawFormat, RunSpec};
use crate::data::{self, Dataset, InputFormat, PrepareOptions, SplitRule};
use crate::plots;
use crate::training::{self, RunDir, RunMetrics, RunOptions};

/// Opens the data set of a run, preparing (and for synthetic data, generating) it on first use.
pub fn open_data(data: &DataConfig, quiet: bool) -> Result<Dataset> {
    let cache = data.cache_dir();
    if cache.join("meta.json").is_file() {
        return Dataset::open(&cache);
    }
    let (input, format, generated) = if let Some(synth) = &data.synthetic {
        let raw = cache.with_extension("raw.tsv");
        if let Some(parent) = raw.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !quiet {
            eprintln!(
                "generating {} synthetic rows into {}",
                synth.rows,
                raw.display()
            );
        }
        data::write_synthetic(&raw, synth)?;
        (raw, InputFormat::Criteo, true)
    } else {
        let raw = data.raw.clone().with_context(|| {
            format!(
                "data: no prepared cache at {} and no `raw` or `synthetic` source",
                cache.display()
            )
        })?;
        let format = match data.format {
            Some(RawFormat::Criteo) => InputFormat::Criteo,
            Some(RawFormat::Avazu) => InputFormat::Avazu,
            Some(RawFormat::Csv) => InputFormat::Csv {
                schema: data
                    .schema
                    .clone()
                    .context("data.schema: required with format csv")?,
            },
            None => anyhow::bail!("data.format: required with data.raw"),
        };
        (raw, format, false)
    };
    if !quiet {
        eprintln!("preparing {} into {}", input.display(), cache.display());
    }
    let split = match format {
        InputFormat::Criteo => SplitRule::Days,
        _ => SplitRule::Random {
            valid_fraction: 0.05,
            test_fraction: 0.05,
        },
    };
    data::prepare(&PrepareOptions {
        input: input.clone(),
        format,
        out: cache.clone(),
        min_count: data.min_count,
        split,
        seed: 0,
        skip_bad_lines: false,
        progress: !quiet,
    })?;
    if generated {
        // The generator is deterministic; the cache is all later runs need.
        let _ = std::fs::remove_file(&input);
    }
    Dataset::open(&cache)
}

/// Settings a command line may impose on every run of a file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// A raw data file replacing the file's `data.raw` (and any synthetic source).
    pub raw: Option<PathBuf>,
    pub device: Option<String>,
    pub threads: Option<usize>,
    pub output: Option<PathBuf>,
    pub max_steps: Option<usize>,
}

impl Overrides {
    pub fn apply(&self, spec: &mut RunSpec) {
        let c = &mut spec.config;
        if let Some(raw) = &self.raw {
            c.data.raw = Some(raw.clone());
            c.data.synthetic = None;
        }
        if let Some(d) = &self.device {
            c.training.device = d.clone();
        }
        if let Some(t) = self.threads {
            c.training.threads = Some(t);
        }
        if let Some(o) = &self.output {
            c.output = o.clone();
        }
        if let Some(m) = self.max_steps {
            c.training.max_steps = Some(m);
        }
    }
}

/// What happened to one run.
#[derive(Debug)]
pub enum Outcome {
    Trained(PathBuf, Box<RunMetrics>),
    /// Already finished earlier; its metrics are read back.
    Skipped(PathBuf, Box<RunMetrics>),
}

/// Runs (or skips, when finished and not `force`) each run in turn.
pub fn run_all(specs: &[RunSpec], force: bool, opts: &RunOptions) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for spec in specs {
        let dir = RunDir::path_for(&spec.config.output, &spec.config.name, &spec.run);
        if !force && RunDir::is_finished(&dir) {
            let metrics = read_metrics(&dir)?;
            outcomes.push(Outcome::Skipped(dir, Box::new(metrics)));
            continue;
        }
        let (dir, metrics) = train_one(spec, opts)?;
        outcomes.push(Outcome::Trained(dir, Box::new(metrics)));
    }
    Ok(outcomes)
}

/// Trains one run (preparing its data if needed) and draws its training curve into its
/// directory (`train_curve.png|svg`).
pub fn train_one(spec: &RunSpec, opts: &RunOptions) -> Result<(PathBuf, RunMetrics)> {
    let dataset = open_data(&spec.config.data, opts.quiet)?;
    let (dir, metrics) = training::train_run(spec, &dataset, opts)
        .with_context(|| format!("run {}/{}", spec.config.name, spec.run))?;
    if metrics.diverged.is_some() {
        return Ok((dir, metrics));
    }
    let title = format!(
        "{}/{}: training loss ({} samples)",
        spec.config.name, spec.run, metrics.train.samples
    );
    plots::plot_training_curve(
        &[(dir.join("train_log.csv"), spec.run.clone())],
        &dir.join("train_curve"),
        &title,
    )?;
    Ok((dir, metrics))
}

pub fn read_metrics(run_dir: &Path) -> Result<RunMetrics> {
    let path = run_dir.join(training::METRICS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a metrics file", path.display()))
}
