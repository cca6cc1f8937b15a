//! Per-field vocabularies built from training-split value counts. Values are keyed by the 64-bit
//! hash of their bytes, so memory grows with the number of distinct values, never with the
//! number of rows.
use crate::data::hash::{hash_bytes, HashKeyMap};
use crate::data::id_table::IdTable;

/// Every distinct value of every field, in order of first appearance, with its training count
/// and its bytes: what `prepare` learns in its one pass over the text. Values are keyed by hash;
/// the first-seen ids written to the cache are mapped to the final indices afterwards
/// (`into_vocab`), so the text is parsed once.
pub(crate) struct ValueIds {
    fields: Vec<FieldValues>,
}

#[derive(Default)]
struct FieldValues {
    /// Hash of a value's bytes → first-seen id and training occurrences.
    ids: IdTable,
    /// The bytes of id `i` (its first occurrence) are `bytes[ends[i - 1]..ends[i]]`.
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl FieldValues {
    fn value(&self, id: usize) -> &[u8] {
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.bytes[start..self.ends[id]]
    }
}

/// What the values' counts make of the first-seen ids.
pub(crate) struct BuiltVocab {
    /// Per field: the final index of each first-seen id (0 = OOV).
    pub remap: Vec<Vec<u32>>,
    /// Per field: training count of each index (index 0 = rows mapped to OOV).
    pub freq: Vec<Vec<u32>>,
    /// Per field: the raw value of each index (index 0, OOV, is `None`).
    pub values: Vec<Vec<Option<Vec<u8>>>>,
}

impl ValueIds {
    pub(crate) fn new(fields: usize) -> ValueIds {
        ValueIds {
            fields: (0..fields).map(|_| FieldValues::default()).collect(),
        }
    }

    /// The first-seen id of the value of field `field` whose hash is `hash`, and whether it is
    /// new (its bytes are then due: `set_value`); a training occurrence is counted.
    #[inline]
    pub(crate) fn id(&mut self, field: usize, hash: u64, train: bool) -> (u32, bool) {
        self.fields[field].ids.id(hash, u32::from(train))
    }

    /// Hints that `hash` of `field` is looked up soon (see `IdTable::prefetch`).
    #[inline]
    pub(crate) fn prefetch(&self, field: usize, hash: u64) {
        self.fields[field].ids.prefetch(hash);
    }

    /// Records the bytes of a new id (in order of the ids).
    pub(crate) fn set_value(&mut self, field: usize, id: u32, value: &[u8]) {
        let f = &mut self.fields[field];
        debug_assert_eq!(
            id as usize,
            f.ends.len(),
            "values are set in order of their ids"
        );
        f.bytes.extend_from_slice(value);
        f.ends.push(f.bytes.len());
    }

    /// The most ids of any field (ids are `u32`s).
    pub(crate) fn max_ids(&self) -> usize {
        self.fields.iter().map(|f| f.ids.len()).max().unwrap_or(0)
    }

