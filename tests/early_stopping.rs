//! Paper 004's protocol: early stopping on a validation metric (`training.early_stopping`), its
//! `epochs.csv`, restoring the best epoch's weights, resuming from a checkpoint with it, the
//! random split as configuration (`data.split`), and the errors of both.
mod common;

use std::path::{Path, PathBuf};

use mlet::config::{parse_runs, RunSpec};
use mlet::data::{Dataset, Split};
use mlet::experiments::open_data;
use mlet::models::{CtrModel, InputShape};
use mlet::training::{
    evaluate_split, train_run, train_run_interrupted, RunMetrics, RunOptions, WEIGHTS,
};

const QUIET: RunOptions = RunOptions { quiet: true };

/// A small DLRM that overfits 6,000 synthetic rows within a few epochs (wide tables, a large
/// Adam step), so that validation AUC peaks early and early stopping has something to do.
fn experiment(dir: &Path, training: &str) -> String {
    format!(
        "
name: es
data:
  synthetic: {{rows: 6000, seed: 7}}
  split: {{valid: 0.2, test: 0.2, seed: 0}}
  cache: {cache}
model: {{kind: dlrm, bottom_mlp: [16], top_mlp: [32]}}
embedding: {{dim: 16}}
optimizer: {{kind: adam, lr: 0.01, weight_decay: 1.0e-6}}
training: {training}
eval: {{batch_size: 1000}}
output: {out}
",
        cache = dir.join("cache").display(),
        out = dir.join("runs").display()
    )
}

const ES: &str = "{epochs: 12, batch_size: 256, seed: 3, threads: 1, log_every: 5, \
                  early_stopping: {patience: 2, metric: auc}}";

fn spec(dir: &Path, training: &str) -> RunSpec {
    parse_runs(&experiment(dir, training)).unwrap().remove(0)
}

/// One row of epochs.csv.
#[derive(Debug, Clone)]
struct Row {
    epoch: usize,
    steps: usize,
    samples: usize,
    train_loss: Option<f64>,
    auc: f64,
    logloss: f64,
    best: bool,
}

