//! Training processes that do not outlive the grid that started them: each child asks the
//! kernel for SIGTERM when its parent dies (covers SIGKILL of the parent, which nothing in the
//! parent can catch), and SIGTERM/SIGINT/SIGHUP sent to the parent are passed on to the
//! children, waited for, and then end the parent as they would have.
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Makes `cmd`'s child receive SIGTERM when this process dies. The parent-death signal is tied
/// to the thread that forks, so the caller must spawn from a thread that lives as long as the
/// process (the main thread).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // the parent died before the request took effect
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the parent process has exited"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// The first termination signal received while `Forwarding` was installed (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// While alive, SIGTERM, SIGINT and SIGHUP are recorded instead of ending the process; the
/// loop that waits on the children polls `received`. Dropping it restores the defaults.
pub struct Forwarding {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl Forwarding {
    pub fn install() -> Forwarding {
        RECEIVED.store(0, Ordering::SeqCst);
        let handler = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let previous = SIGNALS
            .iter()
            // SAFETY: the handler only stores into an atomic.
            .map(|&sig| (sig, unsafe { libc::signal(sig, handler) }))
            .collect();
        Forwarding { previous }
    }

    pub fn received(&self) -> Option<libc::c_int> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// Ends this process by `sig` as if it had never been caught (so the exit status says so).
    pub fn die_by(self, sig: libc::c_int) -> ! {
        drop(self);
        // SAFETY: restoring the default action and raising a signal at ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        std::process::exit(128 + sig)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for &(sig, previous) in &self.previous {
            // SAFETY: putting back what `install` replaced.
            unsafe { libc::signal(sig, previous) };
        }
    }
}

/// Sends `sig` to every child, waits up to `grace` for them to exit, then SIGKILLs the rest.
pub fn stop_all(children: &mut [&mut Child], sig: libc::c_int, grace: Duration) {
    for child in children.iter_mut() {
        // SAFETY: signalling a child we have not reaped yet, so its PID is still ours.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
    let started = Instant::now();
    loop {
        let mut running = 0;
        for child in children.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 {
            return;
        }
        if started.elapsed() > grace {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The usual name of a termination signal, for messages.
pub fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
