//! Resumable checkpoints: what the loop needs to go on bit for bit (`state.json`, next to the
//! weights, the optimizer state and the training log so far), and libtorch's seeding.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::early_stop::{EarlyStopper, StopState};
use super::run_dir::{CHECKPOINT_CONFIG, CHECKPOINT_STATE};
use super::{Optimizer, RunDir, OPTIMIZER_STATE, WEIGHTS};
use crate::data::{Dataset, Split};
use crate::models::CtrModel;
use crate::tensor_file::save_var_store;

/// libtorch's generator is process-wide: runs seed it and draw their initialisation (or reseed
/// it at a checkpoint) holding this lock, so that no other run's draws come in between.
pub fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reseeds libtorch's generator from (seed, step): done at each checkpoint, in an uninterrupted
/// run as in a resumed one, so that dropout draws after a checkpoint are the same either way.
pub fn reseed_torch(seed: u64, step: usize) {
    let _guard = torch_rng_lock();
    let mixed = (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ step as u64;
    tch::manual_seed((mixed >> 1) as i64);
}

/// The loop's running counters: where it stands and what the next log line needs.
#[derive(Clone, Debug, Default)]
pub struct LoopCounters {
    /// Optimizer steps done.
    pub step: usize,
    /// The 0-based epoch of the last step done, and how many batches of it were done.
    pub epoch: usize,
    pub batches_in_epoch: usize,
    pub samples: usize,
    /// The loss summed since the last training-log line, and the number of steps in it.
    pub interval_loss: f64,
    pub interval_steps: usize,
    /// Mean loss of the last logged interval.
    pub last_loss: f64,
    /// Training seconds before this process took over (timings are carried on, not reproduced).
    pub elapsed_before: f64,
    /// The loss summed over the steps of the current epoch, and their number (`epochs.csv`).
    pub epoch_loss: f64,
    pub epoch_steps: usize,
}

/// Where a checkpoint stands (`state.json`). The epoch's order is rebuilt by replaying the
/// seeded shuffles (`StdRng` seeded by `seed`, one shuffle per epoch), so it is not stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    step: usize,
    epoch: usize,
    batches_in_epoch: usize,
    samples: usize,
    /// `f64` bit patterns, so that the final loss comes out bit for bit.
    interval_loss_bits: u64,
    interval_steps: usize,
    last_loss_bits: u64,
    elapsed_s: f64,
    seed: u64,
    shuffle: bool,
    train_rows: usize,
    cardinalities: Vec<usize>,
    /// The current epoch's loss sum (f64 bits) and steps.
    #[serde(default)]
    epoch_loss_bits: u64,
    #[serde(default)]
    epoch_steps: usize,
    /// With `training.early_stopping`: where it stands (`epochs.csv` and the best weights are
    /// files of the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<StopState>,
}

impl CheckpointState {
    pub fn new(c: &LoopCounters, elapsed_s: f64, seed: u64, shuffle: bool, data: &Dataset) -> Self {
        CheckpointState {
            step: c.step,
            epoch: c.epoch,
            batches_in_epoch: c.batches_in_epoch,
            samples: c.samples,
            interval_loss_bits: c.interval_loss.to_bits(),
            interval_steps: c.interval_steps,
            last_loss_bits: c.last_loss.to_bits(),
            elapsed_s,
            seed,
            shuffle,
            train_rows: data.split(Split::Train).len,
            cardinalities: data.cardinalities().to_vec(),
            epoch_loss_bits: c.epoch_loss.to_bits(),
            epoch_steps: c.epoch_steps,
            early_stopping: None,
        }
    }

    /// Reads the state of the checkpoint at `dir`, refusing one written for other data.
    pub fn read(dir: &Path, data: &Dataset) -> Result<CheckpointState> {
        let path = dir.join(CHECKPOINT_STATE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let state: CheckpointState = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a checkpoint state", path.display()))?;
        if state.train_rows != data.split(Split::Train).len
            || state.cardinalities != data.cardinalities()
        {
            bail!(
                "the checkpoint in {} was written for other data (same settings, but another \
                 prepared cache); remove it to start the run over",
                dir.display()
            );
        }
        Ok(state)
    }

    pub fn counters(&self) -> LoopCounters {
        LoopCounters {
            step: self.step,
            epoch: self.epoch,
            batches_in_epoch: self.batches_in_epoch,
            samples: self.samples,
            interval_loss: f64::from_bits(self.interval_loss_bits),
            interval_steps: self.interval_steps,
            last_loss: f64::from_bits(self.last_loss_bits),
            elapsed_before: self.elapsed_s,
            epoch_loss: f64::from_bits(self.epoch_loss_bits),
            epoch_steps: self.epoch_steps,
        }
    }
}

/// Loads the weights and optimizer state of the checkpoint at `dir` into a fresh model.
pub fn restore(
    dir: &Path,
    state: &CheckpointState,
    model: &mut CtrModel,
    optimizer: &mut Optimizer,
) -> Result<()> {
    crate::tensor_file::load_var_store(&model.vs, &dir.join(WEIGHTS))
        .with_context(|| format!("cannot load the weights of {}", dir.display()))?;
    optimizer.load(&dir.join(OPTIMIZER_STATE))?;
    if optimizer.steps_taken() != state.step as i64 {
        bail!(
            "{}: the optimizer state is at step {}, the checkpoint at step {}",
            dir.display(),
            optimizer.steps_taken(),
            state.step
        );
    }
    reseed_torch(state.seed, state.step);
    Ok(())
}

/// Writes a checkpoint (weights, optimizer state, the training log so far, the loop's state and
/// the configuration it belongs to) atomically into the partial run directory.
pub fn write(
    run_dir: &RunDir,
    model: &CtrModel,
    optimizer: &Optimizer,
    config_text: &str,
    log_path: &Path,
    state: &CheckpointState,
    early: Option<&EarlyStopper>,
) -> Result<()> {
    run_dir.write_checkpoint(|dir| {
        if let Some(early) = early {
            early.write_checkpoint(run_dir.dir(), dir)?;
        }
        std::fs::write(dir.join(CHECKPOINT_CONFIG), config_text)?;
        save_var_store(&model.vs, &dir.join(WEIGHTS)).context("cannot save the weights")?;
        optimizer.save(&dir.join(OPTIMIZER_STATE))?;
        std::fs::copy(log_path, dir.join("train_log.csv"))?;
        // last: its presence marks a complete checkpoint
        std::fs::write(
            dir.join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(state)?,
        )?;
        Ok(())
    })
}
