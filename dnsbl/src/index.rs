//! The in-memory lookup index: sorted arrays of keys with value ids, built in parallel and
//! searched by binary search.
//!
//! Sorted arrays, not trees or hash maps, because they cost only the key and a 4-byte value id
//! per entry (an ip4set entry takes 8 bytes, where rbldnsd's takes 16), they are built by one
//! parallel sort, and a lookup in ten million entries is about 24 comparisons in memory that
//! is read only. An index is never changed after it is built; a reload builds a new one.

use rayon::slice::ParallelSliceMut;

use crate::dataset::value::{EXCLUDED, ValueId};

/// A key of an address index: an address (or the leading part of one) as an unsigned integer.
pub(crate) trait Key: Copy + Ord + Send + Sync + std::fmt::Debug {
    /// The width in bits.
    const WIDTH: u8;
    /// The key with all bits after the first `bits` cleared.
    fn network(self, bits: u8) -> Self;
    /// The key with all bits after the first `bits` set: the last address of the block.
    fn broadcast(self, bits: u8) -> Self;
}

macro_rules! impl_key {
    ($t:ty, $width:expr) => {
        impl Key for $t {
            const WIDTH: u8 = $width;
            fn network(self, bits: u8) -> Self {
                if bits == 0 { 0 } else { self & (<$t>::MAX << ($width - u32::from(bits))) }
            }
            fn broadcast(self, bits: u8) -> Self {
                if bits == 0 { <$t>::MAX } else { self | !(<$t>::MAX << ($width - u32::from(bits))) }
            }
        }
    };
}
impl_key!(u32, 32);
impl_key!(u64, 64);
impl_key!(u128, 128);

/// Keys with their value ids, sorted by key then id, so that an exclusion (id 0) comes first
/// among the entries of its key. A key may have several values (rbldnsd answers all of them).
#[derive(Debug)]
pub(crate) struct SortedMap<K> {
    keys: Box<[K]>,
    values: Box<[ValueId]>,
}

impl<K: Key> Default for SortedMap<K> {
    fn default() -> Self {
        SortedMap { keys: Box::default(), values: Box::default() }
    }
}

impl<K: Key> SortedMap<K> {
    /// Builds the map from unsorted pairs, dropping exact duplicates.
    pub(crate) fn build(mut pairs: Vec<(K, ValueId)>) -> SortedMap<K> {
        pairs.par_sort_unstable();
        pairs.dedup();
        Self::from_sorted(pairs)
    }

    /// Builds the map keeping only the first value given for each key (ip4trie and ip6trie
    /// semantics). `pairs` carry their order of appearance; `duplicate` is called with the
    /// order of each pair that lost.
    pub(crate) fn build_first_wins(
        mut pairs: Vec<(K, u64, ValueId)>,
        mut duplicate: impl FnMut(u64),
    ) -> SortedMap<K> {
        pairs.par_sort_unstable();
        let mut kept: Vec<(K, ValueId)> = Vec::with_capacity(pairs.len());
        for (key, order, value) in pairs {
            if kept.last().is_some_and(|(last, _)| *last == key) {
                duplicate(order);
                continue;
            }
            kept.push((key, value));
        }
        Self::from_sorted(kept)
    }

