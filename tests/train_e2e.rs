//! End to end: synthetic data → cache → training → run directory, through the library and the
//! `mlet` binary.
use std::path::Path;
use std::process::Command;

use mlet::config::parse_runs;
use mlet::experiments::{run_all, Outcome};
use mlet::training::RunOptions;

fn experiment(dir: &Path, extra: &str) -> String {
    format!(
        "
name: e2e
data:
  synthetic: {{rows: 40000, seed: 5}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [64], top_mlp: [64, 32]}}
embedding: {{dim: 8}}
optimizer: {{kind: sgd, lr: 0.2}}
training: {{epochs: 1, batch_size: 128, seed: 3, threads: 2, log_every: 50}}
output: {out}
{extra}",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    )
}

fn metrics_of(outcome: &Outcome) -> &mlet::training::RunMetrics {
    match outcome {
        Outcome::Trained(_, m) | Outcome::Skipped(_, m) => m,
    }
}

#[test]
fn short_training_learns_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let text = experiment(
        tmp.path(),
        "runs:\n  - name: single\n  - name: mlet\n    embedding: {kind: mlet, k: 32, init_std: 0.25}\n",
    );
    let specs = parse_runs(&text).unwrap();
    let opts = RunOptions { quiet: true };
    let first = run_all(&specs, false, &opts).unwrap();
    for outcome in &first {
        let m = metrics_of(outcome);
        let test = m.test.expect("test split is not empty");
        assert!(test.auc > 0.6, "{}: test AUC {}", m.run, test.auc);
        // better than predicting the base rate, whose LogLoss is the label entropy
        let p = test.positives as f64 / test.samples as f64;
        let base = -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        assert!(
            test.logloss < base - 0.004,
            "{}: LogLoss {} against the base rate's {base}",
            m.run,
            test.logloss
        );
        assert!(
            m.collapse_max_abs_diff <= 1e-5,
            "{}",
            m.collapse_max_abs_diff
        );
        let Outcome::Trained(dir, _) = outcome else {
            panic!("a fresh run was skipped")
        };
        for file in [
            "config.yaml",
            "run.json",
            "train_log.csv",
            "metrics.json",
            "weights.safetensors",
            "train_curve.png",
            "train_curve.svg",
        ] {
            assert!(
                dir.join(file).is_file(),
                "{file} missing in {}",
                dir.display()
            );
        }
        let log = std::fs::read_to_string(dir.join("train_log.csv")).unwrap();
        assert!(log.lines().count() > 5, "{log}");
    }
    // MLET trains more parameters but keeps the inference size of a single-layer model
    let (s, m) = (metrics_of(&first[0]), metrics_of(&first[1]));
    assert_eq!(s.embedding_params.inference, m.embedding_params.inference);
    assert!(m.embedding_params.training > 3 * s.embedding_params.training);

    // finished runs are skipped; forced runs reproduce the metrics bit for bit on the CPU
    let again = run_all(&specs, false, &opts).unwrap();
    assert!(matches!(again[0], Outcome::Skipped(..)));
    let forced = run_all(&specs, true, &opts).unwrap();
    for (a, b) in first.iter().zip(&forced) {
        let (a, b) = (metrics_of(a), metrics_of(b));
        assert_eq!(a.test.unwrap().auc.to_bits(), b.test.unwrap().auc.to_bits());
        assert_eq!(a.train.final_loss.to_bits(), b.train.final_loss.to_bits());
    }
}

