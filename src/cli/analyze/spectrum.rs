//! `mlet analyze spectrum RUN_DIR...`: singular values, effective rank and information abundance
//! of every collapsed table (under multi-embedding, of every field's whole embedding and of each
//! set's table), with figures comparing the runs.
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tch::Device;

use crate::analysis::spectrum::{run_spectrum, write_spectrum, RunSpectrum};
use crate::analysis::{AnalysisRun, ANALYSIS_DIR};
use crate::plots::file_safe;
use crate::plots::spectrum::{
    plot_information_abundance, plot_set_information_abundance, plot_singular_values,
};

/// Writes `<run>/analysis/spectrum.json` (every field's singular values, descending) and
/// `spectrum.csv` (field, cardinality, dim, effective_rank, information_abundance, set) for each
/// run, prints a table per run, and draws figures over all runs: information abundance per field
/// (fields sorted by cardinality), σ_i/σ_1 curves of a few fields and, for each multi-embedding
/// run, the information abundance of each embedding set per field.
///
/// Under multi-embedding (embedding.sets M > 1) a field's whole embedding is its M tables side by
/// side (n x M·d, set `all`, named as the field), as paper 004 §5(a) compares it with a single
/// table of width M·d; each set's table (n x d, named set{m}.{field}) is listed too (§5(b)).
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
    /// Fields whose σ_i/σ_1 curves are drawn: names (C3: the whole embedding), one set's table
    /// of a multi-embedding run (set1.C3) or 0-based positions, comma-separated [default: the 4
    /// fields with the most rows in the first run].
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
    // whole fields, which every run must have (the runs share their data set's fields), and
    // tables of one set, which only multi-embedding runs have: some run must
    let mut fields: Vec<String> = Vec::new();
    let mut set_tables: Vec<String> = Vec::new();
    for dir in &args.run_dirs {
        let run = AnalysisRun::open_tables(dir, Device::Cpu)?;
        let spectrum = run_spectrum(&run)?;
        if !args.no_plots {
            if spectra.is_empty() {
                if args.fields.is_empty() {
                    fields = spectrum.largest_fields(4);
                } else {
                    for key in &args.fields {
                        let key = key.trim();
                        match spectrum.find_field(key) {
                            Ok(f) if f.set.is_some() => set_tables.push(f.field.clone()),
                            Ok(f) => fields.push(f.field.clone()),
                            Err(_) if is_set_table_name(key) => set_tables.push(key.to_string()),
                            Err(e) => return Err(e),
                        }
                    }
                }
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
    for key in &set_tables {
        if !spectra.iter().any(|s| s.find_field(key).is_ok()) {
            match spectra.iter().find(|s| s.sets > 1) {
                None => bail!(
                    "--fields: `{key}` names one embedding set's table, and no run given has \
                     several sets"
                ),
                Some(s) => return Err(s.find_field(key).expect_err("not in any run")),
            }
        }
        fields.push(key.clone());
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
    let title = if spectra.iter().any(|s| s.sets > 1) {
        "Information abundance per field (multi-embedding: all sets side by side)"
    } else {
        "Information abundance of the collapsed tables"
    };
    let mut written = plot_information_abundance(
        &spectra,
        &out_dir.join("spectrum_information_abundance"),
        title,
    )?;
    for s in spectra.iter().filter(|s| s.sets > 1) {
        written.extend(plot_set_information_abundance(
            s,
            &out_dir.join(format!(
                "spectrum_information_abundance_sets_{}",
                file_safe(&s.run)
            )),
            &format!("Information abundance of each embedding set: {}", s.label()),
        )?);
    }
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

/// `set{m}.{rest}` with m a number: a name of one set's table.
fn is_set_table_name(key: &str) -> bool {
    key.strip_prefix("set")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(m, field)| !m.is_empty() && m.parse::<usize>().is_ok() && !field.is_empty())
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
    let shape = match (s.k, s.sets) {
        (Some(k), 1) => format!("MLET k = {k}, d = {}", s.dim),
        (None, 1) => format!("single-layer, d = {}", s.dim),
        (Some(k), m) => format!("MLET k = {k}, {m} sets of d = {}", s.dim),
        (None, m) => format!("single-layer, {m} sets of d = {}", s.dim),
    };
    println!("{} ({}, {shape}):", s.dir.display(), s.model);
    let tables: Vec<_> = s.fields.iter().chain(&s.per_set).collect();
    let width = tables
        .iter()
        .map(|f| f.field.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let set_column = |text: &str| {
        if s.sets > 1 {
            format!("  {text:>3}")
        } else {
            String::new()
        }
    };
    println!(
        "  {:<width$}{}  {:>11}  {:>4}  {:>14}  {:>21}",
        "field",
        set_column("set"),
        "cardinality",
        "dim",
        "effective rank",
        "information abundance"
    );
    for f in tables {
        println!(
            "  {:<width$}{}  {:>11}  {:>4}  {:>14}  {:>21.3}",
            f.field,
            set_column(&f.set_label()),
            f.cardinality,
            f.dim,
            f.effective_rank,
            f.information_abundance
        );
    }
}
