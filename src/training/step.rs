//! One optimisation step: a batch's tensors, forward, loss with its L2 terms, backward, update.
use anyhow::Result;
use tch::{Device, Kind, Reduction, Tensor};

use super::optimizer::SparseGrad;
use super::Optimizer;
use crate::config::{L2Config, LossReduction};
use crate::data::Batch;
use crate::embedding::Lookup;
use crate::models::{BatchIndex, CtrModel};

/// Dense features, labels and the lookup indices of a batch into `model`'s tables, on `device`.
pub fn batch_tensors(
    batch: &Batch,
    model: &CtrModel,
    device: Device,
) -> Result<(Tensor, Tensor, BatchIndex)> {
    let b = batch.size as i64;
    let dense = Tensor::from_slice(&batch.dense)
        .view([b, -1])
        .to_device(device);
    let labels = Tensor::from_slice(&batch.label).to_device(device);
    let index = model.index(&batch.cat, device)?;
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
) -> Result<(f64, BatchIndex)> {
    let reduction = match reduction {
        LossReduction::Mean => Reduction::Mean,
        LossReduction::Sum => Reduction::Sum,
    };
    let (dense, labels, index) = batch_tensors(batch, model, device)?;
    let forward = model.forward(&dense, &index, true);
    let data_loss = forward
        .logits
        .binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, reduction);
    let loss = match penalty(model, &forward.lookups, l2) {
        Some(p) => &data_loss + p,
        None => data_loss.shallow_clone(),
    };
    optimizer.zero_grad();
    model.backward(&loss, &forward.lookups);
    // per example, whatever the reduction
    let loss_value = data_loss.double_value(&[]) / reduction_scale(reduction, batch.size);
    if loss_value.is_finite() {
        optimizer.step(&SparseGrad::of_model(model, &forward.lookups));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmbeddingConfig, EmbeddingKind, ModelConfig, WdlConfig};
    use crate::models::InputShape;

    fn squares(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).square().sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Double,
        ))
        .unwrap()
    }

    /// The penalty against its definition: `l2.embedding` times the squared norm of every
    /// distinct embedding row the batch looks up (a row looked up twice counts once) plus
    /// MLET's projections, and `l2.linear` times the same over the linear part's rows; rows
    /// the batch does not touch add nothing.
    #[test]
    fn row_wise_l2_penalty_is_its_definition() {
        let cards = [5usize, 3, 7];
        // field 0 repeats id 2, field 2 repeats id 6; id 0 of field 1 is never used
        let cat: Vec<i64> = vec![2, 1, 6, 2, 2, 0, 4, 1, 6];
        let batch = Batch {
            size: 3,
            dense: vec![0.5; 3 * 2],
            cat: cat.clone(),
            label: vec![1.0, 0.0, 0.0],
        };
        let offsets = [0usize, 5, 8];
        let mut rows: Vec<usize> = cat
            .iter()
            .enumerate()
            .map(|(i, &id)| offsets[i % 3] + id as usize)
            .collect();
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), 6);
        for kind in [EmbeddingKind::Single, EmbeddingKind::Mlet] {
            tch::manual_seed(3);
            let emb = EmbeddingConfig {
                dim: 4,
                kind,
                k: Some(6),
                init_std: 0.5,
                table_init: Default::default(),
                table_std: 1e-4,
                sets: 1,
                hash: None,
            };
            let model_cfg = ModelConfig::Wdl(WdlConfig {
                dnn_hidden_units: vec![8],
                ..Default::default()
            });
            let shape = InputShape {
                num_dense: 2,
                cardinalities: cards.to_vec(),
                hashed: vec![],
            };
            let model = CtrModel::new(&model_cfg, &emb, &shape, Device::Cpu).unwrap();
            // the linear part starts at N(0, 1e-4²); make its rows matter
            let linear = model.linear.as_ref().unwrap();
            tch::no_grad(|| {
                let _ = linear.table.shallow_clone().normal_(0.0, 0.3);
            });
            let (dense, _, index) = batch_tensors(&batch, &model, Device::Cpu).unwrap();
            let forward = model.forward(&dense, &index, true);
            let l2 = L2Config {
                embedding: 0.01,
                linear: 0.003,
                dnn: 0.0,
                interaction: None,
            };
            let got = penalty(&model, &forward.lookups, &l2)
                .unwrap()
                .double_value(&[]);

            let emb_sq = squares(&model.embeddings.table);
            let lin_sq = squares(&linear.table);
            assert_eq!(emb_sq.len(), 15);
            let projection = model
                .embeddings
                .projection
                .as_ref()
                .map_or(0.0, |p| 0.01 * squares(&p.flatten(0, -1).unsqueeze(0))[0]);
            let mut want = projection;
            for &r in &rows {
                want += 0.01 * emb_sq[r] + 0.003 * lin_sq[r];
            }
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{kind:?}: penalty {got}, definition {want}"
            );
            // and it is not the whole-table penalty (DeepCTR-Torch's)
            let whole =
                projection + 0.01 * emb_sq.iter().sum::<f64>() + 0.003 * lin_sq.iter().sum::<f64>();
            assert!(whole - want > 1e-3 * whole, "{whole} vs {want}");
        }
    }
}
