//! Copying rows of a split into a reusable host-side batch, in the shapes the models consume.
use crate::data::cache::SplitData;

/// A batch of rows, row-major: `dense` is [size, num_dense], `cat` [size, num_fields] (field-local
/// indices as i64, as embedding lookups want them), `label` [size].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub dense: Vec<f32>,
    pub cat: Vec<i64>,
    pub label: Vec<f32>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.size = 0;
        self.dense.clear();
        self.cat.clear();
        self.label.clear();
    }
}

impl SplitData<'_> {
    /// Replaces `out`'s contents with the given rows (in that order), keeping its allocation.
    /// Panics if a row index is not below `len` (a caller bug, not bad input).
    pub fn gather(&self, rows: &[usize], out: &mut Batch) {
        out.clear();
        out.dense.reserve(rows.len() * self.num_dense);
        out.cat.reserve(rows.len() * self.num_fields);
        out.label.reserve(rows.len());
        for &r in rows {
            assert!(
                r < self.len,
                "row {r} out of range for a split of {} rows",
                self.len
            );
            out.dense.extend_from_slice(self.row_dense(r));
            out.cat
                .extend(self.row_cat(r).iter().map(|&c| i64::from(c)));
            out.label.push(self.label[r]);
        }
        out.size = rows.len();
    }

    /// `gather` of the contiguous rows `start..end` (evaluation order), without an index list.
    pub fn gather_range(&self, start: usize, end: usize, out: &mut Batch) {
        assert!(
            start <= end && end <= self.len,
            "rows {start}..{end} out of range for a split of {} rows",
            self.len
        );
        out.clear();
        out.dense
            .extend_from_slice(&self.dense[start * self.num_dense..end * self.num_dense]);
        out.cat.extend(
            self.cat[start * self.num_fields..end * self.num_fields]
                .iter()
                .map(|&c| i64::from(c)),
        );
        out.label.extend_from_slice(&self.label[start..end]);
        out.size = end - start;
    }
}
