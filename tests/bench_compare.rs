//! The comparative benchmark's runner (benches/compare/run.py) end to end at a tiny size: mlet and
//! the plain PyTorch DLRM train on the same cut of one cache, and the CSV, its medians and ratios
//! and the bar chart come out. (The TorchRec and DeepCTR-Torch references need their venvs and
//! run in `make bench-compare`; TorchRec's installation check is `torchrec_dlrm.py --self-check`.)
mod common;

use std::path::Path;
use std::process::Command;

fn runner(out: &Path, extra: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare/run.py");
    Command::new(common::python())
        .arg(script)
        .args(["--rows", "4000", "--threads", "1", "--test-rows", "200"])
        .args(["--mlet", env!("CARGO_BIN_EXE_mlet")])
        .arg("--python")
        .arg(common::python())
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("the runner starts")
}

#[test]
fn every_tool_trains_the_same_rows_and_the_csv_has_medians_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner(
        dir.path(),
        &[
            "--repeats",
            "2",
            "--workloads",
            "dlrm-b128",
            "--tools",
            "mlet,pytorch",
            "--train-rows",
            "300", // rounded down to whole batches: 256
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_path(dir.path().join("results.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let (runs, medians): (Vec<_>, Vec<_>) =
        rows.iter().partition(|r| &r[col("repeat")] != "median");
    // 2 tools x 2 embeddings x 2 repeats, then one median per tool x embedding
    assert_eq!((runs.len(), medians.len()), (8, 4), "{stdout}");
    for r in &runs {
        assert_eq!(&r[col("status")], "ok");
        // every tool: 2 steps of 128 over the same 256 rows, tested on the same 200 rows
        assert_eq!((&r[col("steps")], &r[col("samples")]), ("2", "256"));
        assert_eq!(&r[col("test_rows")], "200");
        let auc: f64 = r[col("test_auc")].parse().unwrap();
        assert!((0.0..=1.0).contains(&auc), "AUC {auc}");
        let rss: f64 = r[col("peak_rss_mib")].parse().unwrap();
        assert!(rss > 50.0, "peak RSS {rss} MiB");
    }
    let speed = |tool: &str, emb: &str| -> f64 {
        let m = medians
            .iter()
            .find(|r| &r[col("tool")] == tool && &r[col("embedding")] == emb)
            .unwrap();
        m[col("samples_per_s")].parse().unwrap()
    };
    for emb in ["single", "mlet-k64"] {
        let m = medians
            .iter()
            .find(|r| &r[col("tool")] == "pytorch" && &r[col("embedding")] == emb)
            .unwrap();
        let ratio: f64 = m[col("mlet_ratio")].parse().unwrap();
        let expected = speed("mlet", emb) / speed("pytorch", emb);
        assert!((ratio - expected).abs() < 0.006, "{ratio} vs {expected}");
    }
    // the references run as forks of a server that has imported torch; mlet starts as a command
    // of the runner, so its peak RSS is its own (a fork of a process holding torch would count
    // that process's ~400 MiB)
    for emb in ["single", "mlet-k64"] {
        let rss = |tool: &str| -> f64 {
            let m = medians
                .iter()
                .find(|r| &r[col("tool")] == tool && &r[col("embedding")] == emb)
                .unwrap();
            m[col("peak_rss_mib")].parse().unwrap()
        };
        assert!(
            rss("mlet") < rss("pytorch"),
            "{emb}: mlet {} MiB, pytorch {} MiB",
            rss("mlet"),
            rss("pytorch")
        );
    }
    let chart = dir.path().join("results_samples_per_s.png");
    assert!(std::fs::metadata(&chart).unwrap().len() > 1000);

    // the cut cache holds exactly the first rows of the prepared one
    let data = dir.path().join("data");
    let full = std::fs::read(data.join("synth-4000/train/cat.u32")).unwrap();
    let cut = std::fs::read(data.join("synth-4000-first-train256-test200/train/cat.u32")).unwrap();
    assert_eq!(cut.len(), 256 * 26 * 4);
    assert_eq!(cut[..], full[..cut.len()]);
}

#[test]
fn unknown_workloads_and_too_many_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = runner(dir.path(), &["--workloads", "dlrm-b99"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown dlrm-b99") && err.contains("dlrm-b128"),
        "{err}"
    );
    let out = runner(
        dir.path(),
        &["--workloads", "dlrm-b128", "--train-rows", "100000"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("fewer than the 99968"), "{err}");
}
