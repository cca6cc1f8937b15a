//! Independent parts of a hand-written CPU loop (MLET's projection, the fused row update) run on
//! libtorch's own OpenMP threads.
//!
//! libtorch's CPU kernels share out their work over an OpenMP team, whose threads wait (spin,
//! then sleep) between parallel regions. A loop of ours outside libtorch would otherwise run
//! on one core while the other waits; a thread pool of our own would compete with that team
//! for the same cores. So `run_parts` opens a parallel region in the OpenMP runtime libtorch
//! loaded (`GOMP_parallel`, found in the process at run time) and hands each team member its
//! parts. Where no such runtime is loaded, or libtorch runs on one thread, the parts run one
//! after the other on the caller's thread. Parts write disjoint memory and each computes
//! exactly what it would alone, so results do not depend on how many threads ran them.
use std::any::Any;
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use crate::simd::{dispatch, Kernel};

/// How many parts to cut a loop of `work` multiply-adds (or comparable element operations)
/// into: one per libtorch thread, or one where waking the team would cost about as much as
/// the loop (tens of microseconds of work).
pub fn parts_for(work: usize) -> usize {
    const MIN_WORK_PER_PART: usize = 50_000;
    #[cfg(test)]
    if let Some(parts) = tests::FORCED_PARTS.get() {
        return parts;
    }
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
    if openmp().is_none() {
        return 1;
    }
    threads.min(work / MIN_WORK_PER_PART).max(1)
}

/// Rows per part: `n` rows of `work` element operations in all, in about equal runs.
pub fn row_parts(n: usize, work: usize) -> Vec<usize> {
    let parts = parts_for(work).min(n).max(1);
    (0..parts)
        .map(|i| (i + 1) * n / parts - i * n / parts)
        .collect()
}

/// Runs every part (compiled for AVX2 where the CPU has it, as `dispatch`), spread over
/// libtorch's OpenMP team; returns when all have run. A part's panic is raised again here.
pub fn run_parts<K: Kernel + Send>(parts: Vec<K>) {
    let omp = match openmp() {
        Some(omp) if parts.len() > 1 => omp,
        _ => return parts.into_iter().for_each(dispatch),
    };
    let team = Team {
        slots: parts.into_iter().map(|p| Mutex::new(Some(p))).collect(),
        panic: Mutex::new(None),
        omp,
    };
    let threads = team.slots.len().min(u32::MAX as usize) as u32;
    // SAFETY: `member::<K>` reads `team` only while `GOMP_parallel` runs (it returns after
    // every team member has returned), and through shared references whose contents are
    // synchronised by their mutexes
    unsafe {
        (omp.parallel)(
            member::<K>,
            &team as *const Team<K> as *mut c_void,
            threads,
            0,
        )
    };
    let panic = team.panic.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// What the team members share: the parts not yet taken, the first panic, the runtime.
struct Team<K> {
    slots: Vec<Mutex<Option<K>>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    omp: &'static OpenMp,
}

/// One team member's share: parts `id, id + n, id + 2n, ...` (n: the team's actual size,
/// which the runtime may make smaller than asked).
extern "C" fn member<K: Kernel + Send>(data: *mut c_void) {
    // SAFETY: `run_parts` passes a `Team<K>` that outlives the parallel region
    let team = unsafe { &*(data as *const Team<K>) };
    // SAFETY: plain queries of the runtime, inside its parallel region
    let (id, n) = unsafe { ((team.omp.thread_num)(), (team.omp.num_threads)()) };
    let (id, n) = (id.max(0) as usize, n.max(1) as usize);
    for slot in team.slots.iter().skip(id).step_by(n) {
        let part = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(part) = part else { continue };
        // a panic must not unwind into C
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| dispatch(part))) {
            let mut first = team.panic.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(payload);
        }
    }
}

/// The OpenMP runtime's entry points (GNU libgomp's ABI, which LLVM's and Intel's runtimes also
/// export).
struct OpenMp {
    parallel: unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32),
    thread_num: unsafe extern "C" fn() -> i32,
    num_threads: unsafe extern "C" fn() -> i32,
}

/// The OpenMP runtime libtorch loaded, if any (looked up once).
fn openmp() -> Option<&'static OpenMp> {
    static OPENMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OPENMP
        .get_or_init(|| {
            // make sure libtorch (and with it its runtime) is initialised before looking
            let _ = tch::get_num_threads();
            let find = |name: &CStr| {
                // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches the libraries
                // the process loaded
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!p.is_null()).then_some(p)
            };
            let parallel = find(c"GOMP_parallel")?;
            let thread_num = find(c"omp_get_thread_num")?;
            let num_threads = find(c"omp_get_num_threads")?;
            // SAFETY: the symbols have these C signatures in every runtime with the GNU ABI
            unsafe {
                Some(OpenMp {
                    parallel: std::mem::transmute::<
                        *mut c_void,
                        unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32),
                    >(parallel),
                    thread_num: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> i32>(
                        thread_num,
                    ),
                    num_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> i32>(
                        num_threads,
                    ),
                })
            }
        })
        .as_ref()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashSet;

    thread_local! {
        /// What `parts_for` answers on this thread, where set (`with_parts`).
        pub static FORCED_PARTS: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Runs `f` with `parts_for` answering `parts` on this thread, to test that loops cut
    /// into any number of parts compute the same bits.
    pub fn with_parts<R>(parts: usize, f: impl FnOnce() -> R) -> R {
        FORCED_PARTS.set(Some(parts));
        let result = f();
        FORCED_PARTS.set(None);
        result
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::ThreadId;

    /// Records which thread ran it.
    struct Probe<'a> {
        ran: &'a Mutex<Vec<(usize, ThreadId)>>,
        index: usize,
        count: &'a AtomicUsize,
    }

    impl Kernel for Probe<'_> {
        #[inline(always)]
        fn run(self) {
            self.count.fetch_add(1, Ordering::SeqCst);
            let id = std::thread::current().id();
            self.ran.lock().unwrap().push((self.index, id));
        }
    }

    #[test]
    fn every_part_runs_once_on_the_team() {
        assert!(
            openmp().is_some(),
            "libtorch's OpenMP runtime was not found"
        );
        let (ran, count) = (Mutex::new(Vec::new()), AtomicUsize::new(0));
        let parts = (0..7)
            .map(|index| Probe {
                ran: &ran,
                index,
                count: &count,
            })
            .collect();
        run_parts(parts);
        assert_eq!(count.load(Ordering::SeqCst), 7);
        let ran = ran.into_inner().unwrap();
        let mut indices: Vec<usize> = ran.iter().map(|r| r.0).collect();
        indices.sort();
        assert_eq!(indices, (0..7).collect::<Vec<_>>());
        if tch::get_num_threads() > 1 {
            let threads: HashSet<ThreadId> = ran.iter().map(|r| r.1).collect();
            assert!(threads.len() > 1, "all parts ran on one thread");
        }
    }

    struct Panics;

    impl Kernel for Panics {
        #[inline(always)]
        fn run(self) {
            panic!("a part failed (the panic this test expects)");
        }
    }

    #[test]
    fn a_part_panic_reaches_the_caller() {
        let result = catch_unwind(|| run_parts(vec![Panics, Panics]));
        let payload = result.expect_err("the panic was lost");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"a part failed (the panic this test expects)")
        );
    }
}
