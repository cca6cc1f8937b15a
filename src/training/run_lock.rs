//! A run being trained is locked against a second trainer: `<run>.lock` beside the run
//! directory, held with `flock` and holding the trainer's PID. The kernel releases a `flock`
//! when its holder dies, however it dies, so a lock file left by a killed trainer is stale by
//! construction and the next trainer takes it over; a live holder makes the next one fail.
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock of one run, released (and its file removed) on drop.
#[derive(Debug)]
pub struct RunLock {
    // never read: while open it holds the flock
    _file: File,
    path: PathBuf,
    /// The experiment directory when this lock created it: removed again if still empty, so
    /// that a run refused before training leaves nothing behind.
    created_dir: Option<PathBuf>,
}

/// What `RunLock::acquire` found.
#[derive(Debug)]
pub struct Acquired {
    pub lock: RunLock,
    /// The PID a stale lock file named: a trainer that died without releasing it.
    pub stale_pid: Option<u32>,
}

impl RunLock {
    /// `<run>.lock` beside the run directory `final_dir` (not inside `<run>.partial/`, which
    /// a starting trainer clears).
    pub fn path_for(final_dir: &Path) -> Result<PathBuf> {
        let name = final_dir
            .file_name()
            .with_context(|| format!("{}: run directory has no name", final_dir.display()))?
            .to_string_lossy()
            .into_owned();
        Ok(final_dir.with_file_name(format!("{name}.lock")))
    }

    /// Locks the run at `final_dir`, or fails naming the process that trains it.
    pub fn acquire(final_dir: &Path) -> Result<Acquired> {
        let path = Self::path_for(final_dir)?;
        let created_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf);
        crate::atomic::ensure_parent(&path)?;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open the run lock {}", path.display()))?;
            if !try_flock(&file, libc::LOCK_EX)
                .with_context(|| format!("cannot lock {}", path.display()))?
            {
                let holder = match read_pid(&mut file) {
                    Some(pid) => format!("process {pid}"),
                    None => "another process".to_string(),
                };
                bail!(
                    "{}: this run is being trained by {holder} (it holds {}); wait for it to \
                     finish or stop it",
                    final_dir.display(),
                    path.display()
                );
            }
            // A holder that was releasing may have unlinked the file we opened: then the lock
            // is on an orphaned inode and the path belongs to whoever created it anew.
            let ours = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            // a released lock is unlinked, so any PID still recorded is a dead trainer's
            let stale_pid = read_pid(&mut file);
            let me = std::process::id();
            let written = (|| -> std::io::Result<()> {
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                writeln!(file, "{me}")?;
                file.flush()
            })();
            written.with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(Acquired {
                lock: RunLock {
                    _file: file,
                    path,
                    created_dir,
                },
                stale_pid,
            });
        }
    }

    /// The PID of a live trainer holding the run at `final_dir`, if one does (`Some(None)`
    /// when it holds the lock but has not written its PID yet).
    pub fn holder(final_dir: &Path) -> Result<Option<Option<u32>>> {
        let path = Self::path_for(final_dir)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        if try_flock(&file, libc::LOCK_SH)
            .with_context(|| format!("cannot lock {}", path.display()))?
        {
            // free: stale or just released
            return Ok(None);
        }
        Ok(Some(read_pid(&mut file)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // unlinked while still held; the inode check in `acquire` covers a racing opener
        // (closing `file` afterwards releases the flock)
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.created_dir {
            // fails, as it should, once the directory holds anything
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether a non-blocking `flock(op)` succeeded (false: someone else holds it).
fn try_flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor this `File` owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_and_is_removed_on_release() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("exp").join("run1");
        let first = RunLock::acquire(&run).unwrap();
        assert!(first.stale_pid.is_none());
        let path = tmp.path().join("exp").join("run1.lock");
        assert_eq!(first.lock.path(), path);
        let me = std::process::id();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            me.to_string()
        );
        assert_eq!(RunLock::holder(&run).unwrap(), Some(Some(me)));
        // flock locks belong to open file descriptions: a second open in this process conflicts
        let err = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(err.contains(&format!("process {me}")), "{err}");
        assert!(err.contains("run1.lock"), "{err}");
        drop(first);
        assert!(!path.exists());
        assert_eq!(RunLock::holder(&run).unwrap(), None);
        let again = RunLock::acquire(&run).unwrap();
        assert!(again.stale_pid.is_none());
    }

    #[test]
    fn a_lock_file_nobody_holds_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run2");
        std::fs::write(tmp.path().join("run2.lock"), "4194305\n").unwrap();
        assert_eq!(RunLock::holder(&run).unwrap(), None);
        let got = RunLock::acquire(&run).unwrap();
        assert_eq!(got.stale_pid, Some(4194305));
        let text = std::fs::read_to_string(tmp.path().join("run2.lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
