//! The modulo hashing trick (paper 001, Fig. 8): the ids of chosen fields are mapped to
//! `id % buckets`, so that their tables hold `buckets` rows instead of one per category. The
//! out-of-vocabulary id 0 stays 0; any other id shares its row with the ids congruent to it.
//!
//! `embedding.hash` in an experiment file says which fields and how many buckets;
//! [`resolve`] turns it into concrete [`HashedField`]s against the data cache's field names and
//! cardinalities when a run starts. The run records them in `run.json` (`data.hash`), so that
//! a finished run's model is rebuilt without the data.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::HashConfig;

/// One hashed field: its position among the categorical fields, its name, and its table size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HashedField {
    pub index: usize,
    pub name: String,
    pub buckets: usize,
}

/// The table row of field-local id `id` in a table of `buckets` rows.
pub fn bucket(id: i64, buckets: i64) -> i64 {
    id % buckets
}

/// Rows of each field's table: `buckets` for hashed fields, the vocabulary size otherwise.
/// Errors when a hashed field is not one of `cardinalities` or would not shrink.
pub fn table_rows(cardinalities: &[usize], hashed: &[HashedField]) -> Result<Vec<usize>> {
    let mut rows = cardinalities.to_vec();
    for h in hashed {
        let Some(&n) = cardinalities.get(h.index) else {
            bail!(
                "hashed field {} (index {}) is not among the {} categorical fields",
                h.name,
                h.index,
                cardinalities.len()
            );
        };
        if h.buckets == 0 || h.buckets >= n {
            bail!(
                "hashed field {}: {} buckets for a vocabulary of {n} (must be in 1..{n})",
                h.name,
                h.buckets
            );
        }
        rows[h.index] = h.buckets;
    }
    Ok(rows)
}

/// The fields `cfg` hashes, in field order, for a data set with these field names and
/// cardinalities (vocabulary sizes, the out-of-vocabulary row included). Errors name the key.
pub fn resolve(
    cfg: &HashConfig,
    names: &[String],
    cardinalities: &[usize],
) -> Result<Vec<HashedField>> {
    if names.len() != cardinalities.len() {
        bail!(
            "{} field names for {} categorical fields",
            names.len(),
            cardinalities.len()
        );
    }
    let mut indices: Vec<usize> = match (cfg.largest, &cfg.fields) {
        (Some(m), None) => {
            if m == 0 || m > cardinalities.len() {
                bail!(
                    "embedding.hash.largest: the data has {} categorical fields (got {m})",
                    cardinalities.len()
                );
            }
            let mut order: Vec<usize> = (0..cardinalities.len()).collect();
            // largest first; ties go to the earlier field, so the choice is deterministic
            order.sort_by_key(|&f| (std::cmp::Reverse(cardinalities[f]), f));
            order.truncate(m);
            order
        }
        (None, Some(fields)) => {
            let mut out = Vec::with_capacity(fields.len());
            for name in fields {
                let Some(f) = names.iter().position(|n| n == name) else {
                    bail!(
                        "embedding.hash.fields: no categorical field `{name}` in the data (its \
                         fields: {})",
                        names.join(", ")
                    );
                };
                if out.contains(&f) {
                    bail!("embedding.hash.fields: `{name}` is listed twice");
                }
                out.push(f);
            }
            out
        }
        _ => bail!("embedding.hash: give exactly one of `largest` and `fields`"),
    };
    indices.sort_unstable();
    indices
        .into_iter()
        .map(|f| {
            let n = cardinalities[f];
            let (key, buckets) = match (cfg.fraction, cfg.buckets) {
                (Some(p), None) => ("fraction", (n as f64 * p).ceil() as usize),
                (None, Some(b)) => ("buckets", b),
                _ => bail!("embedding.hash: give exactly one of `fraction` and `buckets`"),
            };
            if buckets == 0 || buckets >= n {
                bail!(
                    "embedding.hash.{key}: {buckets} buckets for field {} with {n} categories: \
                     hashing would not shrink its table (buckets must be at least 1 and below {n})",
                    names[f]
                );
            }
            Ok(HashedField {
                index: f,
                name: names[f].clone(),
                buckets,
            })
        })
        .collect()
}
