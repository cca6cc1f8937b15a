//! Reading an experiment file: a base configuration plus an optional `runs:` list whose entries
//! override parts of the base (`- name: mlet` `  embedding: {kind: mlet, k: 64}`).
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

use super::yaml::merge;
use super::{Family, RunConfig};

/// One run of an experiment file: its name (unique within the file) and resolved settings.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub run: String,
    pub config: RunConfig,
}

/// What a grid writes when it finishes (the `report:` section).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Where figures go.
    pub plots_dir: PathBuf,
    /// File-name prefix of the figures; the experiment name when absent.
    pub prefix: Option<String>,
    /// Render figures at the end of `mlet grid`.
    pub figures: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            plots_dir: PathBuf::from("plots"),
            prefix: None,
            figures: true,
        }
    }
}

/// The σ sweep that `embedding.init_std: best` draws on (the file `best_init_std_from` names).
/// Reading it and choosing from it belong to the sweep's results (`results::BestSigmas`), so
/// that config does not depend on results; config only finds the key.
pub trait InitStdSweep {
    /// The σ for an MLET run of `model` with inner dimension `k` at embedding dimension `d`.
    fn best_init_std(&self, model: &str, d: Option<u64>, k: u64) -> Result<f64>;
}

/// Opens the sweep that `best_init_std_from: PATH` names.
pub type OpenSweep<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn InitStdSweep>>;

/// For readers without σ sweeps (tests, tools): `best_init_std_from` is an error.
fn no_sweeps(path: &Path) -> Result<Box<dyn InitStdSweep>> {
    bail!(
        "best_init_std_from: {}: σ sweeps are read by `mlet train` and `mlet grid` \
         (mlet::experiments::load_experiment)",
        path.display()
    )
}

/// A parsed experiment file.
#[derive(Clone, Debug)]
pub struct ExperimentFile {
    pub runs: Vec<RunSpec>,
    pub report: ReportConfig,
}

pub fn load_experiment(path: &Path, sweeps: OpenSweep) -> Result<ExperimentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    parse_experiment(&text, sweeps).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// The runs of an experiment file that does not use `init_std: best`.
pub fn load_runs(path: &Path) -> Result<Vec<RunSpec>> {
    Ok(load_experiment(path, &no_sweeps)?.runs)
}

/// The runs of an experiment's text that does not use `init_std: best`.
pub fn parse_runs(text: &str) -> Result<Vec<RunSpec>> {
    Ok(parse_experiment(text, &no_sweeps)?.runs)
}

