//! Experiments: from an experiment file to prepared data, finished run directories, a results
//! table and figures.
mod children;
mod grid;
mod runs;

pub use grid::{collect_results, run_grid, GridOptions, GridReport, Shard};
pub use runs::{cache_dir, open_data, read_metrics, run_all, train_one, Outcome, Overrides};
