//! Where a data set's prepared cache lives when an experiment names none.
use std::path::{Path, PathBuf};

use super::{source_tag, InputFormat, SynthConfig};

/// `data-cache/synthetic-rows<N>-seed<S>-min<M>` for generated data, else
/// `data-cache/<stem>-<format>[-files]-<tag>-min<M>`: the stem is the (training) file's, the tag
/// hashes the canonical paths of `files` (one raw file, or a predefined split's train, valid and
/// test) and the schema's. So two `train.tsv` in different directories, one file read as two
/// formats, or a training file alone and in a predefined split, never share a cache.
pub fn default_cache_dir(
    synthetic: Option<&SynthConfig>,
    files: &[&Path],
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
    let first = files.first().copied().unwrap_or(Path::new("data"));
    let stem = first
        .file_stem()
        .map_or("data".into(), |s| s.to_string_lossy().into_owned());
    let alone = [first];
    let tag = source_tag(if files.is_empty() { &alone } else { files }, format);
    let format = format.map_or("data", InputFormat::name);
    let kind = if files.len() > 1 { "-files" } else { "" };
    root.join(format!("{stem}-{format}{kind}-{tag}-min{min_count}"))
}
