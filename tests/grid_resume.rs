//! `mlet grid`: dry runs, sharding, and resuming after a kill with no lost or duplicated rows.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mlet::results::read_results_csv;

fn grid_file(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "
name: g
data:
  synthetic: {{rows: 8000, seed: 2}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [16]}}
embedding: {{dim: 4, init_std: 0.25}}
training: {{batch_size: 64, threads: 1}}
output: {out}
report: {{plots_dir: {plots}, prefix: g}}
grid:
  d: [2, 4]
  k: [baseline, 8]
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

fn mlet(args: &[&str], file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

fn metrics_mtime(dir: &Path, run: &str) -> std::time::SystemTime {
    std::fs::metadata(dir.join("runs/g").join(run).join("metrics.json"))
        .unwrap()
        .modified()
        .unwrap()
}

#[test]
fn dry_run_and_shards_partition_the_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let file = grid_file(tmp.path());
    let all = mlet(&["grid", "--dry-run"], &file);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let all = String::from_utf8_lossy(&all.stdout).to_string();
    assert_eq!(all.lines().count(), 8, "{all}");
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        let out = mlet(&["grid", "--dry-run", "--shard", &format!("{i}/3")], &file);
        seen.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    seen.sort();
    let mut expected: Vec<String> = all.lines().map(String::from).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "the shards must cover the grid exactly once"
    );
    let bad = mlet(&["grid", "--shard", "3/3"], &file);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("3/3"));
}

#[test]
fn a_killed_grid_resumes_without_lost_or_duplicated_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let file = grid_file(tmp.path());
    let runs = tmp.path().join("runs/g");

    // Start the grid and kill it once at least one run finished.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(["--quiet", "grid", "--jobs", "1"])
        .arg(&file)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let finished_runs = || {
        std::fs::read_dir(&runs)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("metrics.json").is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    while finished_runs() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no run finished"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("grid ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = finished_runs();
    assert!(done_before < 8, "the whole grid finished before the kill");
    assert!(!runs.join("results.csv").exists() || done_before == 8);

    // What a kill in the middle of a run leaves: a partial directory without metrics.
    let first_done: String = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("metrics.json").is_file())
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let kept = metrics_mtime(tmp.path(), &first_done);

    let out = mlet(&["grid", "--jobs", "2"], &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("{} already finished", done_before)),
        "{report}"
    );
    // the finished run was not trained again
    assert_eq!(metrics_mtime(tmp.path(), &first_done), kept);
    // no partial directories remain
    let leftovers: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let rows = read_results_csv(&runs.join("results.csv")).unwrap();
    assert_eq!(rows.len(), 8);
    let mut names: Vec<&str> = rows.iter().map(|r| r.run.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8, "duplicated rows: {names:?}");
    assert!(rows.iter().all(|r| r.test_auc > 0.0 && r.test_auc < 1.0));
    // the baseline and MLET at the same d keep the same inference size (Σn·d), while MLET
    // trains Σn·k + F·k·d parameters (a table and a projection per field)
    let ds = mlet::data::Dataset::open(&tmp.path().join("cache")).unwrap();
    let (sum_n, fields) = (
        ds.cardinalities().iter().sum::<usize>() as i64,
        ds.cardinalities().len() as i64,
    );
    for r in &rows {
        let d = r.d as i64;
        assert_eq!(r.inference_embedding_params, sum_n * d, "{}", r.run);
        let training = match r.k {
            None => sum_n * d,
            Some(k) => sum_n * k as i64 + fields * k as i64 * d,
        };
        assert_eq!(r.training_embedding_params, training, "{}", r.run);
        let twin = |k: Option<usize>| {
            rows.iter()
                .find(|o| o.d == r.d && o.seed == r.seed && o.k == k)
                .unwrap_or_else(|| panic!("no run at d = {}, k = {k:?}", r.d))
        };
        assert_eq!(
            twin(None).inference_embedding_params,
            twin(Some(8)).inference_embedding_params
        );
    }
    for f in ["summary.csv", "memory_reduction.csv"] {
        assert!(runs.join(f).is_file(), "{f}");
    }
    assert!(tmp
        .path()
        .join("plots/g_dlrm_synthetic-8000_auc_vs_d.png")
        .is_file());

    // a second run is a no-op that rebuilds the same table
    let again = mlet(&["grid"], &file);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 trained now, 8 already finished"));
    assert_eq!(
        read_results_csv(&runs.join("results.csv")).unwrap().len(),
        8
    );
}
