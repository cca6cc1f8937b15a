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
