//! Evaluation metrics computed exactly over a whole split: ROC-AUC (tie-aware), LogLoss and
//! PR-AUC (average precision). Inputs are logits so that LogLoss is stable where probabilities
//! saturate.
pub mod frequency;

pub use frequency::{frequency_metrics, FrequencyGroup, FrequencyMetrics};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub auc: f64,
    pub logloss: f64,
    pub pr_auc: f64,
    pub samples: usize,
    pub positives: usize,
}

/// All three metrics for one split. `labels` are 0 or 1.
pub fn evaluate(logits: &[f32], labels: &[f32]) -> Result<Metrics> {
    if logits.len() != labels.len() {
        bail!("{} scores but {} labels", logits.len(), labels.len());
    }
    if logits.iter().any(|z| !z.is_finite()) {
        bail!("the model produced non-finite scores; metrics would be meaningless");
    }
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    Ok(Metrics {
        auc: roc_auc(logits, labels)?,
        logloss: logloss(logits, labels),
        pr_auc: pr_auc(logits, labels)?,
        samples: labels.len(),
        positives,
    })
}

/// Indices sorted by descending score; ties keep input order (the metrics group ties anyway).
fn order_descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Groups of equal scores, in descending score order, as (positives, negatives) per group.
fn tie_groups(scores: &[f32], labels: &[f32]) -> Vec<(f64, f64)> {
    let order = order_descending(scores);
    let mut groups: Vec<(f64, f64)> = Vec::new();
    let mut last: Option<f32> = None;
    for i in order {
        if last != Some(scores[i]) {
            groups.push((0.0, 0.0));
            last = Some(scores[i]);
        }
        let g = groups.last_mut().expect("a group was just pushed");
        if labels[i] > 0.5 {
            g.0 += 1.0;
        } else {
            g.1 += 1.0;
        }
    }
    groups
}

/// Probability that a random positive scores above a random negative, ties counting one half
/// (the Mann-Whitney statistic; equals the trapezoidal area under the ROC curve).
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Result<f64> {
    let groups = tie_groups(scores, labels);
    let (pos, neg) = groups
        .iter()
        .fold((0.0, 0.0), |(p, n), g| (p + g.0, n + g.1));
    if pos == 0.0 || neg == 0.0 {
        bail!("ROC-AUC needs both classes; got {pos} positives and {neg} negatives");
    }
    let mut negatives_below = neg;
    let mut area = 0.0;
    for (p, n) in groups {
        negatives_below -= n;
        area += p * (negatives_below + 0.5 * n);
    }
    Ok(area / (pos * neg))
}

/// Average precision: sum over thresholds of (recall step) x (precision at that threshold),
/// with tied scores forming one threshold (scikit-learn's `average_precision_score`).
pub fn pr_auc(scores: &[f32], labels: &[f32]) -> Result<f64> {
    let groups = tie_groups(scores, labels);
    let pos: f64 = groups.iter().map(|g| g.0).sum();
    if pos == 0.0 {
        bail!("PR-AUC needs at least one positive");
    }
    let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
    for (p, n) in groups {
        tp += p;
        fp += n;
        ap += (p / pos) * (tp / (tp + fp));
    }
    Ok(ap)
}

/// Mean binary cross-entropy of sigmoid(logit) against the label, computed from logits.
pub fn logloss(logits: &[f32], labels: &[f32]) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            let z = z as f64;
            // -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
            if y > 0.5 {
                softplus(-z)
            } else {
                softplus(z)
            }
        })
        .sum();
    total / logits.len().max(1) as f64
}

fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand_without_ties() {
        // pairs (pos, neg): 0.9>0.8, 0.9>0.3, 0.4<0.8, 0.4>0.3 → 3 of 4
        let s = [0.9, 0.8, 0.4, 0.3];
        let y = [1.0, 0.0, 1.0, 0.0];
        assert!((roc_auc(&s, &y).unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn auc_by_hand_with_ties() {
        // positives 0.5, 0.5, 0.2; negatives 0.5, 0.1.
        // pairs: (0.5,0.5)=.5 (0.5,0.1)=1 twice → 3; (0.2,0.5)=0 (0.2,0.1)=1 → 1; total 4/6
        let s = [0.5, 0.5, 0.2, 0.5, 0.1];
        let y = [1.0, 1.0, 1.0, 0.0, 0.0];
        assert!((roc_auc(&s, &y).unwrap() - 4.0 / 6.0).abs() < 1e-12);
        // all scores tied → 0.5
        let s = [0.3; 4];
        let y = [1.0, 0.0, 1.0, 0.0];
        assert!((roc_auc(&s, &y).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_matches_pairwise_count_on_random_scores_with_ties() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // scores on a coarse grid so that ties are frequent
        let s: Vec<f32> = (0..300)
            .map(|_| rng.gen_range(0..20) as f32 / 4.0)
            .collect();
        let y: Vec<f32> = s
            .iter()
            .map(|&v| (rng.gen::<f32>() < 0.2 + v / 10.0) as u8 as f32)
            .collect();
        let (mut wins, mut pairs) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] == 1.0 && y[j] == 0.0 {
                    pairs += 1.0;
                    wins += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((roc_auc(&s, &y).unwrap() - wins / pairs).abs() < 1e-12);
    }

    #[test]
    fn auc_needs_both_classes() {
        assert!(roc_auc(&[0.1, 0.2], &[1.0, 1.0]).is_err());
    }

    #[test]
    fn pr_auc_by_hand() {
        // descending: 0.9(+) 0.8(-) 0.4(+) 0.3(-): AP = .5*1 + .5*(2/3)
        let s = [0.9, 0.8, 0.4, 0.3];
        let y = [1.0, 0.0, 1.0, 0.0];
        assert!((pr_auc(&s, &y).unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        // a tie of one positive and one negative at the top is one threshold: precision 1/2
        let s = [0.7, 0.7, 0.1];
        let y = [1.0, 0.0, 1.0];
        assert!((pr_auc(&s, &y).unwrap() - (0.5 * 0.5 + 0.5 * (2.0 / 3.0))).abs() < 1e-12);
    }

    #[test]
    fn logloss_matches_definition() {
        let z = [2.0f32, -1.0, 0.0, 8.0];
        let y = [1.0f32, 0.0, 1.0, 0.0];
        let expected: f64 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| {
                let p = 1.0 / (1.0 + (-(z as f64)).exp());
                -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / 4.0;
        assert!((logloss(&z, &y) - expected).abs() < 1e-9);
        // saturated probabilities stay exact: -ln(1 - sigmoid(40)) = 40 + ln(1 + e^-40)
        assert!((logloss(&[40.0], &[0.0]) - 40.0).abs() < 1e-12);
    }

    #[test]
    fn non_finite_scores_are_an_error() {
        assert!(evaluate(&[f32::NAN, 0.0], &[1.0, 0.0]).is_err());
    }
}
