//! Serving from raw rows (`mlet predict`): a trained run (rebuilt as `mlet export` does) or an
//! exported TorchScript file, its vocabulary, and a stream of raw rows → one click probability
//! per row, in batches (memory bounded by the batch size).
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

use crate::data::{Batch, RawRows, VocabFile};
use crate::export::{load_run, vocab_path, LoadedRun};
use crate::torch_error::brief;
use crate::training::{batch_tensors, eval_batch_size};

enum Model {
    Run(Box<LoadedRun>),
    Script(CModule),
}

/// A model and the vocabulary that turns raw rows into its inputs.
pub struct Predictor {
    model: Model,
    pub vocab: VocabFile,
    /// Where the vocabulary came from.
    pub vocab_path: PathBuf,
    device: Device,
}

impl Predictor {
    /// `source` is a finished run directory (its vocabulary is its data cache's `vocab.json`)
    /// or a file written by `mlet export` (its vocabulary is `<stem>.vocab.json` beside it).
    pub fn open(source: &Path, device: Device) -> Result<Predictor> {
        if source.is_dir() {
            let run = load_run(source, device)?;
            let cache = run.config.data.cache_dir();
            let vocab = VocabFile::of_cache(&cache).with_context(|| {
                format!(
                    "the vocabulary of run {} (its data cache)",
                    source.display()
                )
            })?;
            if vocab.cardinalities() != run.shape.cardinalities
                || vocab.dense.len() != run.shape.num_dense
            {
                bail!(
                    "{}: the data cache's vocabulary ({} dense, cardinalities {:?}) is not the \
                     one run {} was trained on ({} dense, {:?}); was the cache re-prepared from \
                     other data?",
                    cache.display(),
                    vocab.dense.len(),
                    vocab.cardinalities(),
                    source.display(),
                    run.shape.num_dense,
                    run.shape.cardinalities
                );
            }
            return Ok(Predictor {
                model: Model::Run(Box::new(run)),
                vocab,
                vocab_path: cache.join(crate::data::VOCAB_FILE),
                device,
            });
        }
        if !source.is_file() {
            bail!(
                "{}: no such run directory or exported model",
                source.display()
            );
        }
        let path = vocab_path(source);
        if !path.is_file() {
            bail!(
                "{}: missing: {} has no vocabulary beside it (exports before mlet predict \
                 existed had none); re-export the run with `mlet export`",
                path.display(),
                source.display()
            );
        }
        let vocab = VocabFile::read(&path)?;
        let module = CModule::load_on_device(source, device).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a TorchScript model ({})",
                source.display(),
                brief(e)
            )
        })?;
        Ok(Predictor {
            model: Model::Script(module),
            vocab,
            vocab_path: path,
            device,
        })
    }

    /// Rows per batch for a requested `batch_size`: a run directory's model also bounds them
    /// by its `eval.memory_mb`, as evaluation does (`eval_batch_size`; xDeepFM's CIN holds
    /// about 464 KiB a row, so 4,096 rows would be 1.8 GiB); an exported model, whose
    /// intermediates are not known here, takes `batch_size` as given.
    pub fn batch_rows(&self, batch_size: usize) -> usize {
        match &self.model {
            Model::Run(run) => batch_size.min(eval_batch_size(&run.config.eval, &run.model)),
            Model::Script(_) => batch_size,
        }
        .max(1)
    }

    /// Click probabilities of a batch of mapped rows.
    pub fn predict(&self, batch: &Batch) -> Result<Vec<f32>> {
        if batch.size == 0 {
            return Ok(Vec::new());
        }
        let p = tch::no_grad(|| -> Result<Tensor> {
            Ok(match &self.model {
                Model::Run(run) => {
                    let (dense, _, index) = batch_tensors(batch, &run.model, self.device)?;
                    run.model.forward(&dense, &index, false).logits.sigmoid()
                }
                Model::Script(m) => {
                    let b = batch.size as i64;
                    let dense = Tensor::from_slice(&batch.dense)
                        .view([b, -1])
                        .to_device(self.device);
                    let cat = Tensor::from_slice(&batch.cat)
                        .view([b, -1])
                        .to_device(self.device);
                    m.forward_ts(&[dense, cat])
                        .map_err(|e| anyhow::anyhow!("the model failed: {}", brief(e)))?
                }
            })
        })?;
        Ok(Vec::<f32>::try_from(
            &p.to_kind(Kind::Float).to_device(Device::Cpu).view([-1]),
        )?)
    }
}

/// What `predict_stream` did.
#[derive(Debug)]
pub struct PredictReport {
    pub rows: usize,
    pub had_label: bool,
}

/// Predicts every row of `input` (`-` = stdin), writing one probability per line to `out`
/// (shortest text that reads back as the same f32).
pub fn predict_stream(
    predictor: &Predictor,
    input: &Path,
    out: &mut dyn Write,
    batch_size: usize,
) -> Result<PredictReport> {
    let mut rows = RawRows::open(input, &predictor.vocab)?;
    let mut batch = Batch::default();
    let mut total = 0;
    let batch_size = predictor.batch_rows(batch_size);
    while rows.next_batch(batch_size, &mut batch)? > 0 {
        for p in predictor.predict(&batch)? {
            writeln!(out, "{p}")?;
        }
        total += batch.size;
    }
    Ok(PredictReport {
        rows: total,
        had_label: rows.has_label(),
    })
}
