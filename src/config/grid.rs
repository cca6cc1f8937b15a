//! Grid axes: `grid: {d: [4, 8], k: [baseline, 32], seed: [1, 2, 3]}` expands into the cartesian
//! product of runs, each an override of the base settings with a stable name such as
//! `d8-k32-sigma0.25-seed2` (or `d8-baseline-seed2`).
use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};

use super::yaml::{merge, nested};

/// Named axes and the settings they set; any other axis must be a dotted key path.
const AXES: &[(&str, &str)] = &[
    ("d", "embedding.dim"),
    ("k", "embedding.k (baseline = single-layer)"),
    ("init_std", "embedding.init_std"),
    ("seed", "training.seed"),
    ("lr", "optimizer.lr"),
    ("model", "model.kind"),
    ("batch_size", "training.batch_size"),
];

/// One grid point: its name and the override it applies.
pub struct GridPoint {
    pub name: String,
    pub patch: Value,
}

pub fn expand(grid: &Value) -> Result<Vec<GridPoint>> {
    let Value::Mapping(axes) = grid else {
        bail!("grid: expected a mapping of axis name to a list of values");
    };
    // (tokens per axis, patch) per point so far
    let mut points: Vec<(Vec<(String, String)>, Value)> =
        vec![(Vec::new(), Value::Mapping(Mapping::new()))];
    for (axis, values) in axes {
        let Value::String(axis) = axis else {
            bail!("grid: axis names must be strings");
        };
        let Value::Sequence(values) = values else {
            bail!("grid.{axis}: expected a list of values");
        };
        if values.is_empty() {
            bail!("grid.{axis}: the list is empty");
        }
        if !axis.contains('.') && !AXES.iter().any(|(a, _)| a == axis) {
            let known: Vec<String> = AXES.iter().map(|(a, s)| format!("{a} ({s})")).collect();
            bail!(
                "grid.{axis}: unknown axis; use one of {} or a dotted key path such as \
                 training.batch_size",
                known.join(", ")
            );
        }
        let mut next = Vec::new();
        for (tokens, patch) in &points {
            for (i, v) in values.iter().enumerate() {
                let (axis_patch, token) =
                    axis_patch(axis, v).map_err(|e| anyhow::anyhow!("grid.{axis}[{i}]: {e}"))?;
                let mut merged = patch.clone();
                merge(&mut merged, axis_patch);
                let mut tokens = tokens.clone();
                tokens.push((axis.clone(), token));
                next.push((tokens, merged));
            }
        }
        points = next;
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (tokens, patch) in points {
        let baseline = tokens.iter().any(|(a, t)| a == "k" && t == "baseline");
        let name = tokens
            .iter()
            // σ means nothing to a single-layer run: one baseline per other setting
            .filter(|(a, t)| !(t.is_empty() || baseline && a == "init_std"))
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("-");
        if seen.insert(name.clone()) {
            out.push(GridPoint { name, patch });
        }
    }
    Ok(out)
}

/// The override for one axis value and its token in run names ("" to leave it out).
fn axis_patch(axis: &str, v: &Value) -> Result<(Value, String), String> {
    let token = scalar_token(v)?;
    let at = |path: &str, value: Value| nested(path, value);
    Ok(match axis {
        "d" => (at("embedding.dim", v.clone()), format!("d{token}")),
        "k" => match v {
            Value::String(s) if s == "baseline" => (
                at("embedding.kind", Value::String("single".into())),
                "baseline".into(),
            ),
            Value::Number(_) => {
                let mut p = at("embedding.kind", Value::String("mlet".into()));
                merge(&mut p, at("embedding.k", v.clone()));
                (p, format!("k{token}"))
            }
            _ => return Err("expected `baseline` or an inner dimension".into()),
        },
        "init_std" => (at("embedding.init_std", v.clone()), format!("sigma{token}")),
        "seed" => (at("training.seed", v.clone()), format!("seed{token}")),
        "lr" => (at("optimizer.lr", v.clone()), format!("lr{token}")),
        "batch_size" => (at("training.batch_size", v.clone()), format!("b{token}")),
        "model" => (at("model", nested("kind", v.clone())), token),
        path => {
            let short = path.rsplit('.').next().unwrap_or(path);
            (at(path, v.clone()), format!("{short}{token}"))
        }
    })
}

fn scalar_token(v: &Value) -> Result<String, String> {
    let raw = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        _ => return Err("grid values must be numbers or strings".into()),
    };
    Ok(raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect())
}
