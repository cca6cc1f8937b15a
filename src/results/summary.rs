//! Summaries of a results table: mean ± std over seeds, the best init σ, and Table 3's memory
//! reduction.
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::InitStdSweep;

use super::{csv, format_k, ResultRow};

/// An `f64` ordered by `total_cmp`, for grouping keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OrdF64(pub f64);

impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One configuration (every setting but the seed) with its metrics over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub model: String,
    pub dataset: String,
    pub d: usize,
    pub k: Option<usize>,
    pub sets: usize,
    pub init_std: f64,
    pub lr: f64,
    pub optimizer: String,
    /// Number of runs (seeds) in the group.
    pub count: usize,
    /// Mean and sample standard deviation (0 when `count` = 1) of the test metrics.
    pub auc_mean: f64,
    pub auc_std: f64,
    pub logloss_mean: f64,
    pub logloss_std: f64,
    pub pr_auc_mean: f64,
    pub pr_auc_std: f64,
    /// Mean validation AUC: what [`select_points`] chooses configurations by.
    pub valid_auc_mean: f64,
}

type ConfigKey = (
    String,
    String,
    usize,
    Option<usize>,
    usize,
    OrdF64,
    OrdF64,
    String,
);

fn config_key(r: &ResultRow) -> ConfigKey {
    (
        r.model.clone(),
        r.dataset.clone(),
        r.d,
        r.k,
        r.sets,
        OrdF64(r.init_std),
        OrdF64(r.lr),
        r.optimizer.clone(),
    )
}

/// Mean and sample standard deviation; the std is 0 for a single value. NaNs propagate.
pub(crate) fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Groups rows by every setting but the seed (model, dataset, d, k, sets, init_std, lr, optimizer) and
/// gives each group's mean and sample std of the test metrics. Sorted by model, dataset, d, then
/// k (baseline first), init_std, lr, optimizer.
///
/// Baseline rows are grouped by their `init_std` like the others; a grid that runs the baseline
/// once per σ gets one baseline group per σ.
pub fn summarize(rows: &[ResultRow]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<ConfigKey, Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        groups.entry(config_key(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((model, dataset, d, k, sets, s, lr, optimizer), rs)| {
            let stat =
                |f: fn(&ResultRow) -> f64| mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let (auc_mean, auc_std) = stat(|r| r.test_auc);
            let (logloss_mean, logloss_std) = stat(|r| r.test_logloss);
            let (pr_auc_mean, pr_auc_std) = stat(|r| r.test_pr_auc);
            let (valid_auc_mean, _) = stat(|r| r.valid_auc);
            SummaryRow {
                model,
                dataset,
                d,
                k,
                sets,
                init_std: s.0,
                lr: lr.0,
                optimizer,
                count: rs.len(),
                auc_mean,
                auc_std,
                logloss_mean,
                logloss_std,
                pr_auc_mean,
                pr_auc_std,
                valid_auc_mean,
            }
        })
        .collect()
}

/// NaN-safe "is `a` better than `b`" for maximisation: NaN loses to everything.
fn better(a: f64, b: f64) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (_, true) => !a.is_nan(),
        (true, false) => false,
        _ => a > b,
    }
}

/// Among summary rows sharing `key`, keeps the one with the highest mean validation AUC (the
/// highest mean test AUC when no row of the group has a finite validation AUC); ties keep the
/// first in `summary`'s order. Returns the chosen rows in key order.
pub(crate) fn select_by<K: Ord>(
    summary: &[SummaryRow],
    key: impl Fn(&SummaryRow) -> K,
) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<K, Vec<&SummaryRow>> = BTreeMap::new();
    for s in summary {
        groups.entry(key(s)).or_default().push(s);
    }
    groups
        .into_values()
        .map(|g| {
            let by_valid = g.iter().any(|s| s.valid_auc_mean.is_finite());
            let score = |s: &SummaryRow| {
                if by_valid {
                    s.valid_auc_mean
                } else {
                    s.auc_mean
                }
            };
            let mut best = g[0];
            for s in &g[1..] {
                if better(score(s), score(best)) {
                    best = s;
                }
            }
            best.clone()
        })
        .collect()
}

/// One point per (model, dataset, d, k, sets): where several configurations (init_std, lr,
/// optimizer) were run at the same point, the one with the highest mean validation AUC (test AUC
/// when there is no validation AUC). This is what the AUC-vs-d figures and [`memory_reduction`]
/// use.
pub fn select_points(summary: &[SummaryRow]) -> Vec<SummaryRow> {
    select_by(summary, |s| {
        (s.model.clone(), s.dataset.clone(), s.d, s.k, s.sets)
    })
}