/// Parses an experiment's YAML text; errors name the key path (`runs[1].embedding.k: ...`).
/// `sweeps` opens the file a top-level `best_init_std_from` names.
pub fn parse_experiment(text: &str, sweeps: OpenSweep) -> Result<ExperimentFile> {
    super::yaml_depth::check_depth(text).map_err(|e| anyhow!("not valid YAML: {e}"))?;
    let mut base: Value = serde_yaml::from_str(text).context("not valid YAML")?;
    let Value::Mapping(map) = &mut base else {
        bail!("the top level must be a mapping of keys (name, data, model, ...)");
    };
    let report: ReportConfig = match map.remove("report") {
        None => ReportConfig::default(),
        Some(v) => serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow!("report.{}: {}", display_path(&e), e.inner()))?,
    };
    let best_sigmas = match map.remove("best_init_std_from") {
        None => None,
        Some(Value::String(path)) => Some(sweeps(Path::new(&path))?),
        Some(_) => bail!("best_init_std_from: expected the path of a best_init_std.json"),
    };
    let runs = map.remove("runs");
    let grid = map.remove("grid");
    let listed: Vec<(String, Value)> = match runs {
        None => vec![(String::new(), Value::Mapping(Mapping::new()))],
        Some(Value::Sequence(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| split_run_name(i, item))
            .collect::<Result<_>>()?,
        Some(_) => bail!("runs: expected a non-empty list of run overrides, each with a `name`"),
    };
    let points = match &grid {
        None => vec![super::grid::GridPoint {
            name: String::new(),
            patch: Value::Mapping(Mapping::new()),
        }],
        Some(g) => super::grid::expand(g)?,
    };
    // every listed run at every grid point
    let mut overrides: Vec<(String, Value)> = Vec::new();
    for (run, run_patch) in &listed {
        for point in &points {
            let mut patch = run_patch.clone();
            merge(&mut patch, point.patch.clone());
            let name = match (run.is_empty(), point.name.is_empty()) {
                (true, true) => "default".to_string(),
                (false, true) => run.clone(),
                (true, false) => point.name.clone(),
                (false, false) => format!("{run}-{}", point.name),
            };
            overrides.push((name, patch));
        }
    }
    let mut specs: Vec<RunSpec> = Vec::new();
    for (i, (run, patch)) in overrides.into_iter().enumerate() {
        // a grid axis value becomes part of the name: it must not lead out of the output directory
        if !valid_run_name(&run) {
            bail!(
                "run `{run}`: not usable as a directory name (letters, digits, . _ - only; \
                 grid axis values become part of run names)"
            );
        }
        if specs.iter().any(|s| s.run == run) {
            bail!("runs[{i}].name: `{run}` is used twice");
        }
        let mut merged = base.clone();
        merge(&mut merged, patch);
        resolve_best_init_std(&mut merged, best_sigmas.as_deref())
            .map_err(|e| anyhow!("run {run}: embedding.init_std: {e}"))?;
        apply_family_defaults(&mut merged);
        let where_ = if run == "default" {
            String::new()
        } else if grid.is_some() {
            format!("run {run}: ")
        } else {
            format!("runs[{i}] ({run}): ")
        };
        let config: RunConfig = serde_path_to_error::deserialize(merged)
            .map_err(|e| anyhow!("{where_}{}: {}", display_path(&e), e.inner()))?;
        config.validate().map_err(|e| anyhow!("{where_}{e}"))?;
        if !valid_run_name(&config.name) {
            bail!(
                "name: `{}` is not usable as a directory name (letters, digits, . _ - only; \
                 runs are written to <output>/<name>/<run>)",
                config.name
            );
        }
        specs.push(RunSpec { run, config });
    }
    Ok(ExperimentFile {
        runs: specs,
        report,
    })
}

