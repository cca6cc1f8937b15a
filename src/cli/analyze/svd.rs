//! `mlet analyze svd` and `mlet analyze table5`: low-rank SVD truncation of a run's tables, and
//! Table 5 (truncated single-layer models against MLET at d = r) over a grid.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use crate::analysis::svd::{parse_ranks, svd_analysis, table5, write_svd_report};
use crate::analysis::AnalysisRun;
use crate::training::parse_device;

#[derive(Args, Debug)]
pub struct SvdArgs {
    /// Finished run directories; each gets <run>/analysis/svd.json and svd.csv.
    #[arg(required = true)]
    pub run_dirs: Vec<PathBuf>,
    /// Ranks to truncate every table to, comma-separated (tables with at most r rows or
    /// columns stay as they are).
    #[arg(long, default_value = "4,8,16,32")]
    pub ranks: String,
    /// Device to evaluate on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: SvdArgs, quiet: bool) -> Result<()> {
    let ranks = parse_ranks(&args.ranks)?;
    let device = parse_device(&args.device)?;
    for dir in &args.run_dirs {
        let mut run = AnalysisRun::open(dir, device)?;
        let report = svd_analysis(&mut run, &ranks)?;
        let paths = write_svd_report(&run, &report)?;
        if !quiet {
            println!("{} (d = {}):", dir.display(), report.dim);
            println!(
                "  {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>12}",
                "rank", "AUC", "LogLoss", "PR-AUC", "mean err", "max err", "params"
            );
            for r in &report.rows {
                println!(
                    "  {:>5} {:>8.4} {:>8.4} {:>8.4} {:>9.4} {:>9.4} {:>12}",
                    r.rank.map_or("full".to_string(), |r| r.to_string()),
                    r.test.auc,
                    r.test.logloss,
                    r.test.pr_auc,
                    r.mean_rel_error,
                    r.max_rel_error,
                    r.params
                );
            }
        }
        for p in paths {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct Table5Args {
    /// A grid's output directory (<output>/<name>, holding results.csv) with single-layer and
    /// MLET runs; missing SVD analyses of its single-layer runs are computed first.
    pub grid_dir: PathBuf,
    /// Ranks r, comma-separated; each single-layer run is truncated to the ranks r ≤ its d.
    #[arg(long, default_value = "4,8,16,32")]
    pub ranks: String,
    /// Where the figure table5_svd.png|svg goes (default: the grid directory).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Device to evaluate on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run_table5(args: Table5Args, quiet: bool) -> Result<()> {
    let ranks = parse_ranks(&args.ranks)?;
    let device = parse_device(&args.device)?;
    let plots = args.plots.clone().unwrap_or_else(|| args.grid_dir.clone());
    let report = table5(&args.grid_dir, &ranks, &plots, device)?;
    if !quiet {
        for dir in &report.analysed {
            println!("analysed {}", dir.display());
        }
        println!(
            "{:>8} {:>5} {:>17} {:>6} {:>17}",
            "single d", "rank", "SVD AUC", "MLET k", "MLET d=r AUC"
        );
        for r in &report.rows {
            println!(
                "{:>8} {:>5} {:>8.4} ± {:<6.4} {:>6} {:>8.4} ± {:<6.4}",
                r.single_d,
                r.rank,
                r.svd_auc_mean,
                r.svd_auc_std,
                r.mlet_k.map_or("-".to_string(), |k| k.to_string()),
                r.mlet_auc_mean,
                r.mlet_auc_std
            );
        }
    }
    for p in &report.outputs {
        println!("wrote {}", p.display());
    }
    Ok(())
}
