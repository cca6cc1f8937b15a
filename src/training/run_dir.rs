//! A run directory: `config.yaml` (resolved settings), `run.json` (seed, versions, device),
//! `train_log.csv`, `metrics.json`, `weights.safetensors`, `optimizer.safetensors`.
//!
//! A run is written into `<run>.partial/` and renamed to `<run>/` only when complete, so a
//! directory without the suffix always holds a finished run and a kill leaves at most a partial
//! directory. The next attempt clears it, unless it holds a checkpoint (`checkpoint/`, written
//! with `training.checkpoint_every`) of the same resolved configuration: then it resumes there.
use anyhow::{Context, Result};
use serde::Serialize;

use crate::atomic::{write_atomic, PendingDir};
use std::path::{Path, PathBuf};

pub const METRICS: &str = "metrics.json";
/// The checkpoint directory inside a partial run directory.
pub const CHECKPOINT: &str = "checkpoint";
/// The file of a checkpoint written last into it; also marks a directory as a checkpoint.
pub const CHECKPOINT_STATE: &str = "state.json";
/// The resolved configuration a checkpoint was written under (the run's `config.yaml`).
pub const CHECKPOINT_CONFIG: &str = "config.yaml";

pub struct RunDir {
    final_path: PathBuf,
    partial: PathBuf,
}

impl RunDir {
    pub fn path_for(output: &Path, experiment: &str, run: &str) -> PathBuf {
        output.join(experiment).join(run)
    }

    /// Whether `dir` holds a finished run.
    pub fn is_finished(dir: &Path) -> bool {
        dir.join(METRICS).is_file()
    }

    fn partial_of(final_path: &Path) -> Result<PathBuf> {
        let name = final_path
            .file_name()
            .context("run directory has no name")?
            .to_string_lossy()
            .into_owned();
        Ok(final_path.with_file_name(format!("{name}.partial")))
    }

    /// Starts a fresh partial directory for the run at `final_path`.
    pub fn begin(final_path: &Path) -> Result<RunDir> {
        let partial = Self::partial_of(final_path)?;
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("cannot clear {}", partial.display()))?;
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(RunDir {
            final_path: final_path.to_path_buf(),
            partial,
        })
    }

    /// Opens the partial directory of the run at `final_path`: when it holds a complete
    /// checkpoint written under exactly `config_yaml` (the resolved settings' text), keeps it
    /// and returns the checkpoint's path to resume from; otherwise starts afresh as `begin`.
    pub fn open(final_path: &Path, config_yaml: &str) -> Result<(RunDir, Option<PathBuf>)> {
        let partial = Self::partial_of(final_path)?;
        let checkpoint = partial.join(CHECKPOINT);
        let same_config = std::fs::read_to_string(checkpoint.join(CHECKPOINT_CONFIG))
            .is_ok_and(|text| text == config_yaml);
        if !(same_config && checkpoint.join(CHECKPOINT_STATE).is_file()) {
            return Ok((Self::begin(final_path)?, None));
        }
        // leftovers of writes a kill interrupted (`.NAME.tmp-PID`, `.checkpoint.old-PID`)
        for entry in std::fs::read_dir(&partial)
            .with_context(|| format!("cannot read {}", partial.display()))?
        {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok((
            RunDir {
                final_path: final_path.to_path_buf(),
                partial,
            },
            Some(checkpoint),
        ))
    }

    /// Replaces the checkpoint atomically: `fill` writes the files into a temporary directory
    /// (`.checkpoint.tmp-PID`), which is then renamed to `checkpoint/`. `fill` must write
    /// `CHECKPOINT_STATE`. A kill leaves either the previous checkpoint or the new one (or, in
    /// the instant between moving the old one aside and renaming the new one, none).
    pub fn write_checkpoint(&self, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let target = self.partial.join(CHECKPOINT);
        let pending = PendingDir::new(&target, CHECKPOINT_STATE)?;
        fill(&pending.tmp)?;
        anyhow::ensure!(
            pending.tmp.join(CHECKPOINT_STATE).is_file(),
            "a checkpoint without {CHECKPOINT_STATE}"
        );
        // on disk before the rename makes it the checkpoint
        for entry in std::fs::read_dir(&pending.tmp)? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        pending.commit(CHECKPOINT_STATE)
    }

    /// Where files go while the run is in flight.
    pub fn dir(&self) -> &Path {
        &self.partial
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        write_atomic(&self.partial.join(name), text.as_bytes())
    }

    /// Publishes the finished run, replacing an older finished run of the same name. The
    /// checkpoint, if any, is dropped: the run directory holds the final state.
    pub fn finish(self) -> Result<PathBuf> {
        let checkpoint = self.partial.join(CHECKPOINT);
        if checkpoint.exists() {
            std::fs::remove_dir_all(&checkpoint)
                .with_context(|| format!("cannot remove {}", checkpoint.display()))?;
        }
        if self.final_path.exists() {
            let old = self.final_path.with_extension("old");
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
            }
            std::fs::rename(&self.final_path, &old)?;
            std::fs::rename(&self.partial, &self.final_path)?;
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&self.partial, &self.final_path)
                .with_context(|| format!("cannot move the run to {}", self.final_path.display()))?;
        }
        Ok(self.final_path)
    }
}