/// Replaces `embedding.init_std: best` by the sweep's σ for the run's model, d and k.
fn resolve_best_init_std(run: &mut Value, sweep: Option<&dyn InitStdSweep>) -> Result<()> {
    let is_best = run
        .get("embedding")
        .and_then(|e| e.get("init_std"))
        .is_some_and(|v| v.as_str() == Some("best"));
    if !is_best {
        return Ok(());
    }
    let Some(sweep) = sweep else {
        bail!("`best` needs a top-level best_init_std_from: PATH (a σ sweep's best_init_std.json)");
    };
    let model = run
        .get("model")
        .and_then(|m| m.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let emb = run.get("embedding");
    let k = emb.and_then(|e| e.get("k")).and_then(Value::as_u64);
    let d = emb.and_then(|e| e.get("dim")).and_then(Value::as_u64);
    let sigma = match k {
        // a single-layer run has no projection; σ is irrelevant
        None => super::EmbeddingConfig::DEFAULT_INIT_STD,
        Some(k) => sweep.best_init_std(model, d, k)?,
    };
    run["embedding"]["init_std"] = Value::from(sigma);
    Ok(())
}

/// Fills what a run leaves out of `optimizer` and `training` with its model family's defaults
/// ([`Family`]). An `optimizer` naming another kind than the family's is taken as it is: the
/// family's learning rate means nothing to another optimizer.
fn apply_family_defaults(run: &mut Value) {
    let Value::Mapping(map) = run else { return };
    let kind = map
        .get("model")
        .and_then(|m| m.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("dlrm");
    let family = Family::of_kind(kind);
    let plain = "plain structs serialize";
    let mut training = serde_yaml::to_value(family.training()).expect(plain);
    let mut optimizer = serde_yaml::to_value(family.optimizer()).expect(plain);
    if let Some(user) = map.remove("training") {
        merge(&mut training, user);
    }
    if let Some(user) = map.remove("optimizer") {
        let own_kind = user.get("kind").is_none() || user.get("kind") == optimizer.get("kind");
        if own_kind {
            merge(&mut optimizer, user);
        } else {
            optimizer = user;
        }
    }
    map.insert("training".into(), training);
    map.insert("optimizer".into(), optimizer);
}

fn display_path<E>(e: &serde_path_to_error::Error<E>) -> String {
    let p = e.path().to_string();
    if p == "." {
        "(top level)".into()
    } else {
        p
    }
}

fn split_run_name(i: usize, item: Value) -> Result<(String, Value)> {
    let Value::Mapping(mut m) = item else {
        bail!("runs[{i}]: expected a mapping with a `name` and the keys it overrides");
    };
    let name = match m.remove("name") {
        Some(Value::String(s)) if valid_run_name(&s) => s,
        Some(Value::String(s)) => bail!(
            "runs[{i}].name: `{s}` is not usable as a directory name (letters, digits, . _ - only)"
        ),
        _ => bail!("runs[{i}].name: required, a string"),
    };
    Ok((name, Value::Mapping(m)))
}

fn valid_run_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmbeddingConfig, EmbeddingKind};

    const BASE: &str = "
name: t
data: {synthetic: {rows: 1000, seed: 3}}
model: {kind: dlrm}
embedding: {dim: 8}
";

    #[test]
    fn names_cannot_leave_the_output_directory() {
        let escaping = BASE.replace("name: t", "name: ../../elsewhere/escaped");
        let e = format!("{:#}", parse_runs(&escaping).unwrap_err());
        assert!(e.contains("name: `../../elsewhere/escaped`"), "{e}");
        let e = format!(
            "{:#}",
            parse_runs(&format!("{BASE}runs:\n  - name: ../x\n")).unwrap_err()
        );
        assert!(e.contains("runs[0].name"), "{e}");
        // grid axis values with separators are made file-safe in run names
        let runs = parse_runs(&format!("{BASE}grid:\n  data.cache: [../a/b]\n")).unwrap();
        assert!(valid_run_name(&runs[0].run), "{}", runs[0].run);
    }

    #[test]
    fn embedding_constructor_is_the_yaml_defaults() {
        let text = format!("{BASE}runs:\n  - name: m\n    embedding: {{kind: mlet, k: 16}}\n");
        let runs = parse_runs(&text).unwrap();
        assert_eq!(
            runs[0].config.embedding,
            EmbeddingConfig::new(8, EmbeddingKind::Mlet, Some(16))
        );
    }

    #[test]
    fn runs_override_the_base() {
        let text = format!(
            "{BASE}runs:\n  - name: a\n  - name: b\n    embedding: {{kind: mlet, k: 16}}\n"
        );
        let runs = parse_runs(&text).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].config.embedding.width(), 8);
        assert_eq!(runs[1].config.embedding.width(), 16);
        assert_eq!(runs[1].config.embedding.dim, 8);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_runs(&format!("{BASE}training: {{epochz: 2}}\n")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("training") && msg.contains("epochz"), "{msg}");
    }

    #[test]
    fn model_settings_errors_name_their_key() {
        let bad = |model: &str| {
            let text = BASE.replace("model: {kind: dlrm}", model);
            format!("{:#}", parse_runs(&text).unwrap_err())
        };
        let msg = bad("model: {kind: dcn, cross_parameterization: diagonal}");
        assert!(
            msg.contains("model") && msg.contains("cross_parameterization: `vector` or `matrix`"),
            "{msg}"
        );
        let msg = bad("model: {kind: deepfm, use_fn: true}");
        assert!(msg.contains("model") && msg.contains("use_fn"), "{msg}");
        let msg = bad("model: {kind: nfm, dnn_dropout: 1.5}");
        assert!(msg.contains("model.dnn_dropout: a dropout rate"), "{msg}");
        let msg = bad("model: {kind: dcn, l2: {interaction: -1}}");
        assert!(msg.contains("model.l2.interaction"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let err = parse_runs(&format!("{BASE}training: {{batch_size: many}}\n")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("training.batch_size"), "{msg}");
    }

    #[test]
    fn k_zero_is_rejected() {
        let text = format!("{BASE}runs:\n  - name: m\n    embedding: {{kind: mlet, k: 0}}\n");
        let msg = format!("{:#}", parse_runs(&text).unwrap_err());
        assert!(
            msg.contains("runs[0]") && msg.contains("embedding.k"),
            "{msg}"
        );
    }

    #[test]
    fn mlet_without_k_is_rejected() {
        let text = BASE.replace("{dim: 8}", "{dim: 8, kind: mlet}");
        let msg = format!("{:#}", parse_runs(&text).unwrap_err());
        assert!(msg.contains("embedding.k"), "{msg}");
    }

    #[test]
    fn grid_is_the_cartesian_product_with_one_baseline_per_setting() {
        let text = format!(
            "{BASE}grid:\n  d: [4, 8]\n  k: [baseline, 16, 32]\n  init_std: [0.1, 0.5]\n  seed: [1, 2]\n"
        );
        let runs = parse_runs(&text).unwrap();
        // per (d, seed): 1 baseline + 2 k x 2 sigma
        assert_eq!(runs.len(), 2 * 2 * (1 + 2 * 2));
        let names: Vec<&str> = runs.iter().map(|r| r.run.as_str()).collect();
        assert!(names.contains(&"d4-baseline-seed1"), "{names:?}");
        assert!(names.contains(&"d8-k32-sigma0.5-seed2"), "{names:?}");
        let r = runs
            .iter()
            .find(|r| r.run == "d8-k32-sigma0.5-seed2")
            .unwrap();
        assert_eq!(r.config.embedding.dim, 8);
        assert_eq!(r.config.embedding.k, Some(32));
        assert_eq!(r.config.embedding.init_std, 0.5);
        assert_eq!(r.config.training.seed, 2);
        let b = runs.iter().find(|r| r.run == "d4-baseline-seed1").unwrap();
        assert_eq!(
            b.config.embedding.kind,
            crate::config::EmbeddingKind::Single
        );
    }

    #[test]
    fn grid_errors_name_the_axis() {
        let msg = format!(
            "{:#}",
            parse_runs(&format!("{BASE}grid: {{dd: [1]}}\n")).unwrap_err()
        );
        assert!(msg.contains("grid.dd"), "{msg}");
        let msg = format!(
            "{:#}",
            parse_runs(&format!("{BASE}grid: {{k: [big]}}\n")).unwrap_err()
        );
        assert!(msg.contains("grid.k[0]"), "{msg}");
        let msg = format!(
            "{:#}",
            parse_runs(&format!("{BASE}grid: {{d: [0]}}\n")).unwrap_err()
        );
        assert!(msg.contains("embedding.dim"), "{msg}");
        // dotted paths reach any setting
        let runs =
            parse_runs(&format!("{BASE}grid: {{training.batch_size: [64, 256]}}\n")).unwrap();
        assert_eq!(runs[1].config.training.batch_size, 256);
        assert_eq!(runs[1].run, "batch_size256");
    }

    /// σ = d / 100 for k = 32, nothing else: checks the plumbing, not a sweep's choice.
    struct FakeSweep;
    impl InitStdSweep for FakeSweep {
        fn best_init_std(&self, model: &str, d: Option<u64>, k: u64) -> Result<f64> {
            assert_eq!(model, "dlrm");
            if k != 32 {
                bail!("no entry for k = {k}");
            }
            Ok(d.unwrap() as f64 / 100.0)
        }
    }

    #[test]
    fn init_std_best_asks_the_sweep_the_file_names() {
        let text = format!(
            "{BASE}best_init_std_from: sweep.json\ngrid:\n  d: [8, 16]\n  k: [baseline, 32]\n  init_std: [best]\n"
        );
        let opened = std::cell::Cell::new(0);
        let open = |p: &Path| -> Result<Box<dyn InitStdSweep>> {
            assert_eq!(p, Path::new("sweep.json"));
            opened.set(opened.get() + 1);
            Ok(Box::new(FakeSweep))
        };
        let runs = parse_experiment(&text, &open).unwrap().runs;
        assert_eq!(opened.get(), 1);
        let sigma = |name: &str| {
            let r = runs.iter().find(|r| r.run == name);
            r.unwrap_or_else(|| panic!("no run {name}"))
                .config
                .embedding
                .init_std
        };
        assert_eq!(sigma("d8-k32-sigmabest"), 0.08);
        assert_eq!(sigma("d16-k32-sigmabest"), 0.16);
        assert_eq!(
            sigma("d8-baseline"),
            crate::config::EmbeddingConfig::DEFAULT_INIT_STD
        );
        let msg = format!(
            "{:#}",
            parse_experiment(&text.replace("[baseline, 32]", "[64]"), &open).unwrap_err()
        );
        assert!(
            msg.contains("embedding.init_std") && msg.contains("k = 64"),
            "{msg}"
        );
        // without a sweep reader, `best_init_std_from` is an error, not a silent σ
        let msg = format!("{:#}", parse_runs(&text).unwrap_err());
        assert!(msg.contains("best_init_std_from"), "{msg}");
    }

    #[test]
    fn changing_the_model_kind_replaces_its_settings() {
        let text = format!(
            "{BASE}runs:\n  - name: a\n    model: {{kind: dlrm, top_mlp: [8]}}\n  - name: b\n    model: {{kind: wdl}}\n"
        )
        .replace("model: {kind: dlrm}", "model: {kind: dlrm, bottom_mlp: [4]}");
        let runs = parse_runs(&text).unwrap();
        assert!(
            matches!(&runs[0].config.model, crate::config::ModelConfig::Dlrm(c) if c.bottom_mlp == [4] && c.top_mlp == [8])
        );
        assert_eq!(runs[1].config.model.name(), "wdl");
    }

    #[test]
    fn each_model_family_gets_its_papers_defaults() {
        use crate::config::{LossReduction, OptimizerKind};
        let text = format!(
            "{BASE}runs:\n  - name: dlrm\n  - name: deepfm\n    model: {{kind: deepfm}}\n  \
             - name: nfm-b512\n    model: {{kind: nfm}}\n    training: {{batch_size: 512}}\n  \
             - name: dcn-lr\n    model: {{kind: dcn}}\n    optimizer: {{lr: 0.05}}\n  \
             - name: wdl-adam\n    model: {{kind: wdl}}\n    optimizer: {{kind: adam, lr: 0.001}}\n"
        );
        let runs = parse_runs(&text).unwrap();
        let get = |name: &str| &runs.iter().find(|r| r.run == name).unwrap().config;
        // DLRM: the MLET paper's SGD at 0.2, batch 128, mean loss
        let dlrm = get("dlrm");
        assert_eq!(
            (dlrm.optimizer.kind, dlrm.optimizer.lr),
            (OptimizerKind::Sgd, 0.2)
        );
        assert_eq!(dlrm.training.batch_size, 128);
        assert_eq!(dlrm.training.loss_reduction, LossReduction::Mean);
        // DeepCTR family: Adagrad at 0.02 (paper 001), DeepCTR-Torch's batch 256 and summed loss
        let deepfm = get("deepfm");
        assert_eq!(
            (deepfm.optimizer.kind, deepfm.optimizer.lr),
            (OptimizerKind::Adagrad, 0.02)
        );
        assert_eq!(deepfm.optimizer, Family::DeepCtr.optimizer());
        assert_eq!(deepfm.training.batch_size, 256);
        assert_eq!(deepfm.training.loss_reduction, LossReduction::Sum);
        assert_eq!(deepfm.model.l2().embedding, 1e-5);
        // a key given keeps the family's other defaults
        let nfm = get("nfm-b512");
        assert_eq!(nfm.training.batch_size, 512);
        assert_eq!(nfm.training.loss_reduction, LossReduction::Sum);
        let dcn = get("dcn-lr");
        assert_eq!(
            (dcn.optimizer.kind, dcn.optimizer.lr),
            (OptimizerKind::Adagrad, 0.05)
        );
        // another optimizer is taken as written, not mixed with the family's
        let wdl = get("wdl-adam");
        assert_eq!(
            (wdl.optimizer.kind, wdl.optimizer.lr),
            (OptimizerKind::Adam, 0.001)
        );
        let msg = format!(
            "{:#}",
            parse_runs(&format!("{BASE}optimizer: {{kind: adam}}\n")).unwrap_err()
        );
        assert!(msg.contains("optimizer") && msg.contains("lr"), "{msg}");
    }

    /// Paper 004's family: the kinds its models go by, and its authors' training settings.
    #[test]
    fn multi_embedding_family_defaults() {
        use crate::config::{LossReduction, OptimizerKind, StopMetric};
        for kind in ["dnn", "ipnn", "nfwfm", "dcnv2", "finalmlp"] {
            assert_eq!(Family::of_kind(kind), Family::MultiEmbedding, "{kind}");
        }
        assert_eq!(Family::of_kind("xdeepfm"), Family::DeepCtr);
        assert_eq!(Family::of_kind("dlrm"), Family::Dlrm);
        let o = Family::MultiEmbedding.optimizer();
        assert_eq!(
            (o.kind, o.lr, o.weight_decay),
            (OptimizerKind::Adam, 1e-3, 1e-6)
        );
        let t = Family::MultiEmbedding.training();
        assert_eq!((t.batch_size, t.epochs), (2048, 30));
        assert_eq!(t.loss_reduction, LossReduction::Mean);
        let es = t.early_stopping.unwrap();
        assert_eq!((es.patience, es.metric), (3, StopMetric::Auc));
        // the other families keep early stopping off
        assert!(Family::Dlrm.training().early_stopping.is_none());
        assert!(Family::DeepCtr.training().early_stopping.is_none());
    }

    /// A family's early stopping merges like any training key and `null` turns it off.
    #[test]
    fn early_stopping_merges_and_null_turns_it_off() {
        let text = format!(
            "{BASE}training: {{early_stopping: {{patience: 2, metric: logloss}}}}\nruns:\n  \
             - name: on\n  - name: patience5\n    training: {{early_stopping: {{patience: 5}}}}\n  \
             - name: off\n    training: {{early_stopping: null}}\n"
        );
        let runs = parse_runs(&text).unwrap();
        let es = |i: usize| runs[i].config.training.early_stopping.clone();
        assert_eq!(es(0).unwrap().patience, 2);
        let p5 = es(1).unwrap();
        assert_eq!((p5.patience, p5.metric.name()), (5, "logloss"));
        assert!(es(2).is_none());
    }

    #[test]
    fn duplicate_run_names_are_rejected() {
        let text = format!("{BASE}runs:\n  - name: a\n  - name: a\n");
        assert!(parse_runs(&text).is_err());
    }
}
