//! Reading a run's `train_log.csv` (`step,epoch,samples,loss,samples_per_s,elapsed_s`).
use anyhow::Result;
use std::path::Path;

use crate::results::csv::Table;

/// One logged interval of a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainLogPoint {
    pub step: u64,
    /// Training samples seen so far.
    pub samples: u64,
    /// Mean training loss over the interval.
    pub loss: f64,
}

/// Reads the columns `step`, `samples` and `loss` of a training log (other columns are
/// ignored). Errors name the file, line, column and what was expected.
pub fn read_train_log(path: &Path) -> Result<Vec<TrainLogPoint>> {
    let t = Table::read(path, &["step", "samples", "loss"])?;
    t.records
        .iter()
        .map(|r| {
            Ok(TrainLogPoint {
                step: t.get(r, "step", "a non-negative integer")?,
                samples: t.get(r, "samples", "a non-negative integer")?,
                loss: t.get(r, "loss", "a number")?,
            })
        })
        .collect()
}

/// One validation evaluation of a run with early stopping (a row of its `epochs.csv`).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPoint {
    /// 0: before training.
    pub epoch: u64,
    /// Training samples seen when it was evaluated.
    pub samples: u64,
    pub valid_auc: f64,
    pub valid_logloss: f64,
    /// Whether it was the best so far when it was evaluated.
    pub best: bool,
}

/// Reads the columns `epoch`, `samples`, `valid_auc`, `valid_logloss` and `best` of a run's
/// `epochs.csv` (written with `training.early_stopping`).
pub fn read_epochs(path: &Path) -> Result<Vec<EpochPoint>> {
    let t = Table::read(
        path,
        &["epoch", "samples", "valid_auc", "valid_logloss", "best"],
    )?;
    t.records
        .iter()
        .map(|r| {
            Ok(EpochPoint {
                epoch: t.get(r, "epoch", "a non-negative integer")?,
                samples: t.get(r, "samples", "a non-negative integer")?,
                valid_auc: t.get(r, "valid_auc", "a number")?,
                valid_logloss: t.get(r, "valid_logloss", "a number")?,
                best: t.get(r, "best", "true or false")?,
            })
        })
        .collect()
}
