//! The YAML experiment schema: serde structs, validation, and the expansion of a file into runs.
//! Nothing here touches tensors.
mod experiment;
mod grid;
mod load;
mod models;
mod yaml;
mod yaml_depth;

pub use experiment::*;
pub use load::{
    load_experiment, load_runs, parse_experiment, parse_runs, ExperimentFile, InitStdSweep,
    OpenSweep, ReportConfig, RunSpec,
};
pub use models::*;
pub use yaml_depth::check_depth as check_yaml_depth;
