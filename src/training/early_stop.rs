//! Early stopping (`training.early_stopping`): the validation split is evaluated before training
//! (epoch 0) and after every epoch, one row per evaluation goes to `epochs.csv`, the best
//! epoch's weights are kept (every variable of the model, written to `best.safetensors` in the
//! run directory rather than copied in memory, where they would stand beside the model for the
//! whole run), training stops once `patience` epochs pass without an improvement, and the best
//! weights are put back before the test evaluation.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

use super::checkpoint::LoopCounters;
use super::evaluation::{eval_batch_size, evaluate_split};
use crate::config::{EarlyStopping, EvalConfig, StopMetric};
use crate::data::{Dataset, Split};
use crate::metrics::Metrics;
use crate::models::CtrModel;

/// One row per validation evaluation, in the run directory (and its checkpoint).
pub const EPOCHS_LOG: &str = "epochs.csv";
/// The best epoch's weights, in the run directory while it trains and inside a checkpoint.
pub const BEST_WEIGHTS: &str = "best.safetensors";

/// The columns of `epochs.csv` (read back by `plots::read_epochs`).
pub const EPOCHS_HEADER: [&str; 9] = [
    "epoch",
    "steps",
    "samples",
    "train_loss",
    "valid_auc",
    "valid_logloss",
    "best",
    "train_seconds",
    "eval_seconds",
];

/// Where early stopping stands; part of a checkpoint's `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StopState {
    /// The best epoch so far (0: the initial weights) and its metric (as f64 bits).
    pub best_epoch: Option<usize>,
    pub best_value_bits: u64,
    /// The last epoch evaluated.
    pub last_epoch: Option<usize>,
    /// Seconds spent evaluating the validation split so far: not training time.
    pub eval_seconds: f64,
}

/// How early stopping ended, for `metrics.json`.
#[derive(Clone, Copy, Debug)]
pub struct StopOutcome {
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    pub stopped_early: bool,
}

pub struct EarlyStopper {
    cfg: EarlyStopping,
    pub state: StopState,
    log: ::csv::Writer<std::fs::File>,
    /// The file of the best epoch's variables (`BEST_WEIGHTS` in the run directory), once
    /// there is a best epoch; removed when the stopper is dropped.
    best: Option<PathBuf>,
    run_dir: PathBuf,
    /// Set by the loop when it stops with epochs (and steps) left.
    pub stopped: bool,
}

impl EarlyStopper {
    /// Starts `epochs.csv` in `run_dir`, or, resuming, restores it, the state and the best
    /// weights from the checkpoint at `checkpoint`.
    pub fn open(
        cfg: &EarlyStopping,
        run_dir: &Path,
        checkpoint: Option<(&Path, StopState)>,
    ) -> Result<EarlyStopper> {
        let path = run_dir.join(EPOCHS_LOG);
        let best_path = run_dir.join(BEST_WEIGHTS);
        let (log, state, best) = match checkpoint {
            Some((dir, state)) => {
                std::fs::copy(dir.join(EPOCHS_LOG), &path)
                    .context("cannot restore epochs.csv from the checkpoint")?;
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .context("cannot open epochs.csv")?;
                let best = match state.best_epoch {
                    None => None,
                    Some(_) => {
                        let file = dir.join(BEST_WEIGHTS);
                        std::fs::copy(&file, &best_path).with_context(|| {
                            format!("cannot restore the best weights {}", file.display())
                        })?;
                        Some(best_path)
                    }
                };
                (crate::results::csv::writer(file), state, best)
            }
            None => {
                let file = std::fs::File::create(&path).context("cannot create epochs.csv")?;
                let mut log = crate::results::csv::writer(file);
                log.write_record(EPOCHS_HEADER)?;
                log.flush()?;
                (log, StopState::default(), None)
            }
        };
        Ok(EarlyStopper {
            cfg: cfg.clone(),
            state,
            log,
            best,
            run_dir: run_dir.to_path_buf(),
            stopped: false,
        })
    }

    /// Whether `epoch` (0: before training) has been evaluated already (resuming).
    pub fn done(&self, epoch: usize) -> bool {
        self.state.last_epoch.is_some_and(|e| e >= epoch)
    }

