//! What a run costs: time per training step (median and 90th percentile) and the peak resident
//! memory of the process, per phase and against its budget (paper 002's runtime table is checked
//! against these; the memory side is measured in `memory`).
use serde::{Deserialize, Serialize};

use super::memory::{MemoryBudget, PhasePeak};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// Wall time of one step (gathering the batch, forward, backward, update), in milliseconds.
    pub step_ms_median: f64,
    pub step_ms_p90: f64,
    /// Steps timed in this process (a resumed run times only the steps after its checkpoint).
    pub steps_timed: usize,
    /// Peak resident memory (Linux `VmHWM`) from the start of the run to the end of training,
    /// and to the end of evaluation; `None` where the system does not tell.
    pub peak_rss_training_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// The peak of each phase of the run (setup, training, evaluation, collapse_check, saving),
    /// in order; absent in runs written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peak_rss_by_phase: Vec<PhasePeak>,
    /// The bytes the run needs (parameters, optimizer state, data cache) and the peak's ratio
    /// to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<MemoryBudget>,
}

/// Collects step durations.
#[derive(Default)]
pub struct StepTimes {
    ms: Vec<f64>,
}

impl StepTimes {
    pub fn push(&mut self, seconds: f64) {
        self.ms.push(seconds * 1e3);
    }

    /// The `q`-quantile (nearest rank) of the recorded times; NaN when none.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// How many steps were timed.
    pub fn count(&self) -> usize {
        self.ms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut t = StepTimes::default();
        for s in [5, 1, 4, 2, 3, 10, 6, 7, 9, 8] {
            t.push(s as f64 / 1e3);
        }
        assert_eq!(t.quantile(0.5), 5.0);
        assert_eq!(t.quantile(0.9), 9.0);
        assert!(StepTimes::default().quantile(0.5).is_nan());
    }
}
