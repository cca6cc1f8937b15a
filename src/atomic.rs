//! Outputs appear under their final name only when complete: they are written to a hidden sibling
//! and renamed at the end, so a kill leaves at most a `.NAME.tmp-PID` sibling behind.
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The hidden sibling `.NAME.TAG-PID[.EXT]` of `path`, keeping the extension last so that
/// writers that choose a format from it (PNG, safetensors) still see it.
pub(crate) fn sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: expected a file or directory name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let hidden = match path.extension() {
        Some(ext) => format!(".{name}.{tag}-{pid}.{}", ext.to_string_lossy()),
        None => format!(".{name}.{tag}-{pid}"),
    };
    Ok(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(hidden),
        _ => PathBuf::from(".").join(hidden),
    })
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let pending = PendingFile::new(path)?;
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&pending.tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    written.with_context(|| format!("cannot write {}", pending.tmp.display()))?;
    pending.commit()
}

pub(crate) fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    Ok(())
}

/// A file being written; removed on drop unless committed.
pub(crate) struct PendingFile {
    pub tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingFile {
    pub(crate) fn new(target: &Path) -> Result<PendingFile> {
        ensure_parent(target)?;
        let tmp = sibling(target, "tmp")?;
        Ok(PendingFile {
            tmp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn commit(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A directory being filled; removed on drop unless committed.
pub(crate) struct PendingDir {
    pub tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingDir {
    /// Refuses up front to replace something that is not a previous cache, so that no work is
    /// wasted and no unrelated directory is ever deleted.
    pub(crate) fn new(target: &Path, marker: &str) -> Result<PendingDir> {
        check_replaceable(target, marker)?;
        ensure_parent(target)?;
        let tmp = sibling(target, "tmp")?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
        }
        fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(PendingDir {
            tmp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Moves the finished directory into place, replacing an older one (renamed aside first, so
    /// the final name never holds a partial directory).
    pub(crate) fn commit(mut self, marker: &str) -> Result<()> {
        check_replaceable(&self.target, marker)?;
        let old = sibling(&self.target, "old")?;
        let had_old = self.target.exists();
        if had_old {
            if old.exists() {
                fs::remove_dir_all(&old)
                    .with_context(|| format!("cannot remove {}", old.display()))?;
            }
            fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move {} aside", self.target.display()))?;
        }
        fs::rename(&self.tmp, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        Ok(())
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

fn check_replaceable(target: &Path, marker: &str) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    if !target.is_dir() {
        bail!(
            "{}: exists and is not a directory; refusing to replace it",
            target.display()
        );
    }
    let empty = fs::read_dir(target)
        .with_context(|| format!("cannot read {}", target.display()))?
        .next()
        .is_none();
    if !empty && !target.join(marker).exists() {
        bail!(
            "{}: exists and is not a dataset cache (no {marker}); refusing to replace it",
            target.display()
        );
    }
    Ok(())
}