/// The best init σ of one MLET (model, dataset, d, k) point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestSigma {
    pub model: String,
    pub dataset: String,
    pub d: usize,
    pub k: usize,
    /// The σ (with its lr and optimizer) whose mean test AUC over seeds is highest.
    pub init_std: f64,
    pub lr: f64,
    pub optimizer: String,
    pub auc_mean: f64,
    pub auc_std: f64,
    /// Seeds behind `auc_mean`.
    pub count: usize,
    /// How many distinct σ values were run at this point.
    pub sigmas_tried: usize,
}

/// A σ sweep's `best_init_std.json`, as `embedding.init_std: best` reads it.
pub struct BestSigmas {
    path: PathBuf,
    entries: Vec<BestSigma>,
}

impl BestSigmas {
    pub fn load(path: &Path) -> Result<BestSigmas> {
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

/// The entry at the same d when there is one, else the best over all d for the model and k.
impl InitStdSweep for BestSigmas {
    fn best_init_std(&self, model: &str, d: Option<u64>, k: u64) -> Result<f64> {
        let candidates: Vec<&BestSigma> = self
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
                    self.path.display()
                )
            })?;
        Ok(chosen.init_std)
    }
}

/// For each MLET (model, dataset, d, k): the init σ with the highest mean test AUC over seeds
/// (ties: the smaller σ), with that AUC and how many σ values were tried. Baseline rows are
/// ignored.
pub fn best_init_std(rows: &[ResultRow]) -> Vec<BestSigma> {
    let summary = summarize(rows);
    let mut groups: BTreeMap<(String, String, usize, usize), Vec<&SummaryRow>> = BTreeMap::new();
    for s in &summary {
        if let Some(k) = s.k {
            groups
                .entry((s.model.clone(), s.dataset.clone(), s.d, k))
                .or_default()
                .push(s);
        }
    }
    groups
        .into_iter()
        .map(|((model, dataset, d, k), g)| {
            let mut best = g[0];
            for s in &g[1..] {
                if better(s.auc_mean, best.auc_mean) {
                    best = s;
                }
            }
            let mut sigmas: Vec<OrdF64> = g.iter().map(|s| OrdF64(s.init_std)).collect();
            sigmas.sort();
            sigmas.dedup();
            BestSigma {
                model,
                dataset,
                d,
                k,
                init_std: best.init_std,
                lr: best.lr,
                optimizer: best.optimizer.clone(),
                auc_mean: best.auc_mean,
                auc_std: best.auc_std,
                count: best.count,
                sigmas_tried: sigmas.len(),
            }
        })
        .collect()
}

/// Table 3 of paper 001 for one baseline dimension: the smallest MLET d that matches the
/// baseline's mean test AUC at `baseline_d`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReduction {
    pub model: String,
    pub dataset: String,
    pub baseline_d: usize,
    /// Mean test AUC of the baseline at `baseline_d`.
    pub baseline_auc: f64,
    /// The smallest MLET d (over every k run) whose mean test AUC is >= `baseline_auc`; `None`
    /// when no MLET point reaches it.
    pub mlet_d: Option<usize>,
    /// The smallest k that reaches it at `mlet_d`.
    pub mlet_k: Option<usize>,
    /// Mean test AUC of MLET at (`mlet_d`, `mlet_k`).
    pub mlet_auc: Option<f64>,
    /// `baseline_d / mlet_d`: the factor by which inference embedding memory shrinks.
    pub ratio: Option<f64>,
}

/// Table 3 of paper 001: for each (model, dataset) and each baseline d, the smallest MLET d (over
/// all k run) whose mean test AUC over seeds is >= the baseline's mean test AUC at that d, the
/// smallest such k, and the ratio `baseline_d / mlet_d`. All MLET d values are candidates, so the
/// ratio is below 1 when MLET needs a larger d. Points are chosen per (d, k) as in
/// [`select_points`]. Sorted by model, dataset, baseline d.
pub fn memory_reduction(rows: &[ResultRow]) -> Vec<MemoryReduction> {
    let points = select_points(&summarize(rows));
    let mut out = Vec::new();
    for b in points.iter().filter(|p| p.k.is_none()) {
        let mut found: Option<&SummaryRow> = None;
        for m in points
            .iter()
            .filter(|p| p.k.is_some() && p.model == b.model && p.dataset == b.dataset)
        {
            if m.auc_mean >= b.auc_mean {
                let smaller = match found {
                    None => true,
                    Some(f) => (m.d, m.k) < (f.d, f.k),
                };
                if smaller {
                    found = Some(m);
                }
            }
        }
        out.push(MemoryReduction {
            model: b.model.clone(),
            dataset: b.dataset.clone(),
            baseline_d: b.d,
            baseline_auc: b.auc_mean,
            mlet_d: found.map(|m| m.d),
            mlet_k: found.and_then(|m| m.k),
            mlet_auc: found.map(|m| m.auc_mean),
            ratio: found.map(|m| b.d as f64 / m.d as f64),
        });
    }
    out
}

