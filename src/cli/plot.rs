//! `mlet plot RESULTS.csv`: draw the figures of a results table (and, with `--curves`, training
//! loss curves of run directories) as PNG and SVG.
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

use crate::plots::{
    file_safe, plan_figures, plot_bench_compare, plot_training_curve, read_bench_csv, render_plan,
    FigureKind,
};
use crate::results::read_results_csv;

/// Which figures to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Every figure that applies.
    All,
    /// Test AUC vs embedding dimension d (Fig. 5/6).
    AucVsD,
    /// Test LogLoss vs d.
    LoglossVsD,
    /// Test AUC vs init σ of the MLET factor layer (Fig. 4).
    AucVsSigma,
    /// Relative PR-AUC gain of MLET over the baseline per test frequency decile (Table 4).
    GainByDecile,
    /// Test AUC vs embedding size, single vs multi-embedding (paper 004, Table 1).
    AucVsScale,
    /// The comparative benchmark's CSV (`make bench-compare`) as bars of every tool's median
    /// samples/s per workload; not part of `all`, since it reads another kind of CSV.
    BenchCompare,
}

impl KindArg {
    fn kinds(self) -> Vec<FigureKind> {
        match self {
            KindArg::All => FigureKind::ALL.to_vec(),
            KindArg::AucVsD => vec![FigureKind::AucVsD],
            KindArg::LoglossVsD => vec![FigureKind::LogLossVsD],
            KindArg::AucVsSigma => vec![FigureKind::AucVsSigma],
            KindArg::GainByDecile => vec![FigureKind::GainByDecile],
            KindArg::AucVsScale => vec![FigureKind::AucVsScale],
            KindArg::BenchCompare => Vec::new(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Results table (CSV, one row per run) to draw the figures of.
    #[arg(value_name = "RESULTS.csv", required_unless_present = "curves")]
    pub results: Option<PathBuf>,
    /// Directory the figures are written to (created if missing).
    #[arg(long, value_name = "DIR", default_value = "plots")]
    pub out: PathBuf,
    /// File-name prefix of the figures (default: the results file's name without extension, or
    /// `runs` with only --curves).
    #[arg(long, value_name = "NAME")]
    pub prefix: Option<String>,
    /// Which figures to draw.
    #[arg(long, value_enum, default_value_t = KindArg::All)]
    pub kind: KindArg,
    /// Also draw training loss vs samples seen from these run directories' train_log.csv (a
    /// train_log.csv path is accepted too).
    #[arg(long, value_name = "RUN_DIR", num_args = 1..)]
    pub curves: Vec<PathBuf>,
    /// Title of the training-curve figure (say which data set, model and scale).
    #[arg(long, value_name = "TEXT")]
    pub curves_title: Option<String>,
}

/// The log file of a run directory (or the path itself when it is a CSV file).
fn train_log_of(p: &Path) -> PathBuf {
    if p.is_file() {
        p.to_path_buf()
    } else {
        p.join("train_log.csv")
    }
}

/// Legend labels for run directories: the last path component, or the last two where the last
/// components collide.
fn run_labels(dirs: &[PathBuf]) -> Vec<String> {
    let dir_of = |p: &PathBuf| -> PathBuf {
        if p.is_file() {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            p.clone()
        }
    };
    let last = |p: &Path, n: usize| -> String {
        let parts: Vec<String> = p
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != "." && !c.is_empty())
            .collect();
        let from = parts.len().saturating_sub(n);
        parts[from..].join("/")
    };
    let short: Vec<String> = dirs.iter().map(|p| last(&dir_of(p), 1)).collect();
    short
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if short.iter().filter(|t| *t == s).count() > 1 {
                last(&dir_of(&dirs[i]), 2)
            } else {
                s.clone()
            }
        })
        .collect()
}

pub fn run(args: PlotArgs, quiet: bool) -> Result<()> {
    if args.results.is_none() && args.curves.is_empty() {
        bail!("give a results table (RESULTS.csv) and/or --curves RUN_DIR...");
    }
    let prefix = match (&args.prefix, &args.results) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => r
            .file_stem()
            .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned()),
        (None, None) => "runs".into(),
    };
    let mut written = Vec::new();
    match &args.results {
        Some(results) if args.kind == KindArg::BenchCompare => {
            let bars = read_bench_csv(results)?;
            if bars.is_empty() {
                bail!(
                    "{}: no `median` rows (the benchmark writes them when it finishes)",
                    results.display()
                );
            }
            let stem = args
                .out
                .join(format!("{}_samples_per_s", file_safe(&prefix)));
            let title = "Training throughput, same rows, model, batch, optimizer and threads";
            written.extend(plot_bench_compare(&bars, &stem, title)?);
        }
        _ => {}
    }
    if let Some(results) = args
        .results
        .as_ref()
        .filter(|_| args.kind != KindArg::BenchCompare)
    {
        let rows = read_results_csv(results)?;
        if rows.is_empty() {
            bail!("{}: the results table has no rows", results.display());
        }
        let plan = plan_figures(&rows, &args.out, &prefix, &args.kind.kinds());
        if !quiet {
            for s in &plan.skipped {
                eprintln!("note: {s}");
            }
        }
        if plan.figures.is_empty() && args.curves.is_empty() {
            bail!(
                "{}: no figure applies (each needs at least two d values, or two init σ values \
                 among the MLET runs)",
                results.display()
            );
        }
        written.extend(render_plan(&rows, &plan)?);
    }
    if !args.curves.is_empty() {
        let labels = run_labels(&args.curves);
        let logs: Vec<(PathBuf, String)> = args
            .curves
            .iter()
            .map(|p| train_log_of(p))
            .zip(labels)
            .collect();
        let title = args
            .curves_title
            .clone()
            .unwrap_or_else(|| "Training loss vs samples seen".into());
        let stem = args
            .out
            .join(format!("{}_training_loss", file_safe(&prefix)));
        written.extend(plot_training_curve(&logs, &stem, &title)?);
    }
    if !quiet {
        for p in &written {
            println!("{}", p.display());
        }
    }
    Ok(())
}
