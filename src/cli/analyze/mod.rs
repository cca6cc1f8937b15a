//! `mlet analyze …`: analyses of a finished run without retraining (see `crate::analysis`).
pub mod quantize;
pub mod spectrum;
pub mod svd;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Singular values, effective rank and information abundance of every collapsed table.
    Spectrum(spectrum::SpectrumArgs),
    /// Replace every table by its rank-r truncated SVD and evaluate on the test split.
    Svd(svd::SvdArgs),
    /// Quantize every table to 8 bits (symmetric, L2-optimal scale) and evaluate on the test split.
    Quantize(quantize::QuantizeArgs),
    /// Table 5: a grid's single-layer runs truncated to rank r against MLET trained at d = r.
    Table5(svd::Table5Args),
    /// Fig. 8: a grid's runs at fp32, int8, with hashing and int8 + hashing, AUC against d.
    Fig8(quantize::Fig8Args),
}

pub fn run(cmd: AnalyzeCommand, quiet: bool) -> Result<()> {
    match cmd {
        AnalyzeCommand::Spectrum(a) => spectrum::run(a, quiet),
        AnalyzeCommand::Svd(a) => svd::run(a, quiet),
        AnalyzeCommand::Quantize(a) => quantize::run(a, quiet),
        AnalyzeCommand::Table5(a) => svd::run_table5(a, quiet),
        AnalyzeCommand::Fig8(a) => quantize::run_fig8(a, quiet),
    }
}