    fn from_sorted(pairs: Vec<(K, ValueId)>) -> SortedMap<K> {
        let keys = pairs.iter().map(|(k, _)| *k).collect();
        let values = pairs.iter().map(|(_, v)| *v).collect();
        SortedMap { keys, values }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The value ids of `key`, an exclusion first; empty if the key is absent.
    pub(crate) fn find(&self, key: K) -> &[ValueId] {
        let start = self.keys.partition_point(|k| *k < key);
        let end = start + self.keys[start..].partition_point(|k| *k == key);
        &self.values[start..end]
    }

    /// Whether some key in `first..=last` has a listing (not only exclusions).
    pub(crate) fn lists_any_in(&self, first: K, last: K) -> bool {
        let start = self.keys.partition_point(|k| *k < first);
        let end = self.keys.partition_point(|k| *k <= last);
        self.values[start..end].iter().any(|&v| v != EXCLUDED)
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.keys.len() * std::mem::size_of::<K>() + self.values.len() * 4
    }
}

/// Prefixes of several lengths with one value each, searched longest first: the longest
/// matching prefix decides (ip4trie and ip6trie).
#[derive(Debug)]
pub(crate) struct PrefixTable<K> {
    /// One map per prefix length present, longest first.
    levels: Vec<(u8, SortedMap<K>)>,
}

impl<K: Key> Default for PrefixTable<K> {
    fn default() -> Self {
        PrefixTable { levels: Vec::new() }
    }
}

impl<K: Key> PrefixTable<K> {
    /// Builds the table from `(network, length, order, value)`; the first value of a prefix
    /// wins and `duplicate` hears the order of each one that lost.
    pub(crate) fn build(
        entries: Vec<(K, u8, u64, ValueId)>,
        mut duplicate: impl FnMut(u64),
    ) -> PrefixTable<K> {
        let mut by_length: Vec<Vec<(K, u64, ValueId)>> = vec![Vec::new(); usize::from(K::WIDTH) + 1];
        for (key, bits, order, value) in entries {
            if let Some(level) = by_length.get_mut(usize::from(bits)) {
                level.push((key, order, value));
            }
        }
        let mut levels = Vec::new();
        for (bits, pairs) in by_length.into_iter().enumerate().rev() {
            if pairs.is_empty() {
                continue;
            }
            let bits = u8::try_from(bits).unwrap_or(K::WIDTH);
            levels.push((bits, SortedMap::build_first_wins(pairs, &mut duplicate)));
        }
        PrefixTable { levels }
    }

    /// The value of the longest prefix containing `addr`: a listing, [`EXCLUDED`], or `None`.
    pub(crate) fn longest_match(&self, addr: K) -> Option<ValueId> {
        self.longest_match_upto(addr, K::WIDTH)
    }

    fn longest_match_upto(&self, addr: K, max_bits: u8) -> Option<ValueId> {
        self.levels
            .iter()
            .filter(|(bits, _)| *bits <= max_bits)
            .find_map(|(bits, map)| map.find(addr.network(*bits)).first().copied())
    }

    /// Whether some address in the block `network/bits` is listed. The block's own longest
    /// match counts, and any listed longer prefix inside it. Exclusions nested inside a
    /// listed longer prefix are not subtracted: a block is taken as listed if any part of it
    /// was written as listed.
    pub(crate) fn lists_any_in(&self, network: K, bits: u8) -> bool {
        if self.longest_match_upto(network, bits).is_some_and(|v| v != EXCLUDED) {
            return true;
        }
        let last = network.broadcast(bits);
        self.levels
            .iter()
            .filter(|(level, _)| *level > bits)
            .any(|(level, map)| map.lists_any_in(network.network(*level), last.network(*level)))
    }

    /// The number of prefixes.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(|(_, m)| m.len()).sum()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.levels.iter().map(|(_, m)| m.heap_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_sort_before_listings_of_the_same_key() {
        let map = SortedMap::build(vec![(7u32, 3), (7, EXCLUDED), (5, 1), (7, 3)]);
        assert_eq!(map.find(7), &[EXCLUDED, 3]);
        assert_eq!(map.find(5), &[1]);
        assert!(map.find(6).is_empty());
        assert!(map.lists_any_in(6, 7));
        assert!(!map.lists_any_in(8, 9));
    }

    #[test]
    fn longest_prefix_wins_and_first_duplicate_wins() {
        let mut lost = Vec::new();
        let table = PrefixTable::build(
            vec![
                (0x0a00_0000u32, 8, 0, 2),
                (0x0a01_0000, 16, 1, 3),
                (0x0a01_0500, 24, 2, EXCLUDED),
                (0x0a01_0000, 16, 3, 4),
            ],
            |order| lost.push(order),
        );
        assert_eq!(lost, vec![3]);
        assert_eq!(table.longest_match(0x0a01_0203), Some(3));
        assert_eq!(table.longest_match(0x0a02_0001), Some(2));
        assert_eq!(table.longest_match(0x0a01_0501), Some(EXCLUDED));
        assert_eq!(table.longest_match(0x0b00_0000), None);
        assert!(table.lists_any_in(0x0a01_0000, 16));
        assert!(!table.lists_any_in(0x0a01_0500, 24));
    }
}
