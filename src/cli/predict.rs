//! `mlet predict RUN_DIR|EXPORT.pt --input FILE|- [--out FILE|-]`: click probabilities for raw
//! rows, parsed and mapped as `prepare` did for the training data.
use anyhow::{bail, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use crate::atomic::PendingFile;
use crate::cli::at_least_one;
use crate::cli::data::FormatArg;
use crate::data::CsvSchema;
use crate::serve::{predict_stream, Predictor};
use crate::training::parse_device;

/// Rows without the label column are accepted: with a header the label is looked up by name
/// and may be absent; without one, a first row with one column fewer than the training file
/// lacks the label (and so must every row). Values never seen in training (or rarer than
/// min_count) map to index 0, out of vocabulary.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A finished run directory (its data cache holds the vocabulary) or a TorchScript file
    /// written by `mlet export` (with <name>.vocab.json beside it).
    pub source: PathBuf,
    /// Raw rows in the training file's format; `-` reads standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write one probability per line; `-` (the default) is standard output. A file
    /// appears only when complete.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Input format [default: the one the vocabulary records]; must match it.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// CSV schema of --format csv [default: the recorded one]; must equal the one the model's
    /// data was prepared with.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Rows per batch at most (memory is bounded by it); a run directory's batches are also
    /// bounded by its `eval.memory_mb`, as its evaluation's are.
    #[arg(long, default_value_t = 4096, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: PredictArgs, quiet: bool) -> Result<()> {
    let device = parse_device(&args.device)?;
    let predictor = Predictor::open(&args.source, device)?;
    let recorded = &predictor.vocab;
    if let Some(f) = args.format {
        let name = match f {
            FormatArg::Criteo => "criteo",
            FormatArg::Avazu => "avazu",
            FormatArg::Csv => "csv",
        };
        if name != recorded.format {
            bail!(
                "--format {name}: the model was trained on {} rows (recorded in {}); its inputs \
                 must be parsed the same way",
                recorded.format,
                predictor.vocab_path.display()
            );
        }
    }
    if let Some(path) = &args.schema {
        if recorded.format != "csv" {
            bail!(
                "--schema: only for csv data; the model was trained on {} rows",
                recorded.format
            );
        }
        let schema = CsvSchema::from_yaml_file(path)?;
        if recorded.schema.as_ref() != Some(&schema) {
            bail!(
                "--schema {}: differs from the schema the model's data was prepared with \
                 (recorded in {}); leave --schema out to use the recorded one",
                path.display(),
                predictor.vocab_path.display()
            );
        }
    }
    if args.out == std::path::Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        predict_stream(&predictor, &args.input, &mut w, args.batch_size)?;
        w.flush()?;
        return Ok(());
    }
    let pending = PendingFile::new(&args.out)?;
    let report = {
        let file = std::fs::File::create(&pending.tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let report = predict_stream(&predictor, &args.input, &mut w, args.batch_size)?;
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", args.out.display(), e.error()))?
            .sync_all()?;
        report
    };
    pending.commit()?;
    if !quiet {
        println!(
            "wrote {} probabilities to {} (rows {} the label column)",
            report.rows,
            args.out.display(),
            if report.had_label { "with" } else { "without" }
        );
    }
    Ok(())
}
