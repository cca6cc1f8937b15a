//! Checkpoints and resuming: a run interrupted after a checkpoint and started again finishes with
//! exactly (bit for bit, on the CPU) the weights, optimizer state, training log and metrics of
//! the same run left alone, whether the interruption is simulated in-process or a real SIGKILL
//! of `mlet train`.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mlet::config::{parse_runs, RunSpec};
use mlet::experiments::{open_data, read_metrics};
use mlet::training::{
    train_run, train_run_interrupted, RunMetrics, RunOptions, CHECKPOINT, OPTIMIZER_STATE, WEIGHTS,
};

const QUIET: RunOptions = RunOptions { quiet: true };

/// libtorch's generator is process-wide and training reseeds it: the tests of this file run one
/// at a time, so that no other run's seeding lands among a dropout model's draws.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn experiment(cache: &Path, out: &Path, body: &str) -> String {
    format!(
        "
name: ckpt
data:
  synthetic: {{rows: 20000, seed: 4}}
  cache: {cache}
output: {out}
{body}",
        cache = cache.display(),
        out = out.display()
    )
}

/// DLRM with MLET tables, trained two epochs with Adam (a separate embedding learning rate).
const DLRM_ADAM: &str = "
model: {kind: dlrm, bottom_mlp: [32], top_mlp: [32, 16]}
embedding: {dim: 8, kind: mlet, k: 16, init_std: 0.25}
optimizer: {kind: adam, lr: 0.002, embedding_lr: 0.01, weight_decay: 1.0e-6}
training: {epochs: 2, batch_size: 128, seed: 5, threads: 1, log_every: 10, checkpoint_every: 25}
";

fn spec(cache: &Path, out: &Path, body: &str) -> RunSpec {
    parse_runs(&experiment(cache, out, body)).unwrap().remove(0)
}

fn run_dir(out: &Path, spec: &RunSpec) -> PathBuf {
    out.join("ckpt").join(&spec.run)
}

fn partial_of(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    dir.with_file_name(format!("{name}.partial"))
}

