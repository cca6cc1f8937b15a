//! A run directory: `config.yaml` (resolved settings), `run.json` (seed, versions, device),
//! `train_log.csv`, `metrics.json`, `weights.safetensors`.
//!
//! A run is written into `<run>.partial/` and renamed to `<run>/` only when complete, so a
//! directory without the suffix always holds a finished run and a kill leaves at most a partial
//! directory, which the next attempt clears.
use anyhow::{Context, Result};
use serde::Serialize;

use crate::atomic::write_atomic;
use std::path::{Path, PathBuf};

pub const METRICS: &str = "metrics.json";

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

    /// Starts a fresh partial directory for the run at `final_path`.
    pub fn begin(final_path: &Path) -> Result<RunDir> {
        let name = final_path
            .file_name()
            .context("run directory has no name")?
            .to_string_lossy()
            .into_owned();
        let partial = final_path.with_file_name(format!("{name}.partial"));
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

    /// Where files go while the run is in flight.
    pub fn dir(&self) -> &Path {
        &self.partial
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        write_atomic(&self.partial.join(name), text.as_bytes())
    }

    /// Publishes the finished run, replacing an older finished run of the same name.
    pub fn finish(self) -> Result<PathBuf> {
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
