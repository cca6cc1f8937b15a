//! The table `prepare` looks every categorical value up in: value hash → (first-seen id,
//! training count). Open addressing with linear probing over 16-byte slots that hold the key,
//! the id and the count together, at most half full: a lookup usually touches one cache line,
//! where a general hash map touches its control bytes, its slot and then a separate count.
//! The keys are already well-mixed hashes, so their low bits index the table.

/// An unused slot (ids stay far below it: `prepare` stops at 2^31 values per field).
const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    id: u32,
    count: u32,
}

const FREE: Slot = Slot {
    hash: 0,
    id: EMPTY,
    count: 0,
};

pub(crate) struct IdTable {
    slots: Vec<Slot>,
    len: usize,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable {
            slots: vec![FREE; 16],
            len: 0,
        }
    }
}

impl IdTable {
    /// Values in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The id of `hash`, a new one (`len()` before the call) if it is not in the table yet, and
    /// whether it is new; `count` is added to its count (saturating).
    #[inline]
    pub(crate) fn id(&mut self, hash: u64, count: u32) -> (u32, bool) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.id == EMPTY {
                break;
            }
            if slot.hash == hash {
                slot.count = slot.count.saturating_add(count);
                return (slot.id, false);
            }
            i = (i + 1) & mask;
        }
        let id = self.len as u32;
        self.slots[i] = Slot { hash, id, count };
        self.len += 1;
        if 2 * self.len > self.slots.len() {
            self.grow();
        }
        (id, true)
    }

    /// Asks the CPU to bring `hash`'s slot into cache: a lookup a few values later then finds
    /// it there instead of waiting for memory (the tables of large fields exceed the caches).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let slot = self.slots[hash as usize & (self.slots.len() - 1)..].as_ptr();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache (it cannot fault or change memory), the
        // address is in the table, and SSE is part of every x86_64 CPU.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(slot.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    fn grow(&mut self) {
        let doubled = vec![FREE; 2 * self.slots.len()];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.id != EMPTY) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].id != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Every (hash, id, count), in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.id != EMPTY)
            .map(|s| (s.hash, s.id, s.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The same ids and counts as a map, through growth and colliding low bits.
    #[test]
    fn agrees_with_a_map() {
        let mut table = IdTable::default();
        let mut map: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut x = 7u64;
        for step in 0..50_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // few distinct keys, many sharing their low bits, 0 among them
            let key = ((x >> 40) % 3_000) << 20;
            let count = (step % 3 == 0) as u32;
            let next = map.len() as u32;
            let want_new = !map.contains_key(&key);
            let e = map.entry(key).or_insert((next, 0));
            e.1 += count;
            assert_eq!(table.id(key, count), (e.0, want_new));
        }
        assert_eq!(table.len(), map.len());
        let mut got: Vec<(u64, u32, u32)> = table.entries().collect();
        got.sort_unstable();
        let mut want: Vec<(u64, u32, u32)> = map.iter().map(|(&k, &(i, c))| (k, i, c)).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        // counts saturate
        let mut t = IdTable::default();
        t.id(1, u32::MAX);
        t.id(1, 5);
        assert_eq!(t.entries().next(), Some((1, 0, u32::MAX)));
    }
}
