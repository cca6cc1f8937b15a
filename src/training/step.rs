//! One optimisation step: a batch's tensors, forward, loss with its L2 terms, backward, update.
use anyhow::Result;
use tch::{Device, Kind, Reduction, Tensor};

use super::optimizer::SparseGrad;
use super::Optimizer;
use crate::config::{L2Config, LossReduction};
use crate::data::Batch;
use crate::embedding::{Embeddings, Lookup, LookupIndex};
use crate::models::CtrModel;

/// Dense features, labels and the lookup index of a batch, on `device`.
pub fn batch_tensors(
    batch: &Batch,
    embeddings: &Embeddings,
    device: Device,
) -> Result<(Tensor, Tensor, LookupIndex)> {
    let b = batch.size as i64;
    let dense = Tensor::from_slice(&batch.dense)
        .view([b, -1])
        .to_device(device);
    let labels = Tensor::from_slice(&batch.label).to_device(device);
    let index = embeddings.index(&batch.cat, device)?;
    Ok((dense, labels, index))
}

/// One optimisation step on `batch`: forward, loss plus L2 penalty, backward, and the update —
/// skipped when the loss is not finite, so that a diverging run stops with the weights of its
/// last good step. Returns the data loss per example and the batch's lookup index.
pub fn train_step(
    model: &CtrModel,
    optimizer: &mut Optimizer,
    batch: &Batch,
    device: Device,
    reduction: LossReduction,
    l2: &L2Config,
) -> Result<(f64, LookupIndex)> {
    let reduction = match reduction {
        LossReduction::Mean => Reduction::Mean,
        LossReduction::Sum => Reduction::Sum,
    };
    let (dense, labels, index) = batch_tensors(batch, &model.embeddings, device)?;
    let forward = model.forward(&dense, &index, true);
    let data_loss = forward
        .logits
        .binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, reduction);
    let loss = match penalty(model, &forward.lookups, l2) {
        Some(p) => &data_loss + p,
        None => data_loss.shallow_clone(),
    };
    optimizer.zero_grad();
    loss.backward();
    // per example, whatever the reduction
    let loss_value = data_loss.double_value(&[]) / reduction_scale(reduction, batch.size);
    if loss_value.is_finite() {
        optimizer.step(&SparseGrad::of_model(model, &forward.lookups), &index);
    }
    Ok((loss_value, index))
}

fn reduction_scale(reduction: Reduction, batch: usize) -> f64 {
    match reduction {
        Reduction::Sum => batch as f64,
        _ => 1.0,
    }
}

/// The L2 terms of the loss: `l2.embedding · Σ w²` over the embedding rows the batch looked up
/// (and MLET's projections), `l2.linear` likewise over the linear part's rows, plus the
/// network's own penalty.
fn penalty(model: &CtrModel, lookups: &[Lookup], l2: &L2Config) -> Option<Tensor> {
    let mut terms: Vec<Tensor> = Vec::new();
    let square_sum = |t: &Tensor| t.square().sum(Kind::Float);
    if l2.embedding > 0.0 {
        terms.push(square_sum(&lookups[0].rows) * l2.embedding);
        if let Some(p) = &model.embeddings.projection {
            terms.push(square_sum(p) * l2.embedding);
        }
    }
    if l2.linear > 0.0 {
        if let Some(rows) = lookups.get(1).map(|l| &l.rows) {
            terms.push(square_sum(rows) * l2.linear);
        }
    }
    terms.extend(model.network.l2_penalty());
    terms.into_iter().reduce(|a, b| a + b)
}
