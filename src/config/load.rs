//! Reading an experiment file: a base configuration plus an optional `runs:` list whose entries
//! override parts of the base (`- name: mlet` `  embedding: {kind: mlet, k: 64}`).
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

use super::RunConfig;

/// One run of an experiment file: its name (unique within the file) and resolved settings.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub run: String,
    pub config: RunConfig,
}

/// What a grid writes when it finishes (the `report:` section).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Where figures go.
    #[serde(default = "default_plots_dir")]
    pub plots_dir: PathBuf,
    /// File-name prefix of the figures; the experiment name when absent.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Render figures at the end of `mlet grid`.
    #[serde(default = "yes")]
    pub figures: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            plots_dir: default_plots_dir(),
            prefix: None,
            figures: true,
        }
    }
}

fn default_plots_dir() -> PathBuf {
    PathBuf::from("plots")
}

fn yes() -> bool {
    true
}

/// A parsed experiment file.
#[derive(Clone, Debug)]
pub struct ExperimentFile {
    pub runs: Vec<RunSpec>,
    pub report: ReportConfig,
}

pub fn load_experiment(path: &Path) -> Result<ExperimentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    parse_experiment(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

pub fn load_runs(path: &Path) -> Result<Vec<RunSpec>> {
    Ok(load_experiment(path)?.runs)
}

pub fn parse_runs(text: &str) -> Result<Vec<RunSpec>> {
    Ok(parse_experiment(text)?.runs)
}

/// Parses an experiment's YAML text; errors name the key path (`runs[1].embedding.k: ...`).
pub fn parse_experiment(text: &str) -> Result<ExperimentFile> {
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
        Some(Value::String(path)) => Some(BestSigmas::load(Path::new(&path))?),
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
        resolve_best_init_std(&mut merged, best_sigmas.as_ref())
            .map_err(|e| anyhow!("run {run}: embedding.init_std: {e}"))?;
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

/// The best σ per (model, d, k) found by an earlier σ sweep (`best_init_std.json` of a grid).
struct BestSigmas {
    path: PathBuf,
    entries: Vec<crate::results::BestSigma>,
}

impl BestSigmas {
    fn load(path: &Path) -> Result<BestSigmas> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "best_init_std_from: cannot read {} (run the σ sweep first)",
                path.display()
            )
        })?;
        let entries = serde_json::from_str(&text).with_context(|| {
            format!(
                "best_init_std_from: {} is not a best_init_std.json",
                path.display()
            )
        })?;
        Ok(BestSigmas {
            path: path.to_path_buf(),
            entries,
        })
    }
}

/// Replaces `embedding.init_std: best` by the best σ of the sweep for the run's model and k:
/// the entry at the same d when there is one, else the best over all d.
fn resolve_best_init_std(run: &mut Value, best: Option<&BestSigmas>) -> Result<()> {
    let is_best = run
        .get("embedding")
        .and_then(|e| e.get("init_std"))
        .is_some_and(|v| v.as_str() == Some("best"));
    if !is_best {
        return Ok(());
    }
    let Some(best) = best else {
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
    let Some(k) = k else {
        // a single-layer run has no projection; σ is irrelevant
        run["embedding"]["init_std"] = Value::from(0.25);
        return Ok(());
    };
    let candidates: Vec<&crate::results::BestSigma> = best
        .entries
        .iter()
        .filter(|b| b.model == model && b.k as u64 == k)
        .collect();
    let chosen = candidates
        .iter()
        .find(|b| Some(b.d as u64) == d)
        .or_else(|| {
            candidates
                .iter()
                .max_by(|a, b| a.auc_mean.total_cmp(&b.auc_mean))
        })
        .with_context(|| {
            format!(
                "`best`: {} has no entry for model {model} with k = {k}",
                best.path.display()
            )
        })?;
    run["embedding"]["init_std"] = Value::from(chosen.init_std);
    Ok(())
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

/// Recursive merge: mappings merge key by key, anything else replaces. A `model` whose `kind`
/// changes (`model: {kind: deepfm}` over a DLRM) replaces the old one: the old model's
/// settings mean nothing to the new one.
pub(super) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, v) in p {
                let new_model = k.as_str() == Some("model")
                    && v.get("kind").is_some()
                    && b.get(&k).and_then(|m| m.get("kind")) != v.get("kind");
                match b.get_mut(&k) {
                    Some(slot) if new_model => *slot = v,
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn best_init_std_comes_from_a_sweep() {
        let dir = std::env::temp_dir().join(format!("mlet-best-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("best_init_std.json");
        let entry = |d: usize, sigma: f64, auc: f64| {
            format!(
                "{{\"model\":\"dlrm\",\"dataset\":\"s\",\"d\":{d},\"k\":32,\"init_std\":{sigma},\
                 \"lr\":0.2,\"optimizer\":\"sgd\",\"auc_mean\":{auc},\"auc_std\":0.0,\"count\":3,\
                 \"sigmas_tried\":5}}"
            )
        };
        std::fs::write(
            &path,
            format!("[{},{}]", entry(16, 0.1, 0.7), entry(8, 0.5, 0.71)),
        )
        .unwrap();
        let text = format!(
            "{BASE}best_init_std_from: {}\ngrid:\n  d: [8, 16, 4]\n  k: [baseline, 32]\n  init_std: [best]\n",
            path.display()
        );
        let runs = parse_runs(&text).unwrap();
        let sigma = |name: &str| {
            runs.iter()
                .find(|r| r.run == name)
                .unwrap()
                .config
                .embedding
                .init_std
        };
        assert_eq!(sigma("d16-k32-sigmabest"), 0.1);
        assert_eq!(sigma("d8-k32-sigmabest"), 0.5);
        // no entry at d = 4: the best over all d
        assert_eq!(sigma("d4-k32-sigmabest"), 0.5);
        let missing = text.replace("k: [baseline, 32]", "k: [64]");
        let msg = format!("{:#}", parse_runs(&missing).unwrap_err());
        assert!(msg.contains("k = 64"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changing_the_model_kind_replaces_its_settings() {
        let text = format!(
            "{BASE}runs:\n  - name: a\n    model: {{kind: dlrm, top_mlp: [8]}}\n  - name: b\n    model: {{kind: wdl}}\n"
        )
        .replace("model: {kind: dlrm}", "model: {kind: dlrm, bottom_mlp: [4]}");
        let runs = parse_runs(&text).unwrap();
        assert!(
            matches!(&runs[0].config.model, crate::config::ModelConfig::Dlrm { bottom_mlp, top_mlp } if bottom_mlp == &[4] && top_mlp == &[8])
        );
        assert_eq!(runs[1].config.model.name(), "wdl");
    }

    #[test]
    fn duplicate_run_names_are_rejected() {
        let text = format!("{BASE}runs:\n  - name: a\n  - name: a\n");
        assert!(parse_runs(&text).is_err());
    }
}
