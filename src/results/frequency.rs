//! Table 4 of paper 001: the relative PR-AUC gain of MLET over the single-layer baseline on the
//! 10% most frequent test samples (set A) and the 10% least frequent (set B), and beyond the
//! paper on every frequency decile. An MLET run is paired with the baseline run of the same
//! model, data set, d and seed; gains are `100 · (MLET − baseline) / baseline` in percent, then
//! averaged over the seeds (mean ± sample std).
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::csv;
use super::summary::{mean_std, OrdF64};
use super::{format_k, ResultRow, DECILES};

/// One MLET configuration's gain over its baseline, over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyGain {
    pub model: String,
    pub dataset: String,
    pub d: usize,
    pub k: usize,
    pub init_std: f64,
    /// Seeds with both an MLET and a baseline run.
    pub seeds: usize,
    pub gain_a_mean: f64,
    pub gain_a_std: f64,
    pub gain_b_mean: f64,
    pub gain_b_std: f64,
    /// Mean gain per decile, least frequent first.
    pub decile_gain_mean: Vec<f64>,
}

fn relative_gain_pct(mlet: f64, baseline: f64) -> f64 {
    100.0 * (mlet - baseline) / baseline
}

type Key = (String, String, usize, usize, OrdF64);

/// Table 4 from a results table, one row per (model, dataset, d, k, init σ) with a baseline.
pub fn frequency_gains(rows: &[ResultRow]) -> Vec<FrequencyGain> {
    let baseline: BTreeMap<(&str, &str, usize, u64), &ResultRow> = rows
        .iter()
        .filter(|r| r.is_baseline())
        .map(|r| ((r.model.as_str(), r.dataset.as_str(), r.d, r.seed), r))
        .collect();
    let mut pairs: BTreeMap<Key, Vec<(&ResultRow, &ResultRow)>> = BTreeMap::new();
    for r in rows {
        let Some(k) = r.k else { continue };
        if let Some(b) = baseline.get(&(r.model.as_str(), r.dataset.as_str(), r.d, r.seed)) {
            let key = (
                r.model.clone(),
                r.dataset.clone(),
                r.d,
                k,
                OrdF64(r.init_std),
            );
            pairs.entry(key).or_default().push((r, b));
        }
    }
    pairs
        .into_iter()
        .map(|((model, dataset, d, k, s), ps)| {
            let gains = |f: &dyn Fn(&ResultRow) -> f64| -> Vec<f64> {
                ps.iter()
                    .map(|(m, b)| relative_gain_pct(f(m), f(b)))
                    .collect()
            };
            let (gain_a_mean, gain_a_std) = mean_std(&gains(&|r| r.test_pr_auc_a));
            let (gain_b_mean, gain_b_std) = mean_std(&gains(&|r| r.test_pr_auc_b));
            let decile_gain_mean = (0..DECILES)
                .map(|i| {
                    let at = |r: &ResultRow| r.test_pr_auc_deciles.get(i).copied();
                    mean_std(&gains(&|r| at(r).unwrap_or(f64::NAN))).0
                })
                .collect();
            FrequencyGain {
                model,
                dataset,
                d,
                k,
                init_std: s.0,
                seeds: ps.len(),
                gain_a_mean,
                gain_a_std,
                gain_b_mean,
                gain_b_std,
                decile_gain_mean,
            }
        })
        .collect()
}

/// Writes [`frequency_gains`] as CSV (atomic): gains in percent.
pub fn write_frequency_gains_csv(path: &Path, rows: &[FrequencyGain]) -> Result<()> {
    let mut header: Vec<String> = [
        "model",
        "dataset",
        "d",
        "k",
        "init_std",
        "seeds",
        "pr_auc_gain_a_pct_mean",
        "pr_auc_gain_a_pct_std",
        "pr_auc_gain_b_pct_mean",
        "pr_auc_gain_b_pct_std",
    ]
    .map(String::from)
    .to_vec();
    header.extend((1..=DECILES).map(|i| format!("pr_auc_gain_decile{i}_pct_mean")));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|g| {
            let mut line = vec![
                g.model.clone(),
                g.dataset.clone(),
                g.d.to_string(),
                format_k(Some(g.k)),
                g.init_std.to_string(),
                g.seeds.to_string(),
                g.gain_a_mean.to_string(),
                g.gain_a_std.to_string(),
                g.gain_b_mean.to_string(),
                g.gain_b_std.to_string(),
            ];
            line.extend(g.decile_gain_mean.iter().map(f64::to_string));
            line
        })
        .collect();
    csv::write_table(path, &header, &body)
}