fn read_epochs(run: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(run.join("epochs.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "epoch,steps,samples,train_loss,valid_auc,valid_logloss,best,train_seconds,eval_seconds"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 9, "{l}");
            Row {
                epoch: f[0].parse().unwrap(),
                steps: f[1].parse().unwrap(),
                samples: f[2].parse().unwrap(),
                train_loss: (!f[3].is_empty()).then(|| f[3].parse().unwrap()),
                auc: f[4].parse().unwrap(),
                logloss: f[5].parse().unwrap(),
                best: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// The rows without their timing columns, for comparing two runs.
fn epochs_without_times(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("epochs.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

fn train(spec: &RunSpec) -> (PathBuf, RunMetrics) {
    let data = open_data(&spec.config.data, true).unwrap();
    let _rng = common::rng_lock();
    train_run(spec, &data, &QUIET).unwrap()
}

/// The validation metrics of the weights in `run/weights.safetensors`, in a freshly built model.
fn valid_of_saved_weights(spec: &RunSpec, data: &Dataset, run: &Path) -> mlet::metrics::Metrics {
    let cfg = &spec.config;
    let shape = InputShape {
        num_dense: data.num_dense(),
        cardinalities: data.cardinalities().to_vec(),
        hashed: Vec::new(),
    };
    let mut model = {
        let _rng = common::rng_lock();
        tch::manual_seed(12345); // other initial weights: everything must come from the file
        CtrModel::new(&cfg.model, &cfg.embedding, &shape, tch::Device::Cpu).unwrap()
    };
    model.vs.load(run.join(WEIGHTS)).unwrap();
    evaluate_split(&model, data, Split::Valid, 1000, tch::Device::Cpu)
        .unwrap()
        .unwrap()
}

#[test]
fn stops_after_patience_and_restores_the_best_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path(), ES);
    let (run, m) = train(&spec);
    let data = open_data(&spec.config.data, true).unwrap();
    let rows = read_epochs(&run);
    println!(
        "{}",
        std::fs::read_to_string(run.join("epochs.csv")).unwrap()
    );
    let train_rows = data.split(Split::Train).len;
    let steps_per_epoch = train_rows.div_ceil(256);

    // one row per evaluation, epoch 0 (before training) first
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.epoch, i);
        assert_eq!(r.steps, i * steps_per_epoch);
        assert_eq!(r.samples, i * train_rows);
        assert_eq!(r.train_loss.is_some(), i > 0);
        assert!(r.auc > 0.0 && r.auc < 1.0 && r.logloss > 0.0);
    }
    // `best` marks a new maximum of the validation AUC
    let mut best = (0usize, f64::NEG_INFINITY);
    for r in &rows {
        assert_eq!(r.best, r.auc > best.1, "epoch {}", r.epoch);
        if r.best {
            best = (r.epoch, r.auc);
        }
    }
    let last = rows.last().unwrap().epoch;
    // the rule: stop `patience` epochs after the best, unless the epochs ran out first
    assert_eq!(m.best_epoch, Some(best.0));
    assert_eq!(m.epochs_run, Some(last));
    if m.stopped_early == Some(true) {
        assert_eq!(last, best.0 + 2, "{rows:?}");
        assert!(last < 12);
    } else {
        assert_eq!(last, 12);
    }
    // the data is built to overfit: the run must stop early and not at the first epoch
    assert_eq!(m.stopped_early, Some(true), "{rows:?}");
    assert!(best.0 >= 1, "{rows:?}");
    assert_eq!(m.train.steps, last * steps_per_epoch);

    // the weights evaluated and saved are the best epoch's, not the last one's
    let valid = m.valid.unwrap();
    assert!(
        (valid.auc - best.1).abs() < 1e-6,
        "{} vs {}",
        valid.auc,
        best.1
    );
    let last_auc = rows.last().unwrap().auc;
    assert!(
        (valid.auc - last_auc).abs() > 1e-6,
        "the last epoch is as good"
    );
    let saved = valid_of_saved_weights(&spec, &data, &run);
    assert_eq!(saved.auc, valid.auc);
    assert_eq!(saved.logloss, valid.logloss);
    // the best weights were kept in a file of the run directory, not in memory; it is gone
    assert!(!run.join(mlet::training::BEST_WEIGHTS).exists());

    // metrics.json and the figure with its second panel
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["best_epoch"], best.0);
    assert_eq!(json["epochs_run"], last);
    assert_eq!(json["stopped_early"], true);
    let png = image_height(&run.join("train_curve.png"));
    assert_eq!(png, mlet::plots::TWO_PANEL_SIZE.1);

    // the same settings give the same epochs (timings aside)
    let tmp2 = tempfile::tempdir().unwrap();
    let (run2, m2) = train(&spec_in(tmp2.path(), &spec));
    assert_eq!(epochs_without_times(&run), epochs_without_times(&run2));
    assert_eq!(m2.valid.unwrap().auc, valid.auc);
}

/// `spec` writing into `dir` (data cache and runs).
fn spec_in(dir: &Path, spec: &RunSpec) -> RunSpec {
    let mut s = spec.clone();
    s.config.data.cache = Some(dir.join("cache"));
    s.config.output = dir.join("runs");
    s
}

fn image_height(png: &Path) -> u32 {
    let bytes = std::fs::read(png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    u32::from_be_bytes(bytes[20..24].try_into().unwrap())
}

/// Without early stopping nothing changes: no epochs.csv, no new metrics keys, a one-panel
/// figure; and `logloss` as the metric watches LogLoss (lower is better).
#[test]
fn off_by_default_and_logloss_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = spec(
        tmp.path(),
        "{epochs: 2, batch_size: 256, seed: 3, threads: 1, log_every: 5}",
    );
    assert!(plain.config.training.early_stopping.is_none());
    let text = serde_yaml::to_string(&plain.config).unwrap();
    assert!(!text.contains("early_stopping"), "{text}");
    let (run, m) = train(&plain);
    assert!(!run.join("epochs.csv").exists());
    let json = std::fs::read_to_string(run.join("metrics.json")).unwrap();
    assert!(!json.contains("best_epoch") && !json.contains("stopped_early"));
    assert_eq!(m.best_epoch, None);
    assert_eq!(
        image_height(&run.join("train_curve.png")),
        mlet::plots::FIGURE_SIZE.1
    );

    let tmp2 = tempfile::tempdir().unwrap();
    let ll = spec(
        tmp2.path(),
        "{epochs: 12, batch_size: 256, seed: 3, threads: 1, log_every: 5, \
         early_stopping: {patience: 1, metric: logloss}}",
    );
    let (run, m) = train(&ll);
    let rows = read_epochs(&run);
    let mut best = (0usize, f64::INFINITY);
    for r in &rows {
        assert_eq!(r.best, r.logloss < best.1, "epoch {}", r.epoch);
        if r.best {
            best = (r.epoch, r.logloss);
        }
    }
    assert_eq!(m.best_epoch, Some(best.0));
    let last = rows.last().unwrap().epoch;
    assert!(last == best.0 + 1 || last == 12, "{rows:?}");
    assert!((m.valid.unwrap().logloss - best.1).abs() < 1e-6);
}

/// A run with early stopping killed after a checkpoint and started again ends with the epochs,
/// metrics and weights of the run left alone.
#[test]
fn resumes_from_a_checkpoint_with_early_stopping() {
    let training = "{epochs: 12, batch_size: 256, seed: 3, threads: 1, log_every: 5, \
                    checkpoint_every: 7, early_stopping: {patience: 2, metric: auc}}";
    let tmp = tempfile::tempdir().unwrap();
    let alone = spec(&tmp.path().join("alone"), training);
    let (run_alone, m_alone) = train(&alone);

    let cut = spec(&tmp.path().join("cut"), training);
    let data = open_data(&cut.config.data, true).unwrap();
    let steps_per_epoch = data.split(Split::Train).len.div_ceil(256);
    // kills: inside epoch 2 (after its best weights changed), then just after epoch 3's last step
    for stop in [steps_per_epoch + 9, 3 * steps_per_epoch] {
        let _rng = common::rng_lock();
        let r = train_run_interrupted(&cut, &data, &QUIET, stop).unwrap();
        assert!(r.is_none(), "the run ended before step {stop}");
    }
    let (run_cut, m_cut) = {
        let _rng = common::rng_lock();
        train_run(&cut, &data, &QUIET).unwrap()
    };
    assert_eq!(
        epochs_without_times(&run_alone),
        epochs_without_times(&run_cut)
    );
    assert_eq!(m_alone.best_epoch, m_cut.best_epoch);
    assert_eq!(m_alone.epochs_run, m_cut.epochs_run);
    assert_eq!(m_alone.stopped_early, m_cut.stopped_early);
    assert_eq!(m_alone.train.steps, m_cut.train.steps);
    assert_eq!(m_alone.valid.unwrap().auc, m_cut.valid.unwrap().auc);
    assert_eq!(m_alone.test.unwrap().auc, m_cut.test.unwrap().auc);
    assert_eq!(
        std::fs::read(run_alone.join(WEIGHTS)).unwrap(),
        std::fs::read(run_cut.join(WEIGHTS)).unwrap()
    );
}

/// `data.split` sets the fractions and the seed of a random split: the row counts follow them,
/// the seed changes the assignment, and each split gets its own default cache name.
#[test]
fn split_fractions_and_seed_as_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let text = |valid: f64, test: f64, seed: u64, cache: &str| {
        format!(
            "name: s\ndata:\n  synthetic: {{rows: 20000, seed: 1}}\n  split: {{valid: {valid}, \
             test: {test}, seed: {seed}}}\n  cache: {}\nmodel: {{kind: dlrm}}\nembedding: {{dim: \
             4}}\n",
            tmp.path().join(cache).display()
        )
    };
    let open = |t: String| {
        let spec = parse_runs(&t).unwrap().remove(0);
        open_data(&spec.config.data, true).unwrap()
    };
    let a = open(text(0.1, 0.1, 0, "a"));
    let n = 20000.0f64;
    for (split, p) in [
        (Split::Train, 0.8f64),
        (Split::Valid, 0.1),
        (Split::Test, 0.1),
    ] {
        let got = a.split(split).len as f64;
        // binomial: within 4 standard deviations
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!((got - n * p).abs() < 4.0 * sd, "{split}: {got} rows");
    }
    assert_eq!(a.meta.split_seed, 0);
    assert_eq!(
        a.meta.split.to_string(),
        "random (80% train / 10% valid / 10% test)"
    );
    let b = open(text(0.25, 0.05, 0, "b"));
    let valid = b.split(Split::Valid).len as f64;
    assert!((valid - 5000.0).abs() < 4.0 * (n * 0.25 * 0.75f64).sqrt());
    let c = open(text(0.1, 0.1, 1, "c"));
    assert_ne!(
        a.split(Split::Valid).label.to_vec(),
        c.split(Split::Valid).label.to_vec(),
        "another seed, another split"
    );

    // a cache made with another split is not reused: named explicitly, it is refused ...
    let spec = |t: String| parse_runs(&t).unwrap().remove(0).config.data;
    let mut d = spec(text(0.1, 0.1, 0, "a"));
    d.split.as_mut().unwrap().seed = 5;
    let e = format!("{:#}", open_data(&d, true).unwrap_err());
    assert!(e.contains("split seed: cache 0, now 5"), "{e}");
    d.split.as_mut().unwrap().seed = 0;
    d.split.as_mut().unwrap().test = 0.2;
    let e = format!("{:#}", open_data(&d, true).unwrap_err());
    assert!(e.contains("split: cache random (80% train"), "{e}");
    // ... and default cache names differ by split
    let mut auto = spec(text(0.1, 0.1, 0, "x"));
    auto.cache = None;
    let mut other = auto.clone();
    other.split.as_mut().unwrap().valid = 0.2;
    let mut none = auto.clone();
    none.split = None;
    assert_ne!(auto.cache_dir(), other.cache_dir());
    assert_ne!(auto.cache_dir(), none.cache_dir());
    assert!(auto
        .cache_dir()
        .to_string_lossy()
        .ends_with("-split0.1-0.1-seed0"));

    // `mlet data stats` shows the rule and its seed
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlet"))
        .args(["data", "stats"])
        .arg(tmp.path().join("c"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("split    random (80% train / 10% valid / 10% test), seed 1"),
        "{stdout}"
    );
}

/// `mlet data prepare` takes the fractions and the seed; giving them makes the split random
/// even for Criteo (whose default is the day split), and they do not go with `--split days`.
#[test]
fn prepare_flags_for_the_random_split() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw.tsv");
    mlet::data::write_synthetic(
        &raw,
        &mlet::data::SynthConfig {
            rows: 3000,
            seed: 2,
        },
    )
    .unwrap();
    let mlet = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mlet"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("c");
    let raw_s = raw.to_string_lossy().into_owned();
    let out_s = out.to_string_lossy().into_owned();
    let r = mlet(&[
        "-q",
        "data",
        "prepare",
        &raw_s,
        "--format",
        "criteo",
        "--out",
        &out_s,
        "--valid-fraction",
        "0.1",
        "--test-fraction",
        "0.1",
        "--split-seed",
        "0",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ds = Dataset::open(&out).unwrap();
    let made = std::fs::metadata(out.join(mlet::data::META_FILE))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        ds.meta.split.to_string(),
        "random (80% train / 10% valid / 10% test)"
    );
    // the YAML form of the same split reuses this cache
    let yaml = format!(
        "name: y\ndata:\n  raw: {raw_s}\n  format: criteo\n  split: {{valid: 0.1, test: 0.1, \
         seed: 0}}\n  cache: {out_s}\nmodel: {{kind: dlrm}}\nembedding: {{dim: 4}}\n"
    );
    let data = parse_runs(&yaml).unwrap().remove(0).config.data;
    let reopened = open_data(&data, true).unwrap();
    assert_eq!(reopened.meta.split_seed, 0);
    let now = std::fs::metadata(out.join(mlet::data::META_FILE))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(made, now, "the cache was prepared again");
    let r = mlet(&[
        "data",
        "prepare",
        &raw_s,
        "--format",
        "criteo",
        "--out",
        &out_s,
        "--split",
        "days",
        "--valid-fraction",
        "0.1",
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--split random"), "{err}");
}

#[test]
fn configuration_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |training: &str| {
        format!(
            "{:#}",
            parse_runs(&experiment(tmp.path(), training)).unwrap_err()
        )
    };
    let e = err("{early_stopping: {patience: 0}}");
    assert!(e.contains("training.early_stopping.patience"), "{e}");
    let e = err("{early_stopping: {patience: 2, metric: accuracy}}");
    assert!(
        e.contains("training.early_stopping.metric") && e.contains("auc"),
        "{e}"
    );
    let e = err("{early_stopping: {patience: 2, metrc: auc}}");
    assert!(
        e.contains("training.early_stopping") && e.contains("metrc"),
        "{e}"
    );
    let e = err("{early_stopping: 3}");
    assert!(e.contains("training.early_stopping"), "{e}");
    // metric defaults to auc
    let s = spec(tmp.path(), "{early_stopping: {patience: 4}}");
    let es = s.config.training.early_stopping.unwrap();
    assert_eq!((es.patience, es.metric.name()), (4, "auc"));

    let data_err = |data: &str| {
        let text = format!("name: x\ndata: {data}\nmodel: {{kind: dlrm}}\nembedding: {{dim: 4}}\n");
        format!("{:#}", parse_runs(&text).unwrap_err())
    };
    let e = data_err("{synthetic: {rows: 10, seed: 1}, split: {valid: 0.6, test: 0.5}}");
    assert!(
        e.contains("data.split") && e.contains("sum to less than 1"),
        "{e}"
    );
    let e = data_err("{synthetic: {rows: 10, seed: 1}, split: {valid: -0.1, test: 0.1}}");
    assert!(e.contains("data.split.valid"), "{e}");
    let e = data_err("{synthetic: {rows: 10, seed: 1}, split: {valid: 0.1}}");
    assert!(e.contains("data.split") && e.contains("test"), "{e}");
    let e = data_err("{cache: /nonexistent, split: {valid: 0.1, test: 0.1}}");
    assert!(e.contains("data.split") && e.contains("source"), "{e}");
    let e =
        data_err("{train: a, valid: b, test: c, format: criteo, split: {valid: 0.1, test: 0.1}}");
    assert!(e.contains("data.split") && e.contains("predefined"), "{e}");

    // early stopping without validation rows fails naming the key
    let no_valid = experiment(tmp.path(), "{epochs: 2, early_stopping: {patience: 1}}")
        .replace("valid: 0.2", "valid: 0.0")
        .replace(
            &format!("cache: {}", tmp.path().join("cache").display()),
            &format!("cache: {}", tmp.path().join("cache-novalid").display()),
        );
    let spec = parse_runs(&no_valid).unwrap().remove(0);
    let data = open_data(&spec.config.data, true).unwrap();
    let e = {
        let _rng = common::rng_lock();
        format!("{:#}", train_run(&spec, &data, &QUIET).unwrap_err())
    };
    assert!(
        e.contains("training.early_stopping") && e.contains("validation"),
        "{e}"
    );
}
