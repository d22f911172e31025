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
    /// The first `bits` bits (at most 24) as an index.
    fn top(self, bits: u8) -> usize;
}

macro_rules! impl_key {
    ($t:ty, $width:expr) => {
        impl Key for $t {
            const WIDTH: u8 = $width;
            fn network(self, bits: u8) -> Self {
                if bits == 0 {
                    0
                } else {
                    self & (<$t>::MAX << ($width - u32::from(bits)))
                }
            }
            fn broadcast(self, bits: u8) -> Self {
                if bits == 0 {
                    <$t>::MAX
                } else {
                    self | !(<$t>::MAX << ($width - u32::from(bits)))
                }
            }
            fn top(self, bits: u8) -> usize {
                if bits == 0 {
                    0
                } else {
                    usize::try_from(self >> ($width - u32::from(bits))).unwrap_or(0)
                }
            }
        }
    };
}
impl_key!(u32, 32);
impl_key!(u64, 64);
impl_key!(u128, 128);

/// Keys with their value ids, sorted by key then id, so that an exclusion (id 0) comes first
/// among the entries of its key. A key may have several values (rbldnsd answers all of them).
///
/// Big maps also keep where each run of keys with the same leading bits starts, so that a
/// lookup binary-searches a run of about 16 keys instead of the whole array: two or three
/// cache misses instead of twenty, for a quarter byte per entry.
#[derive(Debug)]
pub(crate) struct SortedMap<K> {
    keys: KeySet<K>,
    values: Box<[ValueId]>,
}

/// Sorted keys with the bucket table that narrows a search to keys sharing leading bits.
#[derive(Debug)]
pub(crate) struct KeySet<K> {
    keys: Box<[K]>,
    /// `starts[b]` is the first index whose key's leading `bucket_bits` bits are `b`.
    starts: Box<[u32]>,
    bucket_bits: u8,
}

/// Maps smaller than this are searched whole; the bucket table would not pay for itself.
const BUCKETED_FROM: usize = 4096;

impl<K: Key> Default for SortedMap<K> {
    fn default() -> Self {
        SortedMap {
            keys: KeySet::new(Box::default()),
            values: Box::default(),
        }
    }
}

impl<K: Key> KeySet<K> {
    /// Indexes keys that are already sorted.
    pub(crate) fn new(keys: Box<[K]>) -> KeySet<K> {
        let (starts, bucket_bits) = buckets(&keys);
        KeySet {
            keys,
            starts,
            bucket_bits,
        }
    }

    /// Sorts and deduplicates `keys` (in parallel), then indexes them.
    pub(crate) fn build(mut keys: Vec<K>) -> KeySet<K> {
        keys.par_sort_unstable();
        keys.dedup();
        KeySet::new(keys.into_boxed_slice())
    }

    /// The index range of keys sharing `key`'s leading bits (the whole array if unbucketed).
    fn bucket(&self, key: K) -> (usize, usize) {
        if self.bucket_bits == 0 {
            return (0, self.keys.len());
        }
        let b = key.top(self.bucket_bits);
        let start = self.starts.get(b).map_or(self.keys.len(), |&s| s as usize);
        let end = self
            .starts
            .get(b + 1)
            .map_or(self.keys.len(), |&s| s as usize);
        (start, end)
    }

    /// The first index whose key is not less than `key`.
    pub(crate) fn lower_bound(&self, key: K) -> usize {
        let (start, end) = self.bucket(key);
        start + self.keys[start..end].partition_point(|k| *k < key)
    }

    /// The first index whose key is greater than `key`.
    pub(crate) fn upper_bound(&self, key: K) -> usize {
        let (start, end) = self.bucket(key);
        start + self.keys[start..end].partition_point(|k| *k <= key)
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: K) -> bool {
        self.keys.get(self.lower_bound(key)) == Some(&key)
    }

    /// Whether a key lies in `first..=last`.
    pub(crate) fn any_in(&self, first: K, last: K) -> bool {
        self.upper_bound(last) > self.lower_bound(first)
    }

    /// The number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.keys.len() * std::mem::size_of::<K>() + self.starts.len() * 4
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
        let keys: Box<[K]> = pairs.iter().map(|(k, _)| *k).collect();
        let values = pairs.iter().map(|(_, v)| *v).collect();
        SortedMap {
            keys: KeySet::new(keys),
            values,
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The value ids of `key`, an exclusion first; empty if the key is absent.
    pub(crate) fn find(&self, key: K) -> &[ValueId] {
        let start = self.keys.lower_bound(key);
        let end = start
            + self.keys.keys[start..]
                .iter()
                .take_while(|k| **k == key)
                .count();
        &self.values[start..end]
    }

    /// Whether some key in `first..=last` has a listing (not only exclusions).
    pub(crate) fn lists_any_in(&self, first: K, last: K) -> bool {
        let start = self.keys.lower_bound(first);
        let end = self.keys.upper_bound(last).max(start);
        self.values[start..end].iter().any(|&v| v != EXCLUDED)
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes() + self.values.len() * 4
    }
}

/// The bucket table of sorted `keys`: about 16 keys per bucket, none for small maps.
fn buckets<K: Key>(keys: &[K]) -> (Box<[u32]>, u8) {
    if keys.len() < BUCKETED_FROM {
        return (Box::default(), 0);
    }
    let bits = u8::try_from(keys.len().ilog2().saturating_sub(4))
        .unwrap_or(20)
        .min(20)
        .min(K::WIDTH);
    let count = 1usize << bits;
    let mut starts = Vec::with_capacity(count + 1);
    let mut i = 0;
    for b in 0..count {
        while i < keys.len() && keys[i].top(bits) < b {
            i += 1;
        }
        starts.push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    starts.push(u32::try_from(keys.len()).unwrap_or(u32::MAX));
    (starts.into(), bits)
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
        let mut by_length: Vec<Vec<(K, u64, ValueId)>> =
            vec![Vec::new(); usize::from(K::WIDTH) + 1];
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
        if self
            .longest_match_upto(network, bits)
            .is_some_and(|v| v != EXCLUDED)
        {
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
    fn bucketed_maps_find_what_unbucketed_ones_do() {
        let pairs: Vec<(u32, ValueId)> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761), 1 + i % 3))
            .collect();
        let map = SortedMap::build(pairs.clone());
        assert!(map.keys.bucket_bits > 0);
        for (key, value) in pairs.iter().step_by(7) {
            assert_eq!(map.find(*key), &[*value]);
            assert!(
                map.find(key.wrapping_add(1)).is_empty()
                    || map.find(key.wrapping_add(1)).len() == 1
            );
        }
        assert!(map.lists_any_in(0, u32::MAX));
        let (first, last) = (pairs[5].0, pairs[5].0);
        assert!(map.lists_any_in(first, last));
        assert!(
            !map.lists_any_in(first.wrapping_add(1), first.wrapping_add(1))
                || map.find(first.wrapping_add(1)).len() == 1
        );
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
