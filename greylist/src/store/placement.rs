//! Which shard holds a key: rendezvous (highest random weight) hashing over the shards' names.
//!
//! Each shard scores each key, and the highest score wins. Adding a shard moves only the keys it
//! now wins, about 1/(N+1) of them, and moves them only to itself; removing one moves only its
//! own keys. Scores come from the shard's configured name, not its position, so reordering the
//! configuration moves nothing. The hash is written out here (FNV-1a with a SplitMix64 finish),
//! because std's hasher may change between Rust releases and every node must agree forever.

/// A stable 64-bit hash of bytes.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    mix(fnv)
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The placement of keys on named shards.
#[derive(Debug, Clone)]
pub struct Placement {
    seeds: Vec<u64>,
}

impl Placement {
    /// A placement over shards with these names (distinct, in configuration order).
    pub fn new(shard_names: &[String]) -> Placement {
        let seeds = shard_names
            .iter()
            .map(|name| stable_hash(name.as_bytes()))
            .collect();
        Placement { seeds }
    }

    /// The index of the shard that holds `key`; 0 when there is one shard.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let key_hash = stable_hash(key);
        let mut best = (0, 0);
        for (index, seed) in self.seeds.iter().enumerate() {
            let score = mix(key_hash ^ seed);
            if index == 0 || score > best.1 {
                best = (index, score);
            }
        }
        best.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shard-{i}")).collect()
    }

    fn keys() -> Vec<Vec<u8>> {
        (0..20_000)
            .map(|i| format!("192.0.2.0/24\0s{i}@example.com\0r@example.net").into_bytes())
            .collect()
    }

    #[test]
    fn hash_and_placement_are_pinned() {
        // Fixed values: a change here would move every key of every running cluster.
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash(b"moat"), 0x40ce_45ea_1526_effa);
        let placement = Placement::new(&names(3));
        assert_eq!(placement.shard_of(b"192.0.2.0/24\0a@b\0c@d"), 2);
        let baseline = b"192.0.2.0/24\0alice@sender.example\0bob@rcpt.example";
        assert_eq!(placement.shard_of(baseline), 1);
    }

    #[test]
    fn keys_spread_evenly_over_shards() {
        let placement = Placement::new(&names(3));
        let mut counts = [0usize; 3];
        for key in keys() {
            counts[placement.shard_of(&key)] += 1;
        }
        for count in counts {
            assert!((6_000..7_400).contains(&count), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_its_share_and_only_to_it() {
        let before = Placement::new(&names(3));
        let after = Placement::new(&names(4));
        let keys = keys();
        let mut moved = 0;
        for key in &keys {
            let (old, new) = (before.shard_of(key), after.shard_of(key));
            if old != new {
                assert_eq!(new, 3, "a key moved between old shards");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.22..0.28).contains(&share), "moved {share} of the keys");
    }

    #[test]
    fn shard_order_in_the_configuration_does_not_matter() {
        let forward = names(3);
        let mut reversed = forward.clone();
        reversed.reverse();
        let (a, b) = (Placement::new(&forward), Placement::new(&reversed));
        for key in keys().iter().take(1_000) {
            assert_eq!(forward[a.shard_of(key)], reversed[b.shard_of(key)]);
        }
    }

    #[test]
    fn one_shard_holds_everything() {
        let placement = Placement::new(&names(1));
        assert!(keys().iter().all(|key| placement.shard_of(key) == 0));
    }
}
