//! One module per subcommand: an `Args` struct and `run()`, which resolves settings and calls the
//! library. Nothing here touches tensors.
pub mod analyze;
pub mod data;
pub mod export;
pub mod grid;
pub mod plot;
pub mod predict;
pub mod train;

#[derive(Clone, Copy, Debug, Default)]
pub struct Verbosity {
    pub quiet: bool,
    pub verbose: bool,
}

impl Verbosity {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Verbosity { quiet, verbose }
    }
}

/// Settings a command line imposes on every run of an experiment file (`train` and `grid`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Raw data file to use instead of the file's `data.raw` or `data.train`/`valid`/`test` (its
    /// format stays `data.format`).
    #[arg(long)]
    pub raw: Option<std::path::PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N (overrides training.device).
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch intra-op threads per run (overrides training.threads).
    #[arg(long, value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Root of the run directories (overrides output).
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// Stop each run after this many batches (a quick check, not a real result).
    #[arg(long, value_parser = at_least_one)]
    pub max_steps: Option<usize>,
}

/// A count that must be at least 1 (clap value parser: a clear error instead of a later panic).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a positive integer ({e})")),
    }
}

impl From<OverrideArgs> for crate::experiments::Overrides {
    fn from(a: OverrideArgs) -> Self {
        crate::experiments::Overrides {
            raw: a.raw,
            device: a.device,
            threads: a.threads,
            output: a.output,
            max_steps: a.max_steps,
        }
    }
}
