//! What a run costs: time per training step (median and 90th percentile) and the peak resident
//! memory of the process (paper 002's runtime table is checked against these).
use serde::{Deserialize, Serialize};

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

/// The process's peak resident set size so far, in bytes (`VmHWM` of /proc/self/status).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak to the current resident size (Linux ≥ 4.0), so that a run done in a process
/// that ran others before reports its own peak. Best effort: without it the peak is the
/// process's. Returns whether the reset was done.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
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

    #[test]
    fn peak_rss_is_read_and_reset() {
        let before = peak_rss_bytes().expect("Linux reports VmHWM");
        {
            let big = vec![1u8; 64 << 20];
            std::hint::black_box(&big);
        }
        let peak = peak_rss_bytes().unwrap();
        assert!(peak >= before.max(64 << 20), "{peak} < 64 MiB");
        // some sandboxes forbid the reset; then the peak stays the process's
        if reset_peak_rss() {
            assert!(peak_rss_bytes().unwrap() < peak, "the peak was not reset");
        }
    }
}
