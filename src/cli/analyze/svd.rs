//! `mlet analyze svd` (placeholder until implemented).
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SvdArgs {
    /// Finished run directories.
    pub run_dirs: Vec<PathBuf>,
}

pub fn run(_args: SvdArgs, _quiet: bool) -> Result<()> {
    bail!("mlet analyze svd is not implemented yet")
}
