//! `mlet analyze quantize` (placeholder until implemented).
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Finished run directories.
    pub run_dirs: Vec<PathBuf>,
}

pub fn run(_args: QuantizeArgs, _quiet: bool) -> Result<()> {
    bail!("mlet analyze quantize is not implemented yet")
}
