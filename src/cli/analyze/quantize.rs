//! `mlet analyze quantize`: 8-bit quantisation of a run's tables, evaluated on the test split.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use crate::analysis::compression::fig8;
use crate::analysis::quantize::{quantize_analysis, write_quantize_report};
use crate::analysis::AnalysisRun;
use crate::results::format_k;
use crate::training::parse_device;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Finished run directories; each gets <run>/analysis/quantize.json, quantize.csv (per
    /// field) and quantize_metrics.csv (fp32 against int8).
    #[arg(required = true)]
    pub run_dirs: Vec<PathBuf>,
    /// Device to evaluate on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: QuantizeArgs, quiet: bool) -> Result<()> {
    let device = parse_device(&args.device)?;
    for dir in &args.run_dirs {
        let mut run = AnalysisRun::open(dir, device)?;
        let report = quantize_analysis(&mut run)?;
        let paths = write_quantize_report(&run, &report)?;
        if !quiet {
            println!("{} (d = {}):", dir.display(), report.dim);
            println!(
                "  {:<12} {:>12} {:>8} {:>10}",
                "field", "scale", "alpha", "rel L2 err"
            );
            for f in &report.fields {
                println!(
                    "  {:<12} {:>12.4e} {:>8.4} {:>10.4}",
                    f.field, f.scale, f.alpha, f.rel_l2_error
                );
            }
            println!(
                "  {:<6} {:>8} {:>8} {:>8} {:>14}",
                "", "AUC", "LogLoss", "PR-AUC", "bytes"
            );
            for p in [&report.fp32, &report.int8] {
                println!(
                    "  {:<6} {:>8.4} {:>8.4} {:>8.4} {:>14}",
                    p.precision, p.test.auc, p.test.logloss, p.test.pr_auc, p.embedding_bytes
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
pub struct Fig8Args {
    /// A grid's output directory (<output>/<name>, holding results.csv) with single-layer and
    /// MLET runs, some trained with `embedding.hash`; missing quantisation analyses are computed
    /// first.
    pub grid_dir: PathBuf,
    /// Where the figure fig8_compression.png|svg goes (default: the grid directory).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Device to evaluate on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run_fig8(args: Fig8Args, quiet: bool) -> Result<()> {
    let device = parse_device(&args.device)?;
    let plots = args.plots.clone().unwrap_or_else(|| args.grid_dir.clone());
    let report = fig8(&args.grid_dir, &plots, device)?;
    if !quiet {
        for dir in &report.analysed {
            println!("analysed {}", dir.display());
        }
        println!(
            "{:>9} {:>4} {:>10} {:>17} {:>15}",
            "k", "d", "variant", "test AUC", "embedding bytes"
        );
        for p in &report.points {
            println!(
                "{:>9} {:>4} {:>10} {:>8.4} ± {:<6.4} {:>15}",
                format_k(p.k),
                p.d,
                p.variant,
                p.auc_mean,
                p.auc_std,
                p.embedding_bytes
            );
        }
    }
    for p in &report.outputs {
        println!("wrote {}", p.display());
    }
    Ok(())
}