/// `metrics.json`'s frequency split against a direct computation from its definition (paper
/// 001's Table 4: a sample's frequency is the product of its categories' training counts; OOV
/// counts as once), and the runtime record.
#[test]
fn frequency_split_and_runtime_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let text = experiment(tmp.path(), "").replace("rows: 40000", "rows: 12000");
    let specs = parse_runs(&text).unwrap();
    let outcomes = run_all(&specs, false, &RunOptions { quiet: true }).unwrap();
    let Outcome::Trained(dir, m) = &outcomes[0] else {
        panic!("a fresh run was skipped")
    };
    let run = mlet::export::load_run(dir, tch::Device::Cpu).unwrap();
    let data = mlet::data::Dataset::open(&tmp.path().join("cache")).unwrap();
    let test = data.split(mlet::data::Split::Test);
    let logits = mlet::training::predict(&run.model, &test, 1000, None, tch::Device::Cpu).unwrap();
    // Π counts, in logs, straight from the cache's per-field counts
    let log_f: Vec<f64> = (0..test.len)
        .map(|r| {
            (0..data.num_fields())
                .map(|f| match test.row_cat(r)[f] {
                    0 => 0.0,
                    i => (data.field_frequencies(f)[i as usize] as f64).ln(),
                })
                .sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..test.len).collect();
    order.sort_by(|&a, &b| log_f[a].partial_cmp(&log_f[b]).unwrap());
    // decile g holds sorted positions [g·n/10, (g+1)·n/10)
    let (n, tenth) = (test.len, test.len / 10);
    let subset = |rows: &[usize]| {
        let z: Vec<f32> = rows.iter().map(|&i| logits[i]).collect();
        let y: Vec<f32> = rows.iter().map(|&i| test.label[i]).collect();
        mlet::metrics::evaluate(&z, &y).unwrap()
    };
    let by_freq = m
        .test_by_frequency
        .as_ref()
        .expect("recorded for every run");
    let (a, b) = (
        by_freq.set_a.metrics.expect("both classes in set A"),
        by_freq.set_b.metrics.expect("both classes in set B"),
    );
    let (a_ref, b_ref) = (subset(&order[9 * n / 10..]), subset(&order[..tenth]));
    assert_eq!((a.samples, b.samples), (n - 9 * n / 10, tenth));
    assert!(
        (a.auc - a_ref.auc).abs() < 1e-12 && (a.pr_auc - a_ref.pr_auc).abs() < 1e-12,
        "{a:?} {a_ref:?}"
    );
    assert!((b.auc - b_ref.auc).abs() < 1e-12 && (b.pr_auc - b_ref.pr_auc).abs() < 1e-12);
    assert!(by_freq.set_a.log_frequency_min > by_freq.set_b.log_frequency_max);
    let deciles = &by_freq.deciles;
    assert_eq!(deciles.len(), 10);
    assert_eq!(deciles.iter().map(|g| g.samples).sum::<usize>(), test.len);
    for pair in deciles.windows(2) {
        assert!(pair[0].log_frequency_max <= pair[1].log_frequency_min);
    }
    // the JSON on disk carries the same (to JSON's float precision)
    let on_disk = mlet::experiments::read_metrics(dir).unwrap();
    let disk = on_disk.test_by_frequency.expect("written to metrics.json");
    for (g, h) in disk.deciles.iter().zip(deciles) {
        assert_eq!(g.samples, h.samples);
        assert!((g.metrics.unwrap().pr_auc - h.metrics.unwrap().pr_auc).abs() < 1e-12);
    }

    let rt = m.runtime.as_ref().expect("runtime recorded");
    assert_eq!(rt.steps_timed, m.train.steps);
    assert!(
        rt.step_ms_median > 0.0 && rt.step_ms_p90 >= rt.step_ms_median,
        "{rt:?}"
    );
    // at least half the steps took the median or longer, and all of them fit in the training time
    let half = m.train.steps.div_ceil(2) as f64;
    assert!(
        rt.step_ms_median * 1e-3 * half <= m.train.seconds * 1.01,
        "{rt:?} vs {} s",
        m.train.seconds
    );
    let peak = rt.peak_rss_bytes.expect("Linux reports VmHWM");
    assert!(peak >= rt.peak_rss_training_bytes.unwrap());
    // at least the model's tables and MLP weights are resident
    assert!(peak > 4 * m.embedding_params.training as u64, "{peak}");
}

#[test]
fn divergence_stops_the_run_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let text = experiment(tmp.path(), "").replace("lr: 0.2", "lr: 1.0e30");
    let specs = parse_runs(&text).unwrap();
    let outcomes = run_all(&specs, false, &RunOptions { quiet: true }).unwrap();
    let m = metrics_of(&outcomes[0]);
    let d = m
        .diverged
        .as_ref()
        .expect("a non-finite loss must be recorded");
    assert!(d.step < 20, "stopped late, at step {}", d.step);
    assert!(d.to_string().contains("diverged"), "{d}");
    assert!(
        m.test.is_none() && m.valid.is_none(),
        "no metrics from garbage weights"
    );
    // the command line says so and exits non-zero
    let path = tmp.path().join("e.yaml");
    std::fs::write(&path, &text).unwrap();
    let out = mlet_bin()
        .args(["train", "--quiet", "--force"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("diverged") && stderr.contains("step"),
        "{stderr}"
    );
}

fn mlet_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlet"))
}

