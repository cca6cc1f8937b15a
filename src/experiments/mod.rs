//! Experiments: from an experiment file to prepared data, finished run directories, a results
//! table and figures.
mod children;
mod grid;
mod runs;

pub use grid::{collect_results, run_grid, GridOptions, GridReport, Shard};
pub use runs::{open_data, read_metrics, run_all, train_one, Outcome, Overrides};

use anyhow::Result;
use std::path::Path;

use crate::config::{ExperimentFile, InitStdSweep};

/// Reads an experiment file, taking `init_std: best` from the σ sweep's results it names.
pub fn load_experiment(path: &Path) -> Result<ExperimentFile> {
    crate::config::load_experiment(path, &|sweep: &Path| {
        Ok(Box::new(crate::results::BestSigmas::load(sweep)?) as Box<dyn InitStdSweep>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_std_best_comes_from_a_sweeps_best_init_std_json() {
        let dir = std::env::temp_dir().join(format!("mlet-best-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("best_init_std.json");
        let entry = |d: usize, sigma: f64, auc: f64| {
            format!(
                "{{\"model\":\"dlrm\",\"dataset\":\"s\",\"d\":{d},\"k\":32,\"init_std\":{sigma},\
                 \"lr\":0.2,\"optimizer\":\"sgd\",\"auc_mean\":{auc},\"auc_std\":0.0,\"count\":3,\
                 \"sigmas_tried\":5}}"
            )
        };
        std::fs::write(
            &path,
            format!("[{},{}]", entry(16, 0.1, 0.7), entry(8, 0.5, 0.71)),
        )
        .unwrap();
        let text = format!(
            "name: t\ndata: {{synthetic: {{rows: 1000, seed: 3}}}}\nmodel: {{kind: dlrm}}\nembedding: {{dim: 8}}\nbest_init_std_from: {}\ngrid:\n  d: [8, 16, 4]\n  k: [baseline, 32]\n  init_std: [best]\n",
            path.display()
        );
        let load = |text: &str| {
            let file = dir.join("exp.yaml");
            std::fs::write(&file, text).unwrap();
            load_experiment(&file)
        };
        let runs = load(&text).unwrap().runs;
        let sigma = |name: &str| {
            runs.iter()
                .find(|r| r.run == name)
                .unwrap()
                .config
                .embedding
                .init_std
        };
        assert_eq!(sigma("d16-k32-sigmabest"), 0.1);
        assert_eq!(sigma("d8-k32-sigmabest"), 0.5);
        // no entry at d = 4: the best over all d
        assert_eq!(sigma("d4-k32-sigmabest"), 0.5);
        let missing = text.replace("k: [baseline, 32]", "k: [64]");
        let msg = format!("{:#}", load(&missing).unwrap_err());
        assert!(msg.contains("k = 64"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
