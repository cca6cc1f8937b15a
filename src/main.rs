use clap::{Parser, Subcommand};
use std::process::ExitCode;

use mlet::cli;

/// Multi-layer embedding training (MLET) for CTR models on libtorch.
#[derive(Parser)]
#[command(name = "mlet", version, about, long_about = None)]
struct Cli {
    /// Print nothing but errors and final results.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more detail (e.g. every run's settings).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate, prepare and inspect data sets.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Train the run(s) of an experiment file and print their metrics.
    Train(cli::train::TrainArgs),
    /// Run an experiment grid (resumable, parallel, shardable) and write results and figures.
    Grid(cli::grid::GridArgs),
    /// Render figures from a results table.
    Plot(cli::plot::PlotArgs),
    /// Export a trained run as a TorchScript model with collapsed embeddings.
    Export(cli::export::ExportArgs),
    /// Predict click probabilities for raw rows with a trained run or an exported model.
    Predict(cli::predict::PredictArgs),
    /// Analyse a finished run without retraining: spectra, SVD truncation, quantisation.
    #[command(subcommand)]
    Analyze(cli::analyze::AnalyzeCommand),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `mlet … | head` would end in a panic of `println!`: restore the
    // default, which ends a Unix tool quietly when its reader goes away.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // libtorch's CUDA support is loaded only on machines that can use it (see
    // training::device), before any libtorch call
    mlet::training::load_cuda_library_if_driver();
    let args = Cli::parse();
    let verbosity = cli::Verbosity::new(args.quiet, args.verbose);
    let result = match args.command {
        Command::Data(cmd) => cli::data::run(cmd, verbosity.quiet),
        Command::Train(a) => cli::train::run(a, verbosity),
        Command::Grid(a) => cli::grid::run(a, verbosity),
        Command::Plot(a) => cli::plot::run(a, verbosity.quiet),
        Command::Export(a) => cli::export::run(a, verbosity.quiet),
        Command::Predict(a) => cli::predict::run(a, verbosity.quiet),
        Command::Analyze(cmd) => cli::analyze::run(cmd, verbosity.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