/// The largest memory reduction of one (model, dataset), as Table 3 reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxMemoryReduction {
    pub model: String,
    pub dataset: String,
    /// The largest `ratio` over the baseline dimensions; `None` when MLET never matched the
    /// baseline.
    pub ratio: Option<f64>,
    /// Every baseline dimension at which that ratio is reached (e.g. d 64 → 4 and 128 → 8).
    pub achieved_by: Vec<MemoryReduction>,
}

/// The overall maximum of [`memory_reduction`]'s ratios per (model, dataset), in input order.
pub fn max_memory_reduction(reductions: &[MemoryReduction]) -> Vec<MaxMemoryReduction> {
    let mut out: Vec<MaxMemoryReduction> = Vec::new();
    for r in reductions {
        let i = match out
            .iter()
            .position(|m| m.model == r.model && m.dataset == r.dataset)
        {
            Some(i) => i,
            None => {
                out.push(MaxMemoryReduction {
                    model: r.model.clone(),
                    dataset: r.dataset.clone(),
                    ratio: None,
                    achieved_by: Vec::new(),
                });
                out.len() - 1
            }
        };
        let m = &mut out[i];
        let Some(ratio) = r.ratio else { continue };
        match m.ratio {
            Some(best) if ratio < best => {}
            Some(best) if ratio == best => m.achieved_by.push(r.clone()),
            _ => {
                m.ratio = Some(ratio);
                m.achieved_by = vec![r.clone()];
            }
        }
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

/// Writes [`summarize`]'s output as CSV (atomic).
pub fn write_summary_csv(path: &Path, rows: &[SummaryRow]) -> Result<()> {
    const HEADER: [&str; 16] = [
        "model",
        "dataset",
        "d",
        "k",
        "sets",
        "init_std",
        "lr",
        "optimizer",
        "count",
        "auc_mean",
        "auc_std",
        "logloss_mean",
        "logloss_std",
        "pr_auc_mean",
        "pr_auc_std",
        "valid_auc_mean",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.model.clone(),
                s.dataset.clone(),
                s.d.to_string(),
                format_k(s.k),
                s.sets.to_string(),
                s.init_std.to_string(),
                s.lr.to_string(),
                s.optimizer.clone(),
                s.count.to_string(),
                s.auc_mean.to_string(),
                s.auc_std.to_string(),
                s.logloss_mean.to_string(),
                s.logloss_std.to_string(),
                s.pr_auc_mean.to_string(),
                s.pr_auc_std.to_string(),
                s.valid_auc_mean.to_string(),
            ]
        })
        .collect();
    csv::write_table(path, &HEADER, &body)
}

/// Writes [`memory_reduction`]'s output as CSV (atomic); missing values are empty fields.
pub fn write_memory_reduction_csv(path: &Path, rows: &[MemoryReduction]) -> Result<()> {
    const HEADER: [&str; 8] = [
        "model",
        "dataset",
        "baseline_d",
        "baseline_auc",
        "mlet_d",
        "mlet_k",
        "mlet_auc",
        "ratio",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.dataset.clone(),
                m.baseline_d.to_string(),
                m.baseline_auc.to_string(),
                opt(m.mlet_d),
                opt(m.mlet_k),
                opt(m.mlet_auc),
                opt(m.ratio),
            ]
        })
        .collect();
    csv::write_table(path, &HEADER, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_by_hand() {
        assert_eq!(mean_std(&[2.0]), (2.0, 0.0));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-15 && (s - 1.0).abs() < 1e-15);
    }

    #[test]
    fn nan_loses() {
        assert!(better(0.5, f64::NAN));
        assert!(!better(f64::NAN, 0.5));
        assert!(!better(f64::NAN, f64::NAN));
    }
}
