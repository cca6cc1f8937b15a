//! Where a data set's prepared cache lives when an experiment names none.
use std::path::{Path, PathBuf};

use super::SynthConfig;

/// `data-cache/synthetic-rows<N>-seed<S>-min<M>` for generated data, else
/// `data-cache/<file stem>-min<M>`.
pub fn default_cache_dir(
    synthetic: Option<&SynthConfig>,
    raw: Option<&Path>,
    min_count: u32,
) -> PathBuf {
    let root = Path::new("data-cache");
    if let Some(s) = synthetic {
        return root.join(format!(
            "synthetic-rows{}-seed{}-min{min_count}",
            s.rows, s.seed
        ));
    }
    let raw = raw.unwrap_or(Path::new("data"));
    let stem = raw
        .file_stem()
        .map_or("data".into(), |s| s.to_string_lossy().into_owned());
    root.join(format!("{stem}-min{min_count}"))
}