fn checkpoint_step(partial: &Path) -> u64 {
    let text = std::fs::read_to_string(partial.join(CHECKPOINT).join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["step"].as_u64().unwrap()
}

/// The training log without its timing columns.
fn log_without_timings(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("train_log.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect()
}

fn bits(m: &RunMetrics) -> Vec<u64> {
    let mut v = Vec::new();
    for split in [&m.valid, &m.test] {
        let s = split.as_ref().expect("evaluated");
        v.extend([s.auc, s.logloss, s.pr_auc].map(f64::to_bits));
        v.push(s.samples as u64);
    }
    v.extend([
        m.train.steps as u64,
        m.train.samples as u64,
        m.train.final_loss.to_bits(),
        m.collapse_max_abs_diff.to_bits(),
    ]);
    v
}

/// Two finished run directories hold the same training outcome, bit for bit.
fn assert_same_outcome(reference: &Path, resumed: &Path) {
    let (a, b) = (
        read_metrics(reference).unwrap(),
        read_metrics(resumed).unwrap(),
    );
    assert_eq!(bits(&a), bits(&b), "metrics differ:\n{a:?}\n{b:?}");
    for file in [WEIGHTS, OPTIMIZER_STATE] {
        let (x, y) = (
            std::fs::read(reference.join(file)).unwrap(),
            std::fs::read(resumed.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs");
    }
    assert_eq!(log_without_timings(reference), log_without_timings(resumed));
    assert!(
        !resumed.join(CHECKPOINT).exists(),
        "a finished run keeps no checkpoint"
    );
}

fn resumed_from(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("run.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.get("resumed_from_step").map(|s| s.as_u64().unwrap())
}

#[test]
fn interrupted_twice_and_resumed_equals_uninterrupted() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let reference_spec = spec(&cache, &tmp.path().join("ref"), DLRM_ADAM);
    let dataset = open_data(&reference_spec.config.data, true).unwrap();
    let (reference, m) = train_run(&reference_spec, &dataset, &QUIET).unwrap();
    assert!(m.train.steps > 240, "{} steps", m.train.steps);
    assert!(m.test.unwrap().auc > 0.55, "{:?}", m.test);

    let out = tmp.path().join("int");
    let s = spec(&cache, &out, DLRM_ADAM);
    let dir = run_dir(&out, &s);
    let partial = partial_of(&dir);
    // killed at step 160: the last checkpoint is step 150, the log runs on to 160
    assert!(train_run_interrupted(&s, &dataset, &QUIET, 160)
        .unwrap()
        .is_none());
    assert!(!dir.exists());
    assert_eq!(checkpoint_step(&partial), 150);
    assert!(log_without_timings(&partial)
        .iter()
        .any(|l| l.starts_with("160,")));
    // resumed, and killed again at 237 (checkpoint 225)
    assert!(train_run_interrupted(&s, &dataset, &QUIET, 237)
        .unwrap()
        .is_none());
    assert_eq!(resumed_from(&partial), Some(150));
    assert_eq!(checkpoint_step(&partial), 225);
    // resumed to the end
    let (finished, _) = train_run(&s, &dataset, &QUIET).unwrap();
    assert_eq!(finished, dir);
    assert_eq!(resumed_from(&dir), Some(225));
    assert_same_outcome(&reference, &dir);
}

/// WDL with dropout and Adagrad, checkpointed once per epoch, killed just after the epoch
/// boundary: the next epoch's shuffle and the dropout masks after the checkpoint come out the
/// same.
#[test]
fn dropout_model_resumes_at_an_epoch_boundary() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let body = |every: usize| {
        format!(
            "
model: {{kind: wdl, dnn_hidden_units: [32, 16], dnn_dropout: 0.3}}
embedding: {{dim: 8, table_init: normal, table_std: 0.01}}
optimizer: {{kind: adagrad, lr: 0.01, embedding_lr: 0.05, initial_accumulator_value: 0.1}}
training: {{epochs: 2, batch_size: 256, seed: 9, threads: 1, log_every: 7, loss_reduction: mean, checkpoint_every: {every}}}
"
        )
    };
    let probe = spec(&cache, &tmp.path().join("ref"), &body(1));
    let dataset = open_data(&probe.config.data, true).unwrap();
    let per_epoch = dataset.split(mlet::data::Split::Train).len.div_ceil(256);
    let reference_spec = spec(&cache, &tmp.path().join("ref"), &body(per_epoch));
    let (reference, _) = train_run(&reference_spec, &dataset, &QUIET).unwrap();

    let out = tmp.path().join("int");
    let s = spec(&cache, &out, &body(per_epoch));
    let partial = partial_of(&run_dir(&out, &s));
    assert!(train_run_interrupted(&s, &dataset, &QUIET, per_epoch + 5)
        .unwrap()
        .is_none());
    assert_eq!(checkpoint_step(&partial), per_epoch as u64);
    let (dir, _) = train_run(&s, &dataset, &QUIET).unwrap();
    assert_eq!(resumed_from(&dir), Some(per_epoch as u64));
    assert_same_outcome(&reference, &dir);
}

#[test]
fn a_changed_configuration_starts_over() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let s = spec(&cache, &out, DLRM_ADAM);
    let dataset = open_data(&s.config.data, true).unwrap();
    assert!(train_run_interrupted(&s, &dataset, &QUIET, 60)
        .unwrap()
        .is_none());
    assert_eq!(checkpoint_step(&partial_of(&run_dir(&out, &s))), 50);
    let changed = spec(&cache, &out, &DLRM_ADAM.replace("lr: 0.002", "lr: 0.003"));
    assert_eq!(changed.run, s.run);
    let (dir, m) = train_run(&changed, &dataset, &QUIET).unwrap();
    assert_eq!(resumed_from(&dir), None, "resumed under other settings");
    let log = log_without_timings(&dir);
    assert_eq!(log[1].split(',').next(), Some("10"), "{log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("10,")).count(),
        1,
        "{log:?}"
    );
    assert_eq!(
        m.train.steps,
        dataset.split(mlet::data::Split::Train).len.div_ceil(128) * 2
    );
}

fn mlet_train(file: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlet"));
    c.args(["--quiet", "train"]).arg(file);
    c
}

/// A real kill: `mlet train` SIGKILLed once its first checkpoint exists, then run again.
#[test]
fn killed_process_resumes_bit_for_bit() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let body = DLRM_ADAM
        .replace("epochs: 2", "epochs: 3")
        .replace("checkpoint_every: 25", "checkpoint_every: 20");
    let write = |name: &str, out: &Path| {
        let path = tmp.path().join(name);
        std::fs::write(&path, experiment(&cache, out, &body)).unwrap();
        path
    };
    let (ref_out, out) = (tmp.path().join("ref"), tmp.path().join("int"));
    let reference = mlet_train(&write("ref.yaml", &ref_out)).output().unwrap();
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let file = write("int.yaml", &out);
    let s = spec(&cache, &out, &body);
    let dir = run_dir(&out, &s);
    let partial = partial_of(&dir);

    let mut child = mlet_train(&file).spawn().unwrap();
    let started = Instant::now();
    while !partial.join(CHECKPOINT).join("state.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mlet train ended before its first checkpoint: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success() && !dir.exists(),
        "the run finished before the kill; make it longer"
    );
    let killed_at = checkpoint_step(&partial);

    let resumed = mlet_train(&file).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let from = resumed_from(&dir).expect("the second run resumed");
    assert!(
        from >= killed_at,
        "resumed from {from}, checkpoint {killed_at}"
    );
    let reference_dir = ref_out.join("ckpt").join(&s.run);
    assert_same_outcome(&reference_dir, &dir);
    // and the result is the one a run without checkpoints gets (the DLRM has no dropout, so
    // checkpointing changes nothing)
    let plain_out = tmp.path().join("plain");
    let plain = spec(
        &cache,
        &plain_out,
        &body.replace(", checkpoint_every: 20", ""),
    );
    assert!(plain.config.training.checkpoint_every.is_none());
    let dataset = open_data(&plain.config.data, true).unwrap();
    let (plain_dir, _) = train_run(&plain, &dataset, &QUIET).unwrap();
    let (a, b) = (
        read_metrics(&plain_dir).unwrap(),
        read_metrics(&dir).unwrap(),
    );
    assert_eq!(bits(&a), bits(&b));
}