    /// Evaluates the validation split after `epoch` (0: before training), writes its row,
    /// keeps the weights if they are the best so far, and says whether `patience` epochs have
    /// passed since the best (the caller stops, and sets `stopped` when epochs were left). `train_seconds`: training time so far, evaluations excluded.
    #[allow(clippy::too_many_arguments)]
    pub fn end_epoch(
        &mut self,
        epoch: usize,
        model: &CtrModel,
        dataset: &Dataset,
        eval: &EvalConfig,
        device: Device,
        c: &LoopCounters,
        train_seconds: f64,
    ) -> Result<(Metrics, bool)> {
        let started = std::time::Instant::now();
        let batch_size = eval_batch_size(eval, model);
        let Some(m) = evaluate_split(model, dataset, Split::Valid, batch_size, device)? else {
            bail!(
                "training.early_stopping: the data has no validation rows to watch (prepare it \
                 with a validation split, e.g. data.split: {{valid: 0.1, test: 0.1}})"
            );
        };
        let value = match self.cfg.metric {
            StopMetric::Auc => m.auc,
            StopMetric::Logloss => m.logloss,
        };
        let best_value = f64::from_bits(self.state.best_value_bits);
        let improved =
            self.state.best_epoch.is_none() || self.cfg.metric.improves(value, best_value);
        if improved {
            self.keep(model, epoch)?;
            self.state.best_value_bits = value.to_bits();
        }
        let eval_seconds = started.elapsed().as_secs_f64();
        self.state.eval_seconds += eval_seconds;
        self.state.last_epoch = Some(epoch);
        let train_loss = if c.epoch_steps > 0 && epoch > 0 {
            format!("{:.6}", c.epoch_loss / c.epoch_steps as f64)
        } else {
            String::new()
        };
        self.log.write_record([
            epoch.to_string(),
            c.step.to_string(),
            c.samples.to_string(),
            train_loss,
            format!("{:.6}", m.auc),
            format!("{:.6}", m.logloss),
            improved.to_string(),
            format!("{train_seconds:.3}"),
            format!("{eval_seconds:.3}"),
        ])?;
        self.log.flush()?;
        let best = self.state.best_epoch.unwrap_or(epoch);
        Ok((m, epoch - best >= self.cfg.patience))
    }

    /// Writes every variable of `model` as the best epoch's (beside the file, then renamed
    /// over it: a failed write leaves the previous best).
    fn keep(&mut self, model: &CtrModel, epoch: usize) -> Result<()> {
        let run_dir = &self.run_dir;
        let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let path = run_dir.join(BEST_WEIGHTS);
        let partial = run_dir.join(format!("{BEST_WEIGHTS}.partial"));
        crate::tensor_file::write_safetensors(&vars, &partial)
            .context("cannot write the best weights")?;
        std::fs::rename(&partial, &path).context("cannot write the best weights")?;
        self.best = Some(path);
        self.state.best_epoch = Some(epoch);
        Ok(())
    }

    /// Puts the best epoch's weights back into `model`.
    pub fn restore_best(&self, model: &CtrModel) -> Result<()> {
        let Some(best) = &self.best else {
            return Ok(());
        };
        crate::tensor_file::load_var_store(&model.vs, best)
            .context("cannot put the best weights back")
    }

    /// Writes what a checkpoint needs beyond `state`: `epochs.csv` so far and the best weights.
    pub fn write_checkpoint(&self, run_dir: &Path, dir: &Path) -> Result<()> {
        std::fs::copy(run_dir.join(EPOCHS_LOG), dir.join(EPOCHS_LOG))?;
        if let Some(best) = &self.best {
            std::fs::copy(best, dir.join(BEST_WEIGHTS))
                .context("cannot save the best weights into the checkpoint")?;
        }
        Ok(())
    }

    pub fn outcome(&self) -> StopOutcome {
        StopOutcome {
            best_epoch: self.state.best_epoch,
            epochs_run: self.state.last_epoch.unwrap_or(0),
            stopped_early: self.stopped,
        }
    }
}

impl Drop for EarlyStopper {
    /// The best weights are in the model (or the run diverged): the file is not part of a run.
    fn drop(&mut self) {
        if let Some(best) = &self.best {
            let _ = std::fs::remove_file(best);
        }
    }
}
