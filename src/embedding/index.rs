//! Host-side preparation of a batch's lookup: field-local indices → global rows, deduplicated.
//! Hashed fields (`embedding.hash`) have their ids reduced modulo their table size here, so the
//! embedding tables and the linear part, which share the index, both see the hashed rows.
use anyhow::{bail, Result};
use tch::{Device, Tensor};

/// The distinct global rows a batch touches and, per (example, field), which of them it uses.
#[derive(Debug)]
pub struct LookupIndex {
    pub batch: i64,
    /// `[U]` sorted distinct global row ids.
    pub unique: Tensor,
    /// `[B·F]` positions into `unique`.
    pub inverse: Tensor,
    /// How many of `unique` fall in each table (they are sorted, so each table's rows are one
    /// run of `unique`): MLET projects each run with its table's projection.
    pub per_table: Vec<i64>,
}

impl LookupIndex {
    /// The same index (its tensors shared): a table of the same shape reads the same rows.
    pub fn shallow_clone(&self) -> LookupIndex {
        LookupIndex {
            batch: self.batch,
            unique: self.unique.shallow_clone(),
            inverse: self.inverse.shallow_clone(),
            per_table: self.per_table.clone(),
        }
    }

    /// `local` is row-major `[batch, F]` with field-local indices; checked against the
    /// cardinalities so that a corrupt cache is an error, not an out-of-bounds read in libtorch.
    pub fn new(
        local: &[i64],
        offsets: &[i64],
        cardinalities: &[i64],
        device: Device,
    ) -> Result<Self> {
        Self::hashed(local, offsets, cardinalities, cardinalities, device)
    }

    /// As `new`, for tables of `rows[f]` rows over vocabularies of `cardinalities[f]` ids: id
    /// `i` of field `f` is row `i % rows[f]` of its table (the identity where they are equal).
    pub fn hashed(
        local: &[i64],
        offsets: &[i64],
        cardinalities: &[i64],
        rows: &[i64],
        device: Device,
    ) -> Result<Self> {
        let fields = offsets.len();
        if cardinalities.len() != fields || rows.len() != fields {
            bail!(
                "{fields} offsets, {} cardinalities and {} table sizes",
                cardinalities.len(),
                rows.len()
            );
        }
        if fields == 0 || !local.len().is_multiple_of(fields) {
            bail!(
                "{} indices do not form rows of {fields} fields",
                local.len()
            );
        }
        let mut global: Vec<(i64, u32)> = Vec::with_capacity(local.len());
        for (pos, &i) in local.iter().enumerate() {
            let f = pos % fields;
            if i < 0 || i >= cardinalities[f] {
                bail!(
                    "index {i} of field {f} is outside its vocabulary of {}",
                    cardinalities[f]
                );
            }
            global.push((super::hash::bucket(i, rows[f]) + offsets[f], pos as u32));
        }
        global.sort_unstable();
        let mut unique: Vec<i64> = Vec::new();
        let mut inverse = vec![0i64; local.len()];
        for (row, pos) in global {
            if unique.last() != Some(&row) {
                unique.push(row);
            }
            inverse[pos as usize] = unique.len() as i64 - 1;
        }
        let ends = offsets.iter().zip(rows).map(|(&off, &n)| off + n);
        let per_table = ends
            .scan(0usize, |start, end| {
                let stop = *start + unique[*start..].partition_point(|&r| r < end);
                let count = (stop - *start) as i64;
                *start = stop;
                Some(count)
            })
            .collect();
        Ok(LookupIndex {
            batch: (local.len() / fields) as i64,
            per_table,
            unique: Tensor::from_slice(&unique).to_device(device),
            inverse: Tensor::from_slice(&inverse).to_device(device),
        })
    }
}
