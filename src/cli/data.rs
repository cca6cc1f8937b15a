//! `mlet data synth|prepare|stats`: argument parsing and one-line summaries around `crate::data`.
use crate::data::{
    cache_stats, prepare, write_synthetic, Dataset, InputError, InputFormat, PrepareOptions,
    SplitRule, SynthConfig,
};
use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a synthetic Criteo-shaped raw file (tab-separated label, I1..I13, C1..C26).
    ///
    /// Cardinalities follow the real Criteo-Kaggle profile scaled to the row count, value
    /// frequencies are Zipf-like, values go missing about as often as in the real data, and labels
    /// (~25% positive) come from a hidden model with per-category biases, pairwise interactions of
    /// rank-4 latent factors, and dense effects (see docs/data.md). The same --seed and --rows
    /// always give a byte-identical file.
    Synth(SynthArgs),
    /// Convert a raw file (or predefined train, valid and test files) into a memory-mapped
    /// dataset cache directory.
    ///
    /// One streaming pass, parsed on every core: rows go to dense.f32 / cat.u32 / label.f32 per
    /// split while per-field vocabularies are counted from the training split; then the
    /// categorical ids are renumbered by frequency in place, and freq.u32, vocab.json and
    /// meta.json are written. The cache appears under --out only when complete.
    ///
    /// One file is divided by --split; `--train A --valid B --test C` instead puts each file's
    /// rows, in order, into its split, with the vocabulary (and --min-count) from A alone. The
    /// three files must have the same columns (and header).
    Prepare(PrepareArgs),
    /// Print split sizes, positive rates and per-field frequency profiles of a cache.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Number of rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Seed of the generator (values, hidden model and labels).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (written atomically; parent directories are created).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Criteo train.txt: tab-separated, no header, label, I1..I13, C1..C26.
    Criteo,
    /// Avazu train: CSV with header; id dropped, click = label, hour -> hour-of-day dense.
    Avazu,
    /// Generic CSV/TSV described by --schema FILE.yaml.
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Time-ordered 7 days: first 6/7 of lines train, last day halved into valid then test.
    Days,
    /// Seeded random split per line (see --valid-fraction, --test-fraction, --split-seed).
    Random,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The raw input file, divided into train / valid / test by --split.
    #[arg(required_unless_present = "train", conflicts_with = "train")]
    pub input: Option<PathBuf>,
    /// Training file of a predefined split (needs --valid and --test; replaces INPUT and the
    /// --split options).
    #[arg(long, requires_all = ["valid", "test"],
          conflicts_with_all = ["split", "split_seed", "valid_fraction", "test_fraction"])]
    pub train: Option<PathBuf>,
    /// Validation file of a predefined split.
    #[arg(long, requires = "train")]
    pub valid: Option<PathBuf>,
    /// Test file of a predefined split.
    #[arg(long, requires = "train")]
    pub test: Option<PathBuf>,
    /// Input format.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// YAML schema of a --format csv file (delimiter, header, label, dense, categorical columns).
    #[arg(long, required_if_eq("format", "csv"))]
    pub schema: Option<PathBuf>,
    /// Output cache directory. An existing one is replaced only if it holds a cache and nothing
    /// else, and never if it contains the input.
    #[arg(long)]
    pub out: PathBuf,
    /// Training occurrences a value needs to get its own embedding row; rarer ones share row 0
    /// (out of vocabulary) with values never seen in training.
    #[arg(long, default_value_t = 1)]
    pub min_count: u32,
    /// Split rule [default: days for criteo, random otherwise; random when --valid-fraction,
    /// --test-fraction or --split-seed is given]. Paper 004's 8/1/1 split with seed 0:
    /// `--valid-fraction 0.1 --test-fraction 0.1 --split-seed 0`.
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// Seed of the random split [default: 0].
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Share of lines for validation (random split) [default: 0.05].
    #[arg(long)]
    pub valid_fraction: Option<f64>,
    /// Share of lines for test (random split) [default: 0.05].
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Skip malformed lines (they are counted in the summary and meta.json) instead of stopping
    /// at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A cache directory made by `mlet data prepare`.
    pub cache: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: DataCommand, quiet: bool) -> Result<()> {
    match cmd {
        DataCommand::Synth(a) => synth(a, quiet),
        DataCommand::Prepare(a) => run_prepare(a, quiet),
        DataCommand::Stats(a) => stats(a),
    }
}

fn synth(a: SynthArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let cfg = SynthConfig {
        rows: a.rows,
        seed: a.seed,
    };
    write_synthetic(&a.out, &cfg)?;
    if !quiet {
        println!(
            "wrote {} synthetic Criteo rows (seed {}) to {} in {:.1}s",
            a.rows,
            a.seed,
            a.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn run_prepare(a: PrepareArgs, quiet: bool) -> Result<()> {
    let format = match (a.format, a.schema) {
        (FormatArg::Criteo, None) => InputFormat::Criteo,
        (FormatArg::Avazu, None) => InputFormat::Avazu,
        (FormatArg::Csv, Some(schema)) => InputFormat::Csv { schema },
        (FormatArg::Csv, None) => bail!("--format csv needs --schema FILE.yaml"),
        (_, Some(_)) => bail!("--schema only applies to --format csv"),
    };
    let random_options =
        a.valid_fraction.is_some() || a.test_fraction.is_some() || a.split_seed.is_some();
    let random = SplitRule::Random {
        valid_fraction: a.valid_fraction.unwrap_or(0.05),
        test_fraction: a.test_fraction.unwrap_or(0.05),
    };
    let split = match (a.split, &a.valid, &a.test) {
        (_, Some(valid), Some(test)) => SplitRule::Files {
            valid: valid.clone(),
            test: test.clone(),
        },
        (Some(SplitArg::Days), ..) if random_options => bail!(
            "--split days divides by position; --valid-fraction, --test-fraction and \
             --split-seed belong to --split random"
        ),
        (Some(SplitArg::Days), ..) => SplitRule::Days,
        (Some(SplitArg::Random), ..) => random,
        (None, ..) if format == InputFormat::Criteo && !random_options => SplitRule::Days,
        (None, ..) => random,
    };
    let Some(input) = a.input.or(a.train) else {
        bail!("give the raw input file, or --train, --valid and --test");
    };
    let opts = PrepareOptions {
        input,
        format,
        out: a.out,
        min_count: a.min_count,
        split,
        seed: a.split_seed.unwrap_or(0),
        skip_bad_lines: a.skip_bad_lines,
        progress: !quiet && std::io::stderr().is_terminal(),
        generated_from: None,
    };
    let report = prepare(&opts).map_err(|e| match e.downcast_ref::<InputError>() {
        Some(_) if !opts.skip_bad_lines => {
            e.context("malformed input (--skip-bad-lines skips such lines and counts them)")
        }
        _ => e,
    })?;
    if !quiet {
        println!("{report}");
    }
    Ok(())
}

fn stats(a: StatsArgs) -> Result<()> {
    let ds = Dataset::open(&a.cache)?;
    let stats = cache_stats(&ds);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{stats}");
    }
    Ok(())
}
