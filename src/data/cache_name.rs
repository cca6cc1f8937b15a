//! Where a data set's prepared cache lives when an experiment names none.
use std::path::{Path, PathBuf};

use super::{source_tag, InputFormat, SynthConfig};

/// `data-cache/synthetic-rows<N>-seed<S>-min<M>` for generated data, else
/// `data-cache/<file stem>-<format>-<tag>-min<M>`, where the tag hashes the file's canonical path
/// (and the schema's): two `train.tsv` in different directories, or one file read as two
/// formats, never share a cache.
pub fn default_cache_dir(
    synthetic: Option<&SynthConfig>,
    raw: Option<&Path>,
    format: Option<&InputFormat>,
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
    let tag = source_tag(raw, format);
    let format = format.map_or("data", InputFormat::name);
    root.join(format!("{stem}-{format}-{tag}-min{min_count}"))
}
