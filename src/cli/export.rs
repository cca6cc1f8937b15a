//! `mlet export RUN_DIR --out model.pt [--quantize int8]`: a TorchScript model with collapsed
//! embeddings.
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

use crate::export::{export_run_as, Precision};
use crate::training::parse_device;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QuantizeArg {
    /// int8 codes plus one f32 scale per field, dequantised on lookup (about 4x smaller tables).
    Int8,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A finished run directory (with config.yaml, run.json and weights.safetensors).
    pub run_dir: PathBuf,
    /// The TorchScript file to write; its schema goes beside it as <name>.schema.json and its
    /// vocabulary (raw value → index per field, the parsing and transforms) as <name>.vocab.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the collapsed tables, one per field (.safetensors or .npz); with
    /// --quantize int8 the int8 codes plus `scales`.
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Store the embedding tables quantised (the scales of `mlet analyze quantize`); the linear
    /// part's one weight per category stays f32.
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeArg>,
    /// Device to trace on (the module runs where its tensors live).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: ExportArgs, quiet: bool) -> Result<()> {
    let device = parse_device(&args.device)?;
    let precision = match args.quantize {
        None => Precision::F32,
        Some(QuantizeArg::Int8) => Precision::Int8,
    };
    let report = export_run_as(
        &args.run_dir,
        &args.out,
        args.tables.as_deref(),
        device,
        precision,
    )?;
    let what = match precision {
        Precision::F32 => "collapsed embeddings",
        Precision::Int8 => "int8 embeddings with their scales",
    };
    if quiet {
        println!("wrote {}", report.module.display());
    } else {
        println!(
            "wrote {} ({} bytes of {what})",
            report.module.display(),
            report.embedding_bytes
        );
        println!("wrote {}", report.schema.display());
        println!("wrote {}", report.vocab.display());
        if let Some(t) = &report.tables {
            println!("wrote {}", t.display());
        }
    }
    Ok(())
}
