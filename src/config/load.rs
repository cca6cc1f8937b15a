//! Reading an experiment file: a base configuration plus an optional `runs:` list whose entries
//! override parts of the base (`- name: mlet` `  embedding: {kind: mlet, k: 64}`).
use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

use super::RunConfig;

/// One run of an experiment file: its name (unique within the file) and resolved settings.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub run: String,
    pub config: RunConfig,
}

pub fn load_runs(path: &Path) -> Result<Vec<RunSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    parse_runs(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Parses an experiment's YAML text; errors name the key path (`runs[1].embedding.k: ...`).
pub fn parse_runs(text: &str) -> Result<Vec<RunSpec>> {
    let mut base: Value = serde_yaml::from_str(text).context("not valid YAML")?;
    let Value::Mapping(map) = &mut base else {
        bail!("the top level must be a mapping of keys (name, data, model, ...)");
    };
    let runs = map.remove("runs");
    let overrides: Vec<(String, Value)> = match runs {
        None => vec![("default".to_string(), Value::Mapping(Mapping::new()))],
        Some(Value::Sequence(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| split_run_name(i, item))
            .collect::<Result<_>>()?,
        Some(_) => bail!("runs: expected a non-empty list of run overrides, each with a `name`"),
    };
    let mut specs: Vec<RunSpec> = Vec::new();
    for (i, (run, patch)) in overrides.into_iter().enumerate() {
        if specs.iter().any(|s| s.run == run) {
            bail!("runs[{i}].name: `{run}` is used twice");
        }
        let mut merged = base.clone();
        merge(&mut merged, patch);
        let where_ = if specs.is_empty() && run == "default" {
            String::new()
        } else {
            format!("runs[{i}] ({run}): ")
        };
        let config: RunConfig = serde_path_to_error::deserialize(merged)
            .map_err(|e| anyhow!("{where_}{}: {}", display_path(&e), e.inner()))?;
        config.validate().map_err(|e| anyhow!("{where_}{e}"))?;
        specs.push(RunSpec { run, config });
    }
    Ok(specs)
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
fn merge(base: &mut Value, patch: Value) {
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
    fn duplicate_run_names_are_rejected() {
        let text = format!("{BASE}runs:\n  - name: a\n  - name: a\n");
        assert!(parse_runs(&text).is_err());
    }
}
