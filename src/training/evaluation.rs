//! Evaluation of a trained model: the validation and test metrics, the test split by sample
//! frequency (paper 001's Table 4, and per decile), and the check that the collapsed model
//! predicts what the trained one does.
use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::batch_tensors;
use super::memory::PhasePeaks;
use crate::config::EvalConfig;
use crate::data::frequency::sample_log_frequencies;
use crate::data::{Batch, Dataset, Split, SplitData};
use crate::metrics::{self, FrequencyMetrics, Metrics};
use crate::models::{BatchIndex, CtrModel};

/// Rows per evaluation batch for `model`: `eval.batch_size`, or fewer where the model's
/// activations for that many rows (`CtrModel::eval_bytes_per_row`) would exceed
/// `eval.memory_mb`; at least one.
pub fn eval_batch_size(eval: &EvalConfig, model: &CtrModel) -> usize {
    let cap = (eval.memory_mb as u64) << 20;
    let per_row = model.eval_bytes_per_row().max(1) as u64;
    (cap / per_row).clamp(1, eval.batch_size.max(1) as u64) as usize
}

/// Logits of `model` for the first `limit` rows of a split (all when `None`).
pub fn predict(
    model: &CtrModel,
    split: &SplitData,
    batch_size: usize,
    limit: Option<usize>,
    device: Device,
) -> Result<Vec<f32>> {
    predict_mapped(model, split, batch_size, limit, device, |_| {})
}

/// `predict`, with each batch's lookup index passed through `map` before the forward pass.
fn predict_mapped(
    model: &CtrModel,
    split: &SplitData,
    batch_size: usize,
    limit: Option<usize>,
    device: Device,
    map: impl Fn(&mut BatchIndex),
) -> Result<Vec<f32>> {
    let n = limit.map_or(split.len, |l| l.min(split.len));
    let mut out = Vec::with_capacity(n);
    let mut batch = Batch::default();
    let rows: Vec<usize> = (0..n).collect();
    tch::no_grad(|| -> Result<()> {
        for chunk in rows.chunks(batch_size.max(1)) {
            split.gather(chunk, &mut batch);
            let (dense, _, mut index) = batch_tensors(&batch, model, device)?;
            map(&mut index);
            let logits = model.forward(&dense, &index, false).logits;
            let logits = logits.to_kind(Kind::Float).to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(&logits)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The metrics of `model` on one split (`None` when the split is empty).
pub fn evaluate_split(
    model: &CtrModel,
    dataset: &Dataset,
    split: Split,
    batch_size: usize,
    device: Device,
) -> Result<Option<Metrics>> {
    Ok(split_logits(model, dataset, split, batch_size, device)?.map(|(_, m)| m))
}

/// The logits and metrics of `model` on one split (`None` when the split is empty).
fn split_logits(
    model: &CtrModel,
    dataset: &Dataset,
    split: Split,
    batch_size: usize,
    device: Device,
) -> Result<Option<(Vec<f32>, Metrics)>> {
    let data = dataset.split(split);
    if data.len == 0 {
        return Ok(None);
    }
    let logits = predict(model, &data, batch_size, None, device)?;
    let m = metrics::evaluate(&logits, data.label)
        .with_context(|| format!("evaluating the {split} split"))?;
    Ok(Some((logits, m)))
}

/// Rows of the split the collapse check predicts.
const CHECK_ROWS: usize = 4096;

/// Predicts some test rows with the trained and with the collapsed embeddings. Only the table
/// rows those lookups read are collapsed (`Embeddings::collapse_rows`, the bits the whole
/// collapsed table holds for them), not the whole `n x d` table beside the model.
fn collapse_check(
    model: &mut CtrModel,
    dataset: &Dataset,
    batch: usize,
    device: Device,
) -> Result<f64> {
    let split = [Split::Test, Split::Valid, Split::Train]
        .into_iter()
        .map(|s| dataset.split(s))
        .find(|s| s.len > 0)
        .context("no rows to check the collapsed model on")?;
    let n = CHECK_ROWS.min(split.len);
    let mut read = Vec::new();
    let mut gathered = Batch::default();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(batch.max(1)) {
        split.gather(chunk, &mut gathered);
        let index = model.embeddings.index(&gathered.cat, Device::Cpu)?;
        read.extend(Vec::<i64>::try_from(&index.unique)?);
    }
    read.sort_unstable();
    read.dedup();
    let trained = predict(model, &split, batch, Some(n), device)?;
    let collapsed = model.embeddings.collapse_rows(&read)?;
    let sorted = Tensor::from_slice(&read).to_device(device);
    let trained_embeddings = std::mem::replace(&mut model.embeddings, collapsed);
    let folded = predict_mapped(model, &split, batch, Some(n), device, |index| {
        // global rows → their positions among the collapsed ones
        let unique = &index.embedding.unique;
        index.embedding.unique = unique.searchsorted(&sorted, false, false, "left", None::<Tensor>);
    });
    model.embeddings = trained_embeddings;
    let folded = folded?;
    Ok(trained
        .iter()
        .zip(&folded)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max))
}

/// The evaluation of a trained model written into `metrics.json`.
pub struct Evaluation {
    pub valid: Option<Metrics>,
    pub test: Option<Metrics>,
    pub test_by_frequency: Option<FrequencyMetrics>,
    pub collapse_max_abs_diff: f64,
}

/// Evaluates `model` on the validation and test splits (the test split also by sample
/// frequency) in batches sized by `eval` (`eval_batch_size`), and checks its collapsed form
/// against it; `phases` records the evaluation's and the check's memory peaks.
pub fn evaluate_trained(
    model: &mut CtrModel,
    dataset: &Dataset,
    eval: &EvalConfig,
    device: Device,
    phases: &mut PhasePeaks,
) -> Result<Evaluation> {
    phases.start("evaluation");
    let batch_size = eval_batch_size(eval, model);
    let valid = evaluate_split(model, dataset, Split::Valid, batch_size, device)?;
    let test = split_logits(model, dataset, Split::Test, batch_size, device)?;
    let test_by_frequency = match &test {
        Some((logits, _)) if logits.len() >= metrics::frequency::GROUPS => {
            let log_frequency = sample_log_frequencies(dataset, Split::Test);
            Some(metrics::frequency_metrics(
                logits,
                dataset.split(Split::Test).label,
                &log_frequency,
            )?)
        }
        _ => None,
    };
    phases.start("collapse_check");
    Ok(Evaluation {
        valid,
        test: test.map(|(_, m)| m),
        test_by_frequency,
        collapse_max_abs_diff: collapse_check(model, dataset, batch_size, device)?,
    })
}
