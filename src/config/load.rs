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
    let mut base: Value = serde_yaml::from_str(text).context("not valid YAML")?;
    let Value::Mapping(map) = &mut base else {
        bail!("the top level must be a mapping of keys (name, data, model, ...)");
    };
    let report: ReportConfig = match map.remove("report") {
        None => ReportConfig::default(),
        Some(v) => serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow!("report.{}: {}", display_path(&e), e.inner()))?,
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
        if specs.iter().any(|s| s.run == run) {
            bail!("runs[{i}].name: `{run}` is used twice");
        }
        let mut merged = base.clone();
        merge(&mut merged, patch);
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
        specs.push(RunSpec { run, config });
    }
    Ok(ExperimentFile {
        runs: specs,
        report,
    })
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

/// Recursive merge: mappings merge key by key, anything else replaces.
pub(super) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
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
    fn duplicate_run_names_are_rejected() {
        let text = format!("{BASE}runs:\n  - name: a\n  - name: a\n");
        assert!(parse_runs(&text).is_err());
    }
}
