//! Summaries of a cache: split sizes, positive rates and per-field frequency profiles (how
//! skewed, how much falls out of vocabulary), for `mlet data stats`.
use crate::data::cache::Dataset;
use crate::data::split::{Split, SplitCounts, SplitRule};
use serde::Serialize;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldStats {
    pub name: String,
    /// Vocabulary size + 1 (the OOV row).
    pub cardinality: usize,
    /// Categories (excluding OOV) seen exactly once in training.
    pub singletons: usize,
    /// Training rows of the most frequent category (excluding OOV), as a share of training rows.
    pub top1_share: f64,
    /// Share of rows mapped to OOV, per split (valid/test: mostly values unseen in training).
    pub train_oov_share: f64,
    pub valid_oov_share: f64,
    pub test_oov_share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheStats {
    pub cache: String,
    pub source: String,
    pub format: String,
    /// How rows were divided; a predefined split names its valid and test files (`source` is
    /// the training file).
    pub split: SplitRule,
    /// Seed of a random split.
    pub split_seed: u64,
    pub rows: SplitCounts,
    pub skipped_lines: u64,
    pub min_count: u32,
    pub num_dense: usize,
    pub total_categories: usize,
    /// Mean label per split (NaN-free: 0 for an empty split).
    pub positive_rate: [f64; 3],
    pub fields: Vec<FieldStats>,
}

pub fn cache_stats(ds: &Dataset) -> CacheStats {
    let nf = ds.num_fields();
    let share = |num: u64, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let mut oov = [vec![0u64; nf], vec![0u64; nf], vec![0u64; nf]];
    let mut positive_rate = [0.0; 3];
    for split in Split::ALL {
        let d = ds.split(split);
        let counts = &mut oov[split.index()];
        for row in d.cat.chunks_exact(nf.max(1)) {
            for (c, &v) in counts.iter_mut().zip(row) {
                *c += u64::from(v == 0);
            }
        }
        let pos: f64 = d.label.iter().map(|&l| f64::from(l)).sum();
        positive_rate[split.index()] = if d.len == 0 { 0.0 } else { pos / d.len as f64 };
    }
    let train = ds.meta.rows.train;
    let fields = (0..nf)
        .map(|f| {
            let freq = ds.field_frequencies(f);
            FieldStats {
                name: ds.meta.field_names[f].clone(),
                cardinality: freq.len(),
                singletons: freq[1..].iter().filter(|&&c| c == 1).count(),
                top1_share: share(
                    u64::from(freq[1..].iter().copied().max().unwrap_or(0)),
                    train,
                ),
                train_oov_share: share(oov[0][f], train),
                valid_oov_share: share(oov[1][f], ds.meta.rows.valid),
                test_oov_share: share(oov[2][f], ds.meta.rows.test),
            }
        })
        .collect();
    CacheStats {
        cache: ds.dir().display().to_string(),
        source: ds.meta.source.clone(),
        format: ds.meta.format.clone(),
        split: ds.meta.split.clone(),
        split_seed: ds.meta.split_seed,
        rows: ds.meta.rows,
        skipped_lines: ds.meta.skipped_lines,
        min_count: ds.meta.min_count,
        num_dense: ds.num_dense(),
        total_categories: ds.meta.total_categories(),
        positive_rate,
        fields,
    }
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cache    {} ({} from {})",
            self.cache, self.format, self.source
        )?;
        match &self.split {
            SplitRule::Files { valid, test } => writeln!(
                f,
                "split    {}: train {}, valid {}, test {}",
                self.split,
                self.source,
                valid.display(),
                test.display()
            )?,
            rule @ SplitRule::Random { .. } => {
                writeln!(f, "split    {rule}, seed {}", self.split_seed)?
            }
            rule => writeln!(f, "split    {rule}")?,
        }
        writeln!(
            f,
            "rows     train {}  valid {}  test {}  (skipped lines {})",
            self.rows.train, self.rows.valid, self.rows.test, self.skipped_lines
        )?;
        writeln!(
            f,
            "positive train {:.4}  valid {:.4}  test {:.4}",
            self.positive_rate[0], self.positive_rate[1], self.positive_rate[2]
        )?;
        writeln!(
            f,
            "features {} dense, {} categorical, {} categories in all (min_count {})",
            self.num_dense,
            self.fields.len(),
            self.total_categories,
            self.min_count
        )?;
        writeln!(f)?;
        let width = self
            .fields
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<width$} {:>11} {:>10} {:>8} {:>9} {:>9} {:>9}",
            "field", "cardinality", "singletons", "top1", "oov train", "oov valid", "oov test"
        )?;
        for s in &self.fields {
            writeln!(
                f,
                "{:<width$} {:>11} {:>10} {:>7.2}% {:>8.2}% {:>8.2}% {:>8.2}%",
                s.name,
                s.cardinality,
                s.singletons,
                100.0 * s.top1_share,
                100.0 * s.train_oov_share,
                100.0 * s.valid_oov_share,
                100.0 * s.test_oov_share
            )?;
        }
        Ok(())
    }
}
