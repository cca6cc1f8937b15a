//! `mlet grid EXPERIMENT.yaml`: run every point of an experiment's grid, then write the results
//! table, summaries and figures.
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use super::{OverrideArgs, Verbosity};
use crate::experiments::{self, GridOptions, Shard};

#[derive(Args, Debug)]
pub struct GridArgs {
    /// Experiment file (YAML) with a `grid:` section (and/or a `runs:` list).
    pub experiment: PathBuf,
    /// Parallel training processes on this machine; the cores are split between them.
    #[arg(long, short, default_value_t = 1)]
    pub jobs: usize,
    /// Run only shard i of n (0-based): grid points whose index is i modulo n. For array jobs
    /// of a cluster scheduler, e.g. `--shard $SLURM_ARRAY_TASK_ID/8`, sharing one output dir.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// List the runs (finished or pending) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Train again runs that already finished.
    #[arg(long)]
    pub force: bool,
    /// Train nothing: rebuild the results table, summaries and figures from finished runs.
    #[arg(long)]
    pub report_only: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

pub fn run(args: GridArgs, verbosity: Verbosity) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs: must be at least 1");
    }
    let opts = GridOptions {
        jobs: args.jobs,
        shard: args.shard,
        dry_run: args.dry_run,
        force: args.force,
        quiet: verbosity.quiet,
        report_only: args.report_only,
        overrides: args.overrides.into(),
    };
    let report = experiments::run_grid(&args.experiment, &opts)?;
    if args.dry_run {
        return Ok(());
    }
    if !verbosity.quiet {
        println!(
            "{} runs in the grid, {} selected: {} trained now, {} already finished, {} diverged, {} failed",
            report.total,
            report.selected,
            report.trained,
            report.already_finished,
            report.diverged.len(),
            report.failed.len()
        );
        if !report.locked.is_empty() {
            let names: Vec<&str> = report.locked.iter().map(|(n, _)| n.as_str()).collect();
            println!(
                "{} run(s) left to the process(es) training them: {}",
                names.len(),
                names.join(", ")
            );
        }
        for name in &report.diverged {
            println!("diverged {name} (recorded without metrics; see its metrics.json)");
        }
        for path in &report.written {
            println!("wrote {}", path.display());
        }
        for line in &report.findings {
            println!("{line}");
        }
    }
    if !report.failed.is_empty() {
        let list: Vec<String> = report
            .failed
            .iter()
            .map(|(n, e)| format!("  {n}: {e}"))
            .collect();
        bail!(
            "{} run(s) failed:\n{}",
            report.failed.len(),
            list.join("\n")
        );
    }
    Ok(())
}
