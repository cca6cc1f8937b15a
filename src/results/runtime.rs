//! The runtime table (paper 002, Table 2): time per training step and peak memory against d and
//! k, baseline against MLET, so that "MLET costs about +25% per iteration, nearly independent of
//! k and d" can be checked on any machine. Per configuration the median over seeds of each run's
//! median (and 90th percentile) step time; the ratio is to the baseline at the same model, data
//! set and d.
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::{csv, format_k, ResultRow};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRow {
    pub model: String,
    pub dataset: String,
    pub d: usize,
    pub k: Option<usize>,
    pub runs: usize,
    pub step_ms_median: f64,
    pub step_ms_p90: f64,
    pub peak_rss_mb: f64,
    /// `step_ms_median` over the baseline's at the same model, data set and d.
    pub step_ratio_to_baseline: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One row per (model, dataset, d, k), every σ and seed pooled (σ does not change the cost).
pub fn runtime_table(rows: &[ResultRow]) -> Vec<RuntimeRow> {
    let mut groups: BTreeMap<(String, String, usize, Option<usize>), Vec<&ResultRow>> =
        BTreeMap::new();
    for r in rows {
        groups
            .entry((r.model.clone(), r.dataset.clone(), r.d, r.k))
            .or_default()
            .push(r);
    }
    let mut out: Vec<RuntimeRow> = groups
        .into_iter()
        .map(|((model, dataset, d, k), rs)| RuntimeRow {
            model,
            dataset,
            d,
            k,
            runs: rs.len(),
            step_ms_median: median(rs.iter().map(|r| r.step_ms_median).collect()),
            step_ms_p90: median(rs.iter().map(|r| r.step_ms_p90).collect()),
            peak_rss_mb: median(rs.iter().map(|r| r.peak_rss_mb).collect()),
            step_ratio_to_baseline: f64::NAN,
        })
        .collect();
    let baselines: BTreeMap<(String, String, usize), f64> = out
        .iter()
        .filter(|r| r.k.is_none())
        .map(|r| ((r.model.clone(), r.dataset.clone(), r.d), r.step_ms_median))
        .collect();
    for r in &mut out {
        if let Some(b) = baselines.get(&(r.model.clone(), r.dataset.clone(), r.d)) {
            r.step_ratio_to_baseline = r.step_ms_median / b;
        }
    }
    out
}

/// Writes [`runtime_table`] as CSV (atomic).
pub fn write_runtime_csv(path: &Path, rows: &[RuntimeRow]) -> Result<()> {
    const HEADER: [&str; 9] = [
        "model",
        "dataset",
        "d",
        "k",
        "runs",
        "step_ms_median",
        "step_ms_p90",
        "peak_rss_mb",
        "step_ratio_to_baseline",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.dataset.clone(),
                r.d.to_string(),
                format_k(r.k),
                r.runs.to_string(),
                r.step_ms_median.to_string(),
                r.step_ms_p90.to_string(),
                r.peak_rss_mb.to_string(),
                r.step_ratio_to_baseline.to_string(),
            ]
        })
        .collect();
    csv::write_table(path, &HEADER, &body)
}