#[test]
fn cli_reports_bad_experiment_files_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "k0.yaml",
            experiment(tmp.path(), "").replace("{dim: 8}", "{dim: 8, kind: mlet, k: 0}"),
            "embedding.k",
        ),
        (
            "typo.yaml",
            experiment(tmp.path(), "").replace("epochs: 1", "epochz: 1"),
            "epochz",
        ),
        ("bad.yaml", "name: [unclosed".to_string(), "bad.yaml"),
    ];
    for (name, text, needle) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = mlet_bin().arg("train").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(
            stderr.contains(name),
            "{name}: error does not name the file: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = mlet_bin()
        .args(["train", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml"));
    // zero threads or steps on the command line: a usage error (exit 2), not a panic (101)
    let path = tmp.path().join("ok.yaml");
    std::fs::write(&path, experiment(tmp.path(), "")).unwrap();
    for flag in ["--threads", "--max-steps"] {
        let out = mlet_bin()
            .args(["train", flag, "0"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} 0: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("at least 1"),
            "{stderr}"
        );
    }
    // an experiment name that would lead out of the output directory
    let path = tmp.path().join("escape.yaml");
    let text = experiment(tmp.path(), "").replace("name: e2e", "name: ../../escaped");
    std::fs::write(&path, text).unwrap();
    let out = mlet_bin().arg("train").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not usable as a directory name"),
        "{stderr}"
    );
    assert!(!tmp.path().join("..").join("escaped").exists());
}

#[test]
fn cli_rejects_an_unusable_cuda_request() {
    let count = if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("e.yaml");
    std::fs::write(&path, experiment(tmp.path(), "").replace("40000", "2000")).unwrap();
    let train = |device: &str| {
        mlet_bin()
            .args(["train", "--device", device, "--quiet"])
            .arg(&path)
            .output()
            .unwrap()
    };
    // one past the last visible GPU is never usable, with or without GPUs
    let spec = format!("cuda:{count}");
    let out = train(&spec);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{spec} was accepted");
    assert!(
        stderr.contains(&format!("`{spec}`"))
            && stderr.contains(&format!("sees {count} usable CUDA")),
        "{stderr}"
    );
    assert!(!tmp.path().join("runs/e2e/default").exists());
    // plain `cuda`: an error without a GPU, a run on GPU 0 with one
    let out = train("cuda");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if count == 0 {
        assert!(!out.status.success(), "cuda was accepted without a GPU");
        assert!(
            stderr.contains("`cuda:0`") && stderr.contains("CUDA"),
            "{stderr}"
        );
    } else {
        assert!(out.status.success(), "{stderr}");
        let run: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("runs/e2e/default/run.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(run["device"], "cuda:0", "{run}");
    }
}

#[test]
fn every_model_trains_with_single_and_mlet_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = String::from("runs:\n");
    for model in ["wdl", "deepfm", "nfm", "dcn", "autoint"] {
        for (emb, settings) in [
            ("single", "{kind: single}"),
            ("mlet", "{kind: mlet, k: 16, init_std: 0.1}"),
        ] {
            runs.push_str(&format!(
                "  - name: {model}-{emb}\n    model: {{kind: {model}, dnn_hidden_units: [32, 16]}}\n    embedding: {settings}\n"
            ));
        }
    }
    runs.push_str("  - name: xdeepfm-mlet\n    model: {kind: xdeepfm, dnn_hidden_units: [32], cin_layer_size: [8, 4]}\n    embedding: {kind: mlet, k: 16, init_std: 0.1}\n");
    let text = experiment(tmp.path(), &runs)
        .replace(
            "model: {kind: dlrm, bottom_mlp: [64], top_mlp: [64, 32]}",
            "model: {kind: wdl}",
        )
        .replace(
            "optimizer: {kind: sgd, lr: 0.2}",
            "optimizer: {kind: adagrad, lr: 0.02}",
        )
        .replace("batch_size: 128,", "batch_size: 256, loss_reduction: sum,");
    let specs = parse_runs(&text).unwrap();
    let outcomes = run_all(&specs, false, &RunOptions { quiet: true }).unwrap();
    assert_eq!(outcomes.len(), 11);
    for outcome in &outcomes {
        let m = metrics_of(outcome);
        let auc = m.test.expect("trained runs are evaluated").auc;
        assert!(auc > 0.6, "{}: test AUC {auc}", m.run);
        assert!(
            m.collapse_max_abs_diff <= 1e-5,
            "{}: {}",
            m.run,
            m.collapse_max_abs_diff
        );
    }
}
