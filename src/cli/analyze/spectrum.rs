//! `mlet analyze spectrum` (placeholder until implemented).
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SpectrumArgs {
    /// Finished run directories.
    pub run_dirs: Vec<PathBuf>,
}

pub fn run(_args: SpectrumArgs, _quiet: bool) -> Result<()> {
    bail!("mlet analyze spectrum is not implemented yet")
}