    /// Index 0 of every field is out-of-vocabulary; values seen at least `min_count` times get
    /// 1, 2, ... in order of decreasing count (ties by hash, so the result is deterministic).
    pub(crate) fn into_vocab(self, min_count: u32) -> BuiltVocab {
        let min_count = min_count.max(1);
        let mut built = BuiltVocab {
            remap: Vec::with_capacity(self.fields.len()),
            freq: Vec::with_capacity(self.fields.len()),
            values: Vec::with_capacity(self.fields.len()),
        };
        for mut f in self.fields {
            let mut kept: Vec<(u32, u64, u32)> = Vec::new();
            let mut oov = 0u32;
            for (h, id, c) in f.ids.entries() {
                if c >= min_count {
                    kept.push((c, h, id));
                } else {
                    oov = oov.saturating_add(c);
                }
            }
            let ids = f.ids.len();
            f.ids = IdTable::default();
            kept.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut remap = vec![0u32; ids];
            let mut counts = Vec::with_capacity(kept.len() + 1);
            let mut values = Vec::with_capacity(kept.len() + 1);
            counts.push(oov);
            values.push(None);
            for (i, &(c, _, id)) in kept.iter().enumerate() {
                remap[id as usize] = i as u32 + 1;
                counts.push(c);
                values.push(Some(f.value(id as usize).to_vec()));
            }
            built.remap.push(remap);
            built.freq.push(counts);
            built.values.push(values);
        }
        built
    }
}

/// The lookup from a value's hash to its index, per field (serving: `mlet predict`).
pub(crate) struct Vocab {
    maps: Vec<HashKeyMap<u32>>,
}

impl Vocab {
    /// Field-local indices of a row's values; unknown values map to 0.
    pub(crate) fn map_row(&self, cats: &[u64], out: &mut [u32]) {
        for ((o, map), h) in out.iter_mut().zip(&self.maps).zip(cats) {
            *o = map.get(h).copied().unwrap_or(0);
        }
    }
}

impl Vocab {
    /// The vocabulary whose index `i` of field `f` is `values[f][i]` (index 0, OOV, is `None`).
    pub(crate) fn from_values(values: &[Vec<Option<Vec<u8>>>]) -> Vocab {
        let maps = values
            .iter()
            .map(|field| {
                let mut map = HashKeyMap::default();
                for (i, v) in field.iter().enumerate().skip(1) {
                    if let Some(v) = v {
                        map.insert(hash_bytes(v), i as u32);
                    }
                }
                map
            })
            .collect();
        Vocab { maps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_count_order_and_values() {
        let mut ids = ValueIds::new(1);
        // "x" appears first but only outside training; "b" and "a" tie at 2 (order by hash)
        let rows: [(&[u8], bool); 8] = [
            (b"x", false),
            (b"c", true),
            (b"b", true),
            (b"a", true),
            (b"c", true),
            (b"b", true),
            (b"a", true),
            (b"c", true),
        ];
        let mut first_seen = Vec::new();
        for (v, train) in rows {
            let (id, new) = ids.id(0, hash_bytes(v), train);
            if new {
                ids.set_value(0, id, v);
                first_seen.push(v);
            }
        }
        assert_eq!(first_seen, [b"x", b"c", b"b", b"a"]);
        assert_eq!(ids.max_ids(), 4);
        let built = ids.into_vocab(2);
        let (a, b) = if hash_bytes(b"a") < hash_bytes(b"b") {
            (2, 3)
        } else {
            (3, 2)
        };
        assert_eq!(built.freq, vec![vec![0, 3, 2, 2]]);
        assert_eq!(built.remap, vec![vec![0, 1, b, a]]);
        assert_eq!(built.values[0][1].as_deref(), Some(&b"c"[..]));
        assert_eq!(built.values[0][a as usize].as_deref(), Some(&b"a"[..]));
        assert_eq!(built.values[0][0], None);
        // min_count 3 leaves "c" alone; "a" and "b" count as OOV
        let mut ids = ValueIds::new(1);
        for (v, train) in rows {
            let (id, new) = ids.id(0, hash_bytes(v), train);
            if new {
                ids.set_value(0, id, v);
            }
        }
        assert_eq!(ids.into_vocab(3).freq, vec![vec![4, 3]]);
    }

    #[test]
    fn from_values_maps_back_and_unknown_is_oov() {
        let values = vec![vec![None, Some(b"a".to_vec()), Some(vec![0xff, 0x00])]];
        let vocab = Vocab::from_values(&values);
        let mut out = [9u32];
        for (v, want) in [(&b"a"[..], 1u32), (&[0xff, 0x00][..], 2), (&b"zz"[..], 0)] {
            vocab.map_row(&[hash_bytes(v)], &mut out);
            assert_eq!(out[0], want, "{v:?}");
        }
    }
}
