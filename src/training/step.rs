//! One optimisation step: a batch's tensors, forward, loss with its L2 terms, backward, update.
use anyhow::Result;
use tch::{Device, Reduction, Tensor};

use super::optimizer::SparseGrad;
use super::Optimizer;
use crate::config::{L2Config, LossReduction};
use crate::data::Batch;
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
    // autograd differentiates the network's own L2 penalty; the embedding side's
    // (`l2.embedding · Σ w²` over the rows looked up and MLET's projections, `l2.linear` over
    // the linear part's rows) is applied by the optimizer (`SparseGrad::l2`)
    let loss = match model.network.l2_penalty() {
        Some(p) => &data_loss + p,
        None => data_loss.shallow_clone(),
    };
    optimizer.zero_grad();
    model.backward(&loss, &forward.lookups);
    // per example, whatever the reduction
    let loss_value = data_loss.double_value(&[]) / reduction_scale(reduction, batch.size);
    if loss_value.is_finite() {
        optimizer.step(&SparseGrad::of_model(model, &forward.lookups, l2));
    }
    Ok((loss_value, index))
}

fn reduction_scale(reduction: Reduction, batch: usize) -> f64 {
    match reduction {
        Reduction::Sum => batch as f64,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        EmbeddingConfig, EmbeddingKind, ModelConfig, OptimizerConfig, OptimizerKind, WdlConfig,
    };
    use crate::models::InputShape;
    use tch::Kind;

    const CARDS: [usize; 3] = [5, 3, 7];
    const LR: f64 = 0.5;
    const L2: L2Config = L2Config {
        embedding: 0.05,
        linear: 0.03,
        dnn: 0.0,
        interaction: None,
    };

    /// field 0 repeats id 2, field 2 repeats id 6; id 0 of field 1 is never used
    fn batch() -> Batch {
        Batch {
            size: 3,
            dense: vec![0.5; 3 * 2],
            cat: vec![2, 1, 6, 2, 2, 0, 4, 1, 6],
            label: vec![1.0, 0.0, 0.0],
        }
    }

    fn fresh_model(kind: EmbeddingKind, optimizer: OptimizerKind) -> (CtrModel, Optimizer) {
        tch::manual_seed(3);
        let mut emb = EmbeddingConfig::new(4, kind, Some(6));
        emb.init_std = 0.5;
        let model_cfg = ModelConfig::Wdl(WdlConfig {
            dnn_hidden_units: vec![8],
            ..Default::default()
        });
        let shape = InputShape {
            num_dense: 2,
            cardinalities: CARDS.to_vec(),
            hashed: vec![],
        };
        let model = CtrModel::new(&model_cfg, &emb, &shape, Device::Cpu).unwrap();
        // the tables start near zero (N(0, 1e-4²)); make their rows' penalty matter
        tch::no_grad(|| {
            let _ = model.embeddings.table.shallow_clone().normal_(0.0, 0.5);
            let _ = model
                .linear
                .as_ref()
                .unwrap()
                .table
                .shallow_clone()
                .normal_(0.0, 0.3);
        });
        // Adagrad's and Adam's first steps are `lr · sign(g)` at their defaults, blind to a
        // penalty that does not flip a sign: an accumulator and an eps of 1 make them see it
        let config = OptimizerConfig {
            initial_accumulator_value: 1.0,
            eps: Some(1.0),
            ..OptimizerConfig::new(optimizer, LR)
        };
        let optimizer = Optimizer::new(&config, &model.vs);
        (model, optimizer)
    }

    /// The tables, then MLET's projections (if any), copied.
    fn tables(model: &CtrModel) -> Vec<Tensor> {
        let tables = model.sparse_tables().into_iter().map(|(_, e)| &e.table);
        tables
            .chain(&model.embeddings.projection)
            .map(Tensor::copy)
            .collect()
    }

    /// The L2 penalty on the rows a batch looks up and on MLET's projections, which the
    /// optimizer applies as weight decay, moves the tables as autograd through its definition
    /// does: `l2.embedding · Σ w²` over every distinct embedding row of the batch (a row looked
    /// up twice counts once) and over the projections, and `l2.linear` likewise over the linear
    /// part's rows, differentiated as part of the loss. Rows the batch does not touch are not
    /// decayed (DeepCTR-Torch penalises whole tables; we do not).
    #[test]
    fn folded_row_penalty_is_autograd_of_its_definition() {
        let kinds = [EmbeddingKind::Single, EmbeddingKind::Mlet];
        let optimizers = [
            OptimizerKind::Sgd,
            OptimizerKind::Adagrad,
            OptimizerKind::Adam,
        ];
        for (kind, optimizer_kind) in kinds.into_iter().flat_map(|k| optimizers.map(|o| (k, o))) {
            // the definition: the penalty of the looked-up rows in the loss, through autograd
            let (model, mut optimizer) = fresh_model(kind, optimizer_kind);
            let before = tables(&model);
            let (dense, labels, index) = batch_tensors(&batch(), &model, Device::Cpu).unwrap();
            let forward = model.forward(&dense, &index, true);
            let data_loss = forward.logits.binary_cross_entropy_with_logits::<Tensor>(
                &labels,
                None,
                None,
                Reduction::Sum,
            );
            let row_penalties = forward
                .lookups
                .iter()
                .zip([L2.embedding, L2.linear])
                .map(|(lookup, l2)| lookup.rows.square().sum(Kind::Float) * l2);
            let projection_penalty = (model.embeddings.projection.as_ref())
                .map(|p| p.square().sum(Kind::Float) * L2.embedding);
            let loss = std::iter::once(data_loss)
                .chain(row_penalties)
                .chain(projection_penalty)
                .chain(model.network.l2_penalty())
                .reduce(|a, b| a + b)
                .unwrap();
            optimizer.zero_grad();
            model.backward(&loss, &forward.lookups);
            optimizer.step(&SparseGrad::of_model(
                &model,
                &forward.lookups,
                &L2Config::NONE,
            ));
            let want = tables(&model);

            let (model, mut optimizer) = fresh_model(kind, optimizer_kind);
            let l2 = L2;
            train_step(
                &model,
                &mut optimizer,
                &batch(),
                Device::Cpu,
                LossReduction::Sum,
                &l2,
            )
            .unwrap();
            let got = tables(&model);
            // and without the penalty the step differs (by more than 10x the tolerance below): the
            // comparison can fail
            let (plain, mut plain_optimizer) = fresh_model(kind, optimizer_kind);
            train_step(
                &plain,
                &mut plain_optimizer,
                &batch(),
                Device::Cpu,
                LossReduction::Sum,
                &L2Config::NONE,
            )
            .unwrap();
            let plain = tables(&plain);
            let linear = index.linear.as_ref().unwrap();
            for (t, touched) in [&index.embedding.unique, &linear.unique]
                .into_iter()
                .enumerate()
            {
                let diff = (&got[t] - &want[t]).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-6,
                    "{kind:?} {optimizer_kind:?} table {t}: {diff} from the definition"
                );
                let moved = (&plain[t] - &want[t]).abs().max().double_value(&[]);
                assert!(
                    moved > 1e-5,
                    "{kind:?} {optimizer_kind:?} table {t}: the penalty moved nothing"
                );
                // rows outside the batch: untouched
                let mask = Tensor::ones([before[t].size()[0]], (Kind::Bool, Device::Cpu))
                    .index_fill(0, touched, 0);
                assert!(got[t]
                    .index(&[Some(&mask)])
                    .equal(&before[t].index(&[Some(&mask)])));
            }
            assert_eq!(got.len(), 2 + (kind == EmbeddingKind::Mlet) as usize);
            if let (Some(got), Some(want), Some(plain)) = (got.get(2), want.get(2), plain.get(2)) {
                let diff = (got - want).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-6,
                    "{optimizer_kind:?} projections: {diff} from the definition"
                );
                let moved = (plain - want).abs().max().double_value(&[]);
                assert!(
                    moved > 1e-5,
                    "{optimizer_kind:?} projections: the penalty moved nothing"
                );
            }
        }
    }
}
