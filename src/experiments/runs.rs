//! Running the runs of an experiment file one after the other, in this process.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::config::{DataConfig, RunSpec};
use crate::data::{self, CacheMeta, Dataset, Fingerprint, InputFormat, PrepareOptions};
use crate::training::{self, RunDir, RunMetrics, RunOptions};

/// How a data section's cache is prepared (None: a `cache` alone, used as it is).
fn prepare_options(data: &DataConfig, cache: &Path, quiet: bool) -> Result<Option<PrepareOptions>> {
    let (input, format) = if let Some(synth) = &data.synthetic {
        if synth.rows == 0 {
            anyhow::bail!("data.synthetic.rows: must be at least 1 (got 0)");
        }
        (cache.with_extension("raw.tsv"), InputFormat::Criteo)
    } else if let Some(raw) = &data.raw {
        let format = match data.format {
            None => anyhow::bail!("data.format: required with data.raw"),
            Some(_) => data
                .input_format()
                .context("data.schema: required with format csv")?,
        };
        (raw.clone(), format)
    } else if let Some((train, valid, test)) = data.split_files() {
        let format = match data.format {
            None => anyhow::bail!("data.format: required with data.train"),
            Some(_) => data
                .input_format()
                .context("data.schema: required with format csv")?,
        };
        let mut opts = PrepareOptions::files(train, valid, test, format, cache);
        opts.min_count = data.min_count;
        opts.progress = !quiet;
        return Ok(Some(opts));
    } else {
        return Ok(None);
    };
    // The defaults of `mlet data prepare`, so that a cache it made is reused.
    let mut opts = PrepareOptions::new(input, format, cache);
    opts.min_count = data.min_count;
    if let Some(split) = &data.split {
        opts.split = split.rule();
        opts.seed = split.seed;
    }
    opts.progress = !quiet;
    opts.generated_from = data.synthetic.clone();
    Ok(Some(opts))
}

/// Opens the data set of a run, preparing (and for synthetic data, generating) it on first use.
/// An existing cache is reused only when its fingerprint (source, format, schema, prepare
/// options) is what this data section would make; otherwise an automatically named cache is
/// prepared again and an explicitly named one (`data.cache`) is an error saying what differs.
pub fn open_data(data: &DataConfig, quiet: bool) -> Result<Dataset> {
    let cache = data.cache_dir();
    let Some(opts) = prepare_options(data, &cache, quiet)? else {
        return Dataset::open(&cache).with_context(|| {
            format!(
                "data: no usable prepared cache at {} and no `raw` or `synthetic` source",
                cache.display()
            )
        });
    };
    if cache.join(data::META_FILE).is_file() {
        let absent: Vec<String> = opts
            .inputs()
            .iter()
            .filter(|(p, _)| !p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if opts.generated_from.is_none() && !absent.is_empty() {
            // Nothing to compare with, and nothing else to train on: say so, and go on.
            if !quiet {
                eprintln!(
                    "warning: {} does not exist; using the cache {} without checking that it was \
                     made from it",
                    absent.join(", "),
                    cache.display()
                );
            }
            return Dataset::open(&cache);
        }
        let meta = CacheMeta::read(&cache)?;
        let wanted = Fingerprint::of(&opts)?;
        let diffs = match &meta.fingerprint {
            Some(f) => f.differences(&wanted),
            None => vec!["it records no fingerprint (prepared by an older mlet)".to_string()],
        };
        if diffs.is_empty() {
            return Dataset::open(&cache);
        }
        if data.cache.is_some() {
            anyhow::bail!(
                "data.cache: {} does not match this experiment's data section: {}. It is named \
                 explicitly, so it is not replaced: delete it to have it prepared again, prepare \
                 it yourself with `mlet data prepare`, or remove data.raw / data.train / \
                 data.synthetic to use it as it is",
                cache.display(),
                diffs.join("; ")
            );
        }
        if !quiet {
            eprintln!(
                "{} is out of date ({}); preparing it again",
                cache.display(),
                diffs.join("; ")
            );
        }
    }
    if let Some(synth) = &data.synthetic {
        if let Some(parent) = opts.input.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !quiet {
            eprintln!(
                "generating {} synthetic rows into {}",
                synth.rows,
                opts.input.display()
            );
        }
        data::write_synthetic(&opts.input, synth)?;
    }
    if !quiet {
        let inputs: Vec<String> = opts
            .inputs()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        eprintln!("preparing {} into {}", inputs.join(", "), cache.display());
    }
    let prepared = data::prepare(&opts);
    if opts.generated_from.is_some() {
        // The generator is deterministic; the cache is all later runs need.
        let _ = std::fs::remove_file(&opts.input);
    }
    prepared?;
    Dataset::open(&cache)
}

/// Settings a command line may impose on every run of a file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// A raw data file replacing the file's `data.raw` (and any synthetic source or predefined
    /// split).
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
            c.data.train = None;
            c.data.valid = None;
            c.data.test = None;
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

/// Trains one run (preparing its data if needed); its directory has its training curve
/// (`train_curve.png|svg`).
pub fn train_one(spec: &RunSpec, opts: &RunOptions) -> Result<(PathBuf, RunMetrics)> {
    let dataset = open_data(&spec.config.data, opts.quiet)?;
    training::train_run(spec, &dataset, opts)
        .with_context(|| format!("run {}/{}", spec.config.name, spec.run))
}

pub fn read_metrics(run_dir: &Path) -> Result<RunMetrics> {
    let path = run_dir.join(training::METRICS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a metrics file", path.display()))
}
