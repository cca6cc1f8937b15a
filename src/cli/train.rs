//! `mlet train EXPERIMENT.yaml`: train the run(s) an experiment file lists.
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use super::{OverrideArgs, Verbosity};
use crate::experiments::{self, Outcome, Overrides};
use crate::training::RunOptions;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment file (YAML): data, model, embedding, optimizer, training, eval, output, and
    /// optionally `runs:` (a list of named overrides of those settings).
    pub experiment: PathBuf,
    /// Train only the named run(s) of the file (repeatable).
    #[arg(long = "run", value_name = "NAME")]
    pub runs: Vec<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Train again runs that already finished (the new run replaces the old when it completes).
    #[arg(long)]
    pub force: bool,
    /// Print the results as JSON lines (one per run) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TrainArgs, verbosity: Verbosity) -> Result<()> {
    let mut specs = experiments::load_experiment(&args.experiment)?.runs;
    if !args.runs.is_empty() {
        for name in &args.runs {
            if !specs.iter().any(|s| &s.run == name) {
                let known: Vec<&str> = specs.iter().map(|s| s.run.as_str()).collect();
                bail!(
                    "{}: no run named `{name}` (runs: {})",
                    args.experiment.display(),
                    known.join(", ")
                );
            }
        }
        specs.retain(|s| args.runs.contains(&s.run));
    }
    let overrides: Overrides = args.overrides.clone().into();
    for spec in &mut specs {
        overrides.apply(spec);
        if verbosity.verbose {
            eprintln!(
                "run {}:\n{}",
                spec.run,
                serde_yaml::to_string(&spec.config)?
            );
        }
    }
    let opts = RunOptions {
        quiet: verbosity.quiet,
    };
    let outcomes = experiments::run_all(&specs, args.force, &opts)?;
    if !args.json {
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>10} {:>9}  dir",
            "run", "state", "test AUC", "LogLoss", "valid AUC", "train s"
        );
    }
    for outcome in &outcomes {
        let (state, dir, m) = match outcome {
            Outcome::Trained(d, m) => ("trained", d, m),
            Outcome::Skipped(d, m) => ("finished", d, m),
        };
        let state = if m.diverged.is_some() {
            "diverged"
        } else {
            state
        };
        if args.json {
            println!("{}", serde_json::to_string(&**m)?);
            continue;
        }
        let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.5}"));
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>10} {:>9.1}  {}",
            m.run,
            state,
            fmt(m.test.map(|t| t.auc)),
            fmt(m.test.map(|t| t.logloss)),
            fmt(m.valid.map(|t| t.auc)),
            m.train.seconds,
            dir.display()
        );
    }
    let diverged: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Trained(_, m) | Outcome::Skipped(_, m) => {
                m.diverged.as_ref().map(|d| format!("  {}: {d}", m.run))
            }
        })
        .collect();
    if !diverged.is_empty() {
        bail!(
            "{} run(s) diverged:\n{}",
            diverged.len(),
            diverged.join("\n")
        );
    }
    Ok(())
}
