//! Per-field vocabularies built from training-split value counts. Values are keyed by the 64-bit
//! hash of their bytes, so memory grows with the number of distinct values, never with the text.
use crate::data::hash::{hash_bytes, HashKeyMap};

/// Training-split occurrence counts, per field.
pub(crate) struct ValueCounts {
    maps: Vec<HashKeyMap<u32>>,
}

impl ValueCounts {
    pub(crate) fn new(fields: usize) -> ValueCounts {
        ValueCounts {
            maps: (0..fields).map(|_| HashKeyMap::default()).collect(),
        }
    }

    pub(crate) fn add(&mut self, cats: &[u64]) {
        for (map, &h) in self.maps.iter_mut().zip(cats) {
            let c = map.entry(h).or_insert(0);
            *c = c.saturating_add(1);
        }
    }

    /// Index 0 of every field is out-of-vocabulary; values seen at least `min_count` times get
    /// 1, 2, ... in order of decreasing count (ties by hash, so the result is deterministic).
    pub(crate) fn into_vocab(self, min_count: u32) -> Vocab {
        let min_count = min_count.max(1);
        let mut maps = Vec::with_capacity(self.maps.len());
        let mut freq = Vec::with_capacity(self.maps.len());
        for mut map in self.maps {
            let mut kept: Vec<(u32, u64)> = Vec::new();
            let mut oov = 0u32;
            for (&h, &c) in &map {
                if c >= min_count {
                    kept.push((c, h));
                } else {
                    oov = oov.saturating_add(c);
                }
            }
            kept.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            map.retain(|_, c| *c >= min_count);
            let mut counts = Vec::with_capacity(kept.len() + 1);
            counts.push(oov);
            for (i, &(c, h)) in kept.iter().enumerate() {
                map.insert(h, i as u32 + 1);
                counts.push(c);
            }
            map.shrink_to_fit();
            maps.push(map);
            freq.push(counts);
        }
        Vocab { maps, freq }
    }
}

pub(crate) struct Vocab {
    maps: Vec<HashKeyMap<u32>>,
    /// Per field: training count of each index (index 0 = rows mapped to OOV).
    pub freq: Vec<Vec<u32>>,
}

impl Vocab {
    pub(crate) fn cardinalities(&self) -> Vec<usize> {
        self.freq.iter().map(Vec::len).collect()
    }

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
        Vocab {
            maps,
            freq: values.iter().map(|f| vec![0; f.len()]).collect(),
        }
    }
}

/// The raw value of every vocabulary index, collected while `prepare` writes the cache: a value
/// is copied the first time its index is written, so memory follows the vocabulary, not the file.
pub(crate) struct ValueCollector {
    values: Vec<Vec<Option<Vec<u8>>>>,
    missing: usize,
}

impl ValueCollector {
    pub(crate) fn new(cardinalities: &[usize]) -> ValueCollector {
        ValueCollector {
            values: cardinalities.iter().map(|&n| vec![None; n]).collect(),
            missing: cardinalities.iter().map(|&n| n.saturating_sub(1)).sum(),
        }
    }

    /// Records `value` of field `field` at `index` unless it is known (or OOV). `value` is only
    /// called when needed.
    pub(crate) fn offer<'a>(
        &mut self,
        field: usize,
        index: u32,
        value: impl FnOnce() -> std::borrow::Cow<'a, [u8]>,
    ) {
        if self.missing == 0 || index == 0 {
            return;
        }
        let slot = &mut self.values[field][index as usize];
        if slot.is_none() {
            *slot = Some(value().into_owned());
            self.missing -= 1;
        }
    }

    /// Indices of the training vocabulary never seen (none after a pass over the same rows).
    pub(crate) fn missing(&self) -> usize {
        self.missing
    }

    pub(crate) fn into_values(self) -> Vec<Vec<Option<Vec<u8>>>> {
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_count_and_order() {
        let mut counts = ValueCounts::new(1);
        for h in [5u64, 5, 5, 7, 7, 9] {
            counts.add(&[h]);
        }
        let vocab = counts.into_vocab(2);
        assert_eq!(vocab.freq, vec![vec![1, 3, 2]]);
        let mut out = [0u32];
        for (h, want) in [(5u64, 1u32), (7, 2), (9, 0), (11, 0)] {
            vocab.map_row(&[h], &mut out);
            assert_eq!(out[0], want);
        }
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
        let mut c = ValueCollector::new(&[3]);
        c.offer(0, 2, || std::borrow::Cow::Borrowed(&b"x"[..]));
        c.offer(0, 2, || panic!("already known: not asked again"));
        c.offer(0, 0, || panic!("OOV has no value"));
        assert_eq!(c.missing(), 1);
    }
}
