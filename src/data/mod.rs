//! Data: raw files → memory-mapped dataset cache → batches. Knows nothing about models.
//!
//! `synth` writes Criteo-shaped raw files; `prepare` streams a raw file (Criteo TSV, Avazu CSV or a
//! CSV/TSV described by a YAML schema) into a cache directory; `Dataset` memory-maps a cache
//! and `SplitData::gather` copies rows into a reusable `Batch`. The cache layout is in
//! `docs/data.md`.
mod batch;
mod blocks;
mod cache;
mod cache_name;
mod error;
mod fingerprint;
pub mod frequency;
mod hash;
mod id_table;
mod lines;
pub(crate) mod parse;
mod prepare;
pub(crate) mod schema;
mod serving;
mod split;
mod stats;
mod synth;
mod vocab;
mod vocab_file;

pub use batch::Batch;
pub use cache::{CacheMeta, Dataset, SplitData, CACHE_FORMAT_VERSION, META_FILE};
pub use cache_name::default_cache_dir;
pub use error::InputError;
pub use fingerprint::{source_tag, Fingerprint, SchemaFingerprint, SourceFingerprint};
pub use prepare::{prepare, PrepareOptions, PrepareReport};
pub use schema::{ColumnRef, ColumnSpec, CsvSchema, InputFormat, Remaining, Transform};
pub use serving::RawRows;
pub use split::{Split, SplitCounts, SplitRule};
pub use stats::{cache_stats, CacheStats, FieldStats};
pub use synth::{
    synthetic_cardinalities, write_synthetic, SynthConfig, SynthRow, Synthesizer,
    CRITEO_CARDINALITIES, CRITEO_ROWS, PILOT_ROWS, POSITIVE_RATE,
};
pub use vocab_file::{
    CatField, DenseColumn, DenseTransform, Derive, LabelColumn, VocabFile, VocabValue, VOCAB_FILE,
    VOCAB_FORMAT_VERSION,
};
