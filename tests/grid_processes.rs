//! `mlet grid`'s training processes die with it (SIGKILL or SIGTERM of the grid), a run being
//! trained is locked against a second trainer, a stale lock is taken over, and a grid re-run
//! after a kill completes every run with all its files.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const RUNS: [&str; 4] = [
    "d2-baseline-seed1",
    "d2-baseline-seed2",
    "d4-baseline-seed1",
    "d4-baseline-seed2",
];

/// Four runs that would train for minutes (1000 epochs) unless `--max-steps` cuts them short.
fn grid_file(dir: &Path) -> PathBuf {
    let text = format!(
        "
name: g
data:
  synthetic: {{rows: 3000, seed: 3}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [8], top_mlp: [8]}}
embedding: {{dim: 4}}
training: {{batch_size: 64, threads: 1, epochs: 1000}}
output: {out}
report: {{plots_dir: {plots}, prefix: g, figures: false}}
grid:
  d: [2, 4]
  k: [baseline]
  seed: [1, 2]
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display(),
        plots = dir.join("plots").display(),
    );
    let path = dir.join("grid.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn mlet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlet"))
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `pid` is a live process (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

/// The PIDs in the run locks under `runs`, once `count` of them exist.
fn wait_for_locks(runs: &Path, count: usize, child: &mut Child) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let pids: Vec<u32> = RUNS
            .iter()
            .filter_map(|r| std::fs::read_to_string(runs.join(format!("{r}.lock"))).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no {count} training processes appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mlet ended before its runs were locked: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_gone_soon(pids: &[u32]) {
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "training processes {:?} outlived their grid",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A re-run (cut short by `--max-steps`) finishes every run, each complete and with nothing
/// left beside it.
fn rerun_completes_all(tmp: &Path, file: &Path) {
    let out = mlet()
        .args(["grid", "--jobs", "2", "--max-steps", "5"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("4 trained now, 0 already finished"),
        "{report}"
    );
    let runs = tmp.join("runs/g");
    for run in RUNS {
        for file in [
            "metrics.json",
            "weights.safetensors",
            "train_log.csv",
            "train_curve.png",
            "train_curve.svg",
            "config.yaml",
        ] {
            assert!(runs.join(run).join(file).is_file(), "{run}/{file} missing");
        }
    }
    let mut leftovers: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock") || n.ends_with(".log") || n.ends_with(".partial"))
        .collect();
    leftovers.sort();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn children_die_when_the_grid_is_killed_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = grid_file(tmp.path());
    let mut grid = mlet()
        .args(["--quiet", "grid", "--jobs", "2"])
        .arg(&file)
        .spawn()
        .unwrap();
    let pids = wait_for_locks(&tmp.path().join("runs/g"), 2, &mut grid);
    assert!(pids.iter().all(|&p| alive(p) && p != grid.id()));
    grid.kill().unwrap(); // SIGKILL: nothing in the grid can react
    grid.wait().unwrap();
    assert_gone_soon(&pids);
    rerun_completes_all(tmp.path(), &file);
}

#[test]
fn sigterm_stops_the_children_and_ends_the_grid_by_sigterm() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let file = grid_file(tmp.path());
    let mut grid = mlet()
        .args(["grid", "--jobs", "2"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pids = wait_for_locks(&tmp.path().join("runs/g"), 2, &mut grid);
    // SAFETY: signalling our own unreaped child.
    assert_eq!(unsafe { libc::kill(grid.id() as i32, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let out = grid.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SIGTERM: stopping 2 training process(es)"),
        "{stderr}"
    );
    assert_gone_soon(&pids);
    rerun_completes_all(tmp.path(), &file);
}

#[test]
fn a_locked_run_refuses_a_second_trainer_and_a_stale_lock_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let file = grid_file(tmp.path());
    let runs = tmp.path().join("runs/g");
    let run = RUNS[0];
    let mut first = mlet()
        .args(["--quiet", "train"])
        .arg(&file)
        .args(["--run", run])
        .spawn()
        .unwrap();
    let pid = wait_for_locks(&runs, 1, &mut first)[0];
    assert_eq!(pid, first.id());

    let second = mlet()
        .args(["train"])
        .arg(&file)
        .args(["--run", run, "--max-steps", "5"])
        .output()
        .unwrap();
    assert!(!second.status.success(), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("being trained by process {pid}"))
            && err.contains(&format!("{run}.lock")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // the grid leaves the locked run alone, says so, and trains the others
    let grid = mlet()
        .args(["grid", "--max-steps", "5"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(grid.status.success(), "{}", text(&grid));
    let all = text(&grid);
    assert!(
        all.contains(&format!("skipping {run}: being trained by process {pid}"))
            && all.contains("3 trained now"),
        "{all}"
    );
    assert!(!runs.join(run).exists() && runs.join(RUNS[1]).join("metrics.json").is_file());

    // killed: the lock file stays with a dead PID in it, and the next trainer takes it over
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(runs.join(format!("{run}.lock")).is_file());
    let third = mlet()
        .args(["train"])
        .arg(&file)
        .args(["--run", run, "--max-steps", "5"])
        .output()
        .unwrap();
    assert!(third.status.success(), "{}", text(&third));
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        err.contains(&format!("took over the lock left by process {pid}")),
        "{err}"
    );
    assert!(runs.join(run).join("train_curve.png").is_file());
    assert!(!runs.join(format!("{run}.lock")).exists());
}
