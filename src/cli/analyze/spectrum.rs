//! `mlet analyze spectrum RUN_DIR...`: singular values, effective rank and information abundance
//! of every collapsed table, with figures comparing the runs.
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tch::Device;

use crate::analysis::spectrum::{run_spectrum, write_spectrum, RunSpectrum};
use crate::analysis::{AnalysisRun, ANALYSIS_DIR};
use crate::plots::file_safe;
use crate::plots::spectrum::{plot_information_abundance, plot_singular_values};

/// Writes `<run>/analysis/spectrum.json` (every field's singular values, descending) and
/// `spectrum.csv` (field, cardinality, dim, effective_rank, information_abundance) for each run,
/// prints a table per run, and draws two kinds of figures over all runs: information abundance
/// per field (fields sorted by cardinality) and σ_i/σ_1 curves of a few fields.
///
/// Effective rank: singular values above 0.01 of the largest (paper 002). Information abundance:
/// sum of singular values over the largest (paper 004). A zero table has 0 for both.
#[derive(Args, Debug)]
pub struct SpectrumArgs {
    /// Finished run directories (with config.yaml, run.json and weights.safetensors).
    #[arg(required = true)]
    pub run_dirs: Vec<PathBuf>,
    /// Directory for the figures (PNG and SVG) [default: <first run>/analysis].
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Draw no figures.
    #[arg(long, conflicts_with_all = ["plots", "fields"])]
    pub no_plots: bool,
    /// Fields whose σ_i/σ_1 curves are drawn: names (C3) or 0-based positions, comma-separated
    /// [default: the 4 fields with the most rows in the first run].
    #[arg(long, value_delimiter = ',', value_name = "FIELD")]
    pub fields: Vec<String>,
}

pub fn run(args: SpectrumArgs, quiet: bool) -> Result<()> {
    // a mistyped directory fails before anything is computed or written
    for dir in &args.run_dirs {
        if !dir.is_dir() {
            bail!("{}: no such run directory", dir.display());
        }
    }
    let mut spectra: Vec<RunSpectrum> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    for dir in &args.run_dirs {
        let run = AnalysisRun::open_tables(dir, Device::Cpu)?;
        let spectrum = run_spectrum(&run)?;
        if !args.no_plots {
            if spectra.is_empty() {
                fields = if args.fields.is_empty() {
                    spectrum.largest_fields(4)
                } else {
                    args.fields
                        .iter()
                        .map(|key| Ok(spectrum.find_field(key.trim())?.field.clone()))
                        .collect::<Result<_>>()?
                };
            } else {
                for f in &fields {
                    spectrum.find_field(f)?;
                }
            }
        }
        let written = write_spectrum(&run, &spectrum)?;
        if !quiet {
            print_table(&spectrum);
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!();
        }
        spectra.push(spectrum);
    }
    if args.no_plots {
        return Ok(());
    }
    disambiguate(&mut spectra);
    let out_dir = args
        .plots
        .clone()
        .unwrap_or_else(|| args.run_dirs[0].join(ANALYSIS_DIR));
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("--plots: cannot create {}: {e}", out_dir.display()))?;
    let mut written = plot_information_abundance(
        &spectra,
        &out_dir.join("spectrum_information_abundance"),
        "Information abundance of the collapsed tables",
    )?;
    for f in &fields {
        written.extend(plot_singular_values(
            &spectra,
            f,
            &out_dir.join(format!("spectrum_singular_values_{}", file_safe(f))),
            &format!("Normalised singular values of field {f}"),
        )?);
    }
    if !quiet {
        for p in &written {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// Runs of different experiments may share a directory name: label those by `<parent>/<name>`.
fn disambiguate(spectra: &mut [RunSpectrum]) {
    let names: Vec<String> = spectra.iter().map(|s| s.run.clone()).collect();
    for s in spectra.iter_mut() {
        if names.iter().filter(|n| **n == s.run).count() > 1 {
            if let Some(parent) = s.dir.parent().and_then(|p| p.file_name()) {
                s.run = format!("{}/{}", parent.to_string_lossy(), s.run);
            }
        }
    }
}

fn print_table(s: &RunSpectrum) {
    println!(
        "{} ({}, {}, d = {}):",
        s.dir.display(),
        s.model,
        match s.k {
            Some(k) => format!("MLET k = {k}"),
            None => "single-layer".into(),
        },
        s.dim
    );
    let width = s
        .fields
        .iter()
        .map(|f| f.field.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "  {:<width$}  {:>11}  {:>4}  {:>14}  {:>21}",
        "field", "cardinality", "dim", "effective rank", "information abundance"
    );
    for f in &s.fields {
        println!(
            "  {:<width$}  {:>11}  {:>4}  {:>14}  {:>21.3}",
            f.field, f.cardinality, f.dim, f.effective_rank, f.information_abundance
        );
    }
}
