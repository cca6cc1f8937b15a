//! Metrics of the test split grouped by sample frequency: paper 001's Table 4 (set A, the 10%
//! most frequent samples; set B, the 10% least frequent) and, beyond the paper, every decile.
//!
//! Samples are ordered by ascending log-frequency (`crate::data::frequency`), ties in row order,
//! and cut into ten groups of `n/10` rows (rounded: group `g` holds sorted positions
//! `[g·n/10, (g+1)·n/10)`). Decile 1 is the least frequent tenth, decile 10 the most frequent;
//! set B is decile 1 and set A decile 10.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{evaluate, Metrics};

pub const GROUPS: usize = 10;

/// One group of test samples and its metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyGroup {
    /// 1 = the least frequent tenth of the test samples, 10 = the most frequent.
    pub decile: usize,
    /// Range of the samples' log-frequencies (Σ ln count) in this group.
    pub log_frequency_min: f64,
    pub log_frequency_max: f64,
    pub samples: usize,
    /// `None` when the group holds a single class (AUC is undefined there).
    pub metrics: Option<Metrics>,
}

/// Table 4's two sets and the ten deciles of a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyMetrics {
    /// Set A: the 10% most frequent samples (decile 10).
    pub set_a: FrequencyGroup,
    /// Set B: the 10% least frequent samples (decile 1).
    pub set_b: FrequencyGroup,
    /// Deciles 1..=10, least frequent first.
    pub deciles: Vec<FrequencyGroup>,
}

/// Groups `logits`/`labels` by `log_frequency` and evaluates each group.
pub fn frequency_metrics(
    logits: &[f32],
    labels: &[f32],
    log_frequency: &[f64],
) -> Result<FrequencyMetrics> {
    let n = logits.len();
    if labels.len() != n || log_frequency.len() != n {
        bail!(
            "{} scores, {} labels and {} frequencies",
            n,
            labels.len(),
            log_frequency.len()
        );
    }
    if n < GROUPS {
        bail!("a frequency split needs at least {GROUPS} samples, got {n}");
    }
    let mut order: Vec<usize> = (0..n).collect();
    // stable: ties keep row order
    order.sort_by(|&a, &b| log_frequency[a].total_cmp(&log_frequency[b]));
    let deciles: Vec<FrequencyGroup> = (0..GROUPS)
        .map(|g| {
            let rows = &order[g * n / GROUPS..(g + 1) * n / GROUPS];
            let z: Vec<f32> = rows.iter().map(|&i| logits[i]).collect();
            let y: Vec<f32> = rows.iter().map(|&i| labels[i]).collect();
            FrequencyGroup {
                decile: g + 1,
                log_frequency_min: log_frequency[rows[0]],
                log_frequency_max: log_frequency[rows[rows.len() - 1]],
                samples: rows.len(),
                metrics: evaluate(&z, &y).ok(),
            }
        })
        .collect();
    Ok(FrequencyMetrics {
        set_a: deciles[GROUPS - 1].clone(),
        set_b: deciles[0].clone(),
        deciles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_frequency_not_row_order() {
        // 20 samples; frequency descends with the row, so the last two rows are the least
        // frequent tenth; within it the score ranks the positive first (AUC 1)
        let n = 20;
        let log_f: Vec<f64> = (0..n).map(|i| (n - i) as f64).collect();
        let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let logits: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 1 { 1.0 } else { -1.0 })
            .collect();
        let m = frequency_metrics(&logits, &labels, &log_f).unwrap();
        assert_eq!(m.deciles.len(), 10);
        assert_eq!(m.set_b.log_frequency_min, 1.0);
        assert_eq!(m.set_b.log_frequency_max, 2.0);
        assert_eq!(m.set_a.log_frequency_min, 19.0);
        assert_eq!(m.set_a.log_frequency_max, 20.0);
        assert_eq!(m.set_b, m.deciles[0]);
        assert_eq!(m.set_a, m.deciles[9]);
        assert!(m.deciles.iter().all(|g| g.samples == 2));
        assert_eq!(m.set_b.metrics.unwrap().auc, 1.0);
    }

    #[test]
    fn a_group_of_one_class_has_no_metrics() {
        let log_f: Vec<f64> = (0..10).map(f64::from).collect();
        let labels = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let logits = [0.0f32; 10];
        let m = frequency_metrics(&logits, &labels, &log_f).unwrap();
        assert!(m.deciles.iter().all(|g| g.metrics.is_none()));
    }

    #[test]
    fn too_few_samples_is_an_error() {
        assert!(frequency_metrics(&[0.0; 3], &[0.0, 1.0, 0.0], &[1.0; 3]).is_err());
    }
}
