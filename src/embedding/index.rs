//! Host-side preparation of a batch's lookup: field-local indices → global rows, deduplicated.
//! Hashed fields (`embedding.hash`) have their ids reduced modulo their table size here, so the
//! embedding tables and the linear part, which share the index, both see the hashed rows.
use anyhow::{bail, Result};
use tch::{Device, Tensor};

/// Tables of at most this many rows (or four times the batch) are deduplicated by marking the
/// rows used rather than by sorting the batch's ids: a pass over the table's rows costs less
/// than the sort.
const DENSE_TABLE_ROWS: usize = 1024;

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
        for (pos, &i) in local.iter().enumerate() {
            let f = pos % fields;
            if i < 0 || i >= cardinalities[f] {
                bail!(
                    "index {i} of field {f} is outside its vocabulary of {}",
                    cardinalities[f]
                );
            }
        }
        // table by table: tables occupy consecutive row ranges in table order, so their distinct
        // rows, each sorted, are the batch's distinct rows sorted
        let batch = local.len() / fields;
        let mut unique: Vec<i64> = Vec::with_capacity(local.len());
        let mut inverse = vec![0i64; local.len()];
        let mut per_table = Vec::with_capacity(fields);
        // a small table's rows: unused, used but not numbered yet, or their place in `unique`
        const UNUSED: u32 = u32::MAX;
        const USED: u32 = u32::MAX - 1;
        let (mut table_rows, mut seen, mut keyed) = (Vec::new(), Vec::new(), Vec::new());
        for f in 0..fields {
            let first = unique.len();
            let n = rows[f];
            table_rows.clear();
            table_rows.extend((0..batch).map(|e| super::hash::bucket(local[e * fields + f], n)));
            if n as usize <= DENSE_TABLE_ROWS.max(4 * batch) {
                // a small table: mark the rows used, number them in row order, no sort
                seen.clear();
                seen.resize(n as usize, UNUSED);
                for &r in &table_rows {
                    seen[r as usize] = USED;
                }
                for (r, slot) in seen.iter_mut().enumerate() {
                    if *slot == USED {
                        *slot = unique.len() as u32;
                        unique.push(offsets[f] + r as i64);
                    }
                }
                for (e, &r) in table_rows.iter().enumerate() {
                    inverse[e * fields + f] = seen[r as usize] as i64;
                }
            } else {
                keyed.clear();
                keyed.extend(table_rows.iter().enumerate().map(|(e, &r)| (r, e as u32)));
                keyed.sort_unstable();
                for &(r, e) in &keyed {
                    // (another table's rows lie outside this one's range: no row repeats across)
                    if unique.last() != Some(&(offsets[f] + r)) {
                        unique.push(offsets[f] + r);
                    }
                    inverse[e as usize * fields + f] = unique.len() as i64 - 1;
                }
            }
            per_table.push((unique.len() - first) as i64);
        }
        Ok(LookupIndex {
            batch: batch as i64,
            per_table,
            unique: Tensor::from_slice(&unique).to_device(device),
            inverse: Tensor::from_slice(&inverse).to_device(device),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index against its definition: the sorted distinct global rows, each example's position
    /// among them, and how many fall in each table; for tables deduplicated by marking (small)
    /// and by sorting (large), hashed or not, at several batch sizes.
    #[test]
    fn index_is_its_definition() {
        let cardinalities = [3i64, 5000, 1, 2000, 40_000];
        // the last two hashed into fewer rows
        let rows = [3i64, 5000, 1, 700, 9000];
        let offsets: Vec<i64> = rows
            .iter()
            .scan(0, |acc, &n| {
                *acc += n;
                Some(*acc - n)
            })
            .collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for batch in [1usize, 7, 300] {
            let local: Vec<i64> = (0..batch)
                .flat_map(|_| cardinalities.map(|n| n))
                .map(|n| {
                    // skewed: most ids among the first few, as in click logs
                    let id = (next() % n as u64) as i64;
                    if next() % 2 == 0 {
                        id % 4
                    } else {
                        id
                    }
                })
                .collect();
            let index =
                LookupIndex::hashed(&local, &offsets, &cardinalities, &rows, Device::Cpu).unwrap();
            let global: Vec<i64> = local
                .iter()
                .enumerate()
                .map(|(pos, &i)| i % rows[pos % 5] + offsets[pos % 5])
                .collect();
            let mut want_unique = global.clone();
            want_unique.sort_unstable();
            want_unique.dedup();
            let unique = Vec::<i64>::try_from(&index.unique).unwrap();
            assert_eq!(unique, want_unique, "batch {batch}");
            let inverse = Vec::<i64>::try_from(&index.inverse).unwrap();
            for (pos, &g) in global.iter().enumerate() {
                assert_eq!(
                    unique[inverse[pos] as usize], g,
                    "batch {batch}, entry {pos}"
                );
            }
            let want_per_table: Vec<i64> = (0..5)
                .map(|t| {
                    let range = offsets[t]..offsets[t] + rows[t];
                    unique.iter().filter(|r| range.contains(r)).count() as i64
                })
                .collect();
            assert_eq!(index.per_table, want_per_table, "batch {batch}");
            assert_eq!(index.batch, batch as i64);
        }
        let err = LookupIndex::new(&[0, 5], &[0, 3], &[3, 4], Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("index 5 of field 1"), "{err}");
    }
}
