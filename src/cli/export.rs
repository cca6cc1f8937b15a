//! `mlet export RUN_DIR --out model.pt`: a TorchScript model with collapsed embeddings.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use crate::export::export_run;
use crate::training::parse_device;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A finished run directory (with config.yaml, run.json and weights.safetensors).
    pub run_dir: PathBuf,
    /// The TorchScript file to write; its schema goes beside it as <name>.schema.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the collapsed tables, one per field (.safetensors or .npz).
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Device to trace on (the module runs where its tensors live).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: ExportArgs, quiet: bool) -> Result<()> {
    let device = parse_device(&args.device)?;
    let report = export_run(&args.run_dir, &args.out, args.tables.as_deref(), device)?;
    if !quiet {
        println!(
            "wrote {} ({} bytes of collapsed embeddings)",
            report.module.display(),
            report.embedding_bytes
        );
        println!("wrote {}", report.schema.display());
        if let Some(t) = &report.tables {
            println!("wrote {}", t.display());
        }
    }
    Ok(())
}
