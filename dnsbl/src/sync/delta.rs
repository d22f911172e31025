//! rsync signatures and deltas (fast_rsync): the block size a subscriber signs its copy with,
//! the bounds a publisher holds a received signature to, and the rebuild of a new version,
//! checked against the length and SHA-256 the publisher announced.

use fast_rsync::{Signature, SignatureOptions};

use super::copy::checksum;
use super::error::SyncError;
use super::wire::Delta;

/// The smallest block a signature may use: below it the signature (12 bytes a block) grows
/// past a few percent of the file and costs more than the finer matching saves.
const MIN_BLOCK: u32 = 512;

/// The largest block: rsync's own ceiling (128 KiB) halved, so that one changed line in a
/// huge file costs at most 64 KiB of literal data.
const MAX_BLOCK: u32 = 64 << 10;

/// Bytes of each block's MD4 kept in a signature. Eight make a false match between different
/// blocks vanishingly rare; one would still be caught by the SHA-256 of the rebuilt file.
const HASH_LEN: u32 = 8;

/// fast_rsync's MD4 signature magic (librsync's `RS_MD4_SIG_MAGIC`), the only kind it diffs.
const MD4_MAGIC: u32 = 0x7273_0136;

/// The longest MD4 hash a signature can keep.
const MD4_LEN: u32 = 16;

/// The block size for a file of `len` bytes: its square root, as rsync chooses, which
/// balances the signature's size against the literal bytes a change costs, kept within
/// [`MIN_BLOCK`] and [`MAX_BLOCK`].
pub(crate) fn block_size(len: usize) -> u32 {
    let root = (len as u64).isqrt().next_multiple_of(8);
    u32::try_from(root)
        .unwrap_or(MAX_BLOCK)
        .clamp(MIN_BLOCK, MAX_BLOCK)
}

/// The serialized signature of `bytes` (of an empty file for a node with no copy yet: the
/// delta against it is the whole file).
pub(crate) fn signature(bytes: &[u8]) -> Vec<u8> {
    let options = SignatureOptions {
        block_size: block_size(bytes.len()),
        crypto_hash_size: HASH_LEN,
    };
    Signature::calculate(bytes, options).into_serialized()
}

/// The delta from the copy `signature` describes to `data`, or `None` when the signature is
/// not one this publisher accepts.
///
/// fast_rsync trusts a signature's header: a block size of 0 would loop forever and a huge
/// hash length would fail late, so the header is checked here before the signature is used.
pub(crate) fn diff(signature: Vec<u8>, data: &[u8]) -> Option<Vec<u8>> {
    let field = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = signature.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    };
    let magic = field(0)?;
    let block = field(4)?;
    let hash = field(8)?;
    if magic != MD4_MAGIC
        || !(MIN_BLOCK..=MAX_BLOCK).contains(&block)
        || !(1..=MD4_LEN).contains(&hash)
    {
        return None;
    }
    let signature = Signature::deserialize(signature).ok()?;
    let mut delta = Vec::new();
    fast_rsync::diff(&signature.index(), data, &mut delta).ok()?;
    Some(delta)
}

/// Applies `delta` to `base` and checks the result against the version announced.
///
/// # Errors
///
/// [`SyncError::BadDelta`] when the delta does not apply (it is cut, corrupt, or was made
/// against another copy), [`SyncError::ChecksumMismatch`] when the result is not the length or
/// SHA-256 announced.
pub(crate) fn rebuild(base: &[u8], delta: &Delta) -> Result<Vec<u8>, SyncError> {
    let mismatch = |detail| SyncError::ChecksumMismatch {
        dataset: delta.dataset.clone(),
        detail,
    };
    let len = usize::try_from(delta.version.len)
        .map_err(|_| mismatch("length announced is past this machine's memory"))?;

    let mut rebuilt = Vec::with_capacity(len.min(base.len().saturating_add(delta.delta.len())));
    fast_rsync::apply_limited(base, &delta.delta, &mut rebuilt, len).map_err(|error| {
        SyncError::BadDelta {
            dataset: delta.dataset.clone(),
            error,
        }
    })?;

    if rebuilt.len() != len {
        return Err(mismatch("length differs from the one announced"));
    }
    if checksum(&rebuilt) != delta.version.checksum {
        return Err(mismatch("SHA-256 differs from the one announced"));
    }
    Ok(rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::Version;

    fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range
            .map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
            .collect::<String>()
            .into_bytes()
    }

    fn delta_of(base: &[u8], new: &[u8]) -> Delta {
        Delta {
            dataset: "spam.txt".into(),
            version: Version {
                generation: 1,
                len: new.len() as u64,
                checksum: checksum(new),
            },
            delta: diff(signature(base), new).expect("a delta"),
        }
    }

    #[test]
    fn a_small_change_rebuilds_from_a_small_delta() {
        let base = lines(0..100_000);
        let mut new = base.clone();
        new.splice(500_000..500_000, b"192.0.2.1\n192.0.2.2\n".iter().copied());

        let delta = delta_of(&base, &new);

        assert!(delta.delta.len() < 2 * block_size(base.len()) as usize + 100);
        assert_eq!(rebuild(&base, &delta).expect("rebuilds"), new);
    }

    #[test]
    fn an_empty_base_gets_the_whole_file() {
        let new = lines(0..1000);
        let delta = delta_of(&[], &new);
        assert!(delta.delta.len() >= new.len());
        assert_eq!(rebuild(&[], &delta).expect("rebuilds"), new);
    }

    #[test]
    fn a_delta_against_another_base_fails_the_checksum() {
        let base = lines(0..20_000);
        let other = lines(1..20_001);
        let new = lines(0..20_001);
        let delta = delta_of(&base, &new);
        let error = rebuild(&other, &delta).expect_err("wrong base");
        assert!(
            matches!(error, SyncError::ChecksumMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_cut_or_flipped_delta_is_rejected() {
        let base = lines(0..20_000);
        let new = lines(5..20_005);
        let delta = delta_of(&base, &new);
        let mut cut = delta.clone();
        cut.delta.truncate(cut.delta.len() / 2);
        let error = rebuild(&base, &cut).expect_err("cut");
        assert_eq!(
            error.outcome(),
            crate::sync::SyncOutcome::BadDelta,
            "{error}"
        );
        for at in [4, delta.delta.len() / 2, delta.delta.len() - 2] {
            let mut flipped = delta.clone();
            flipped.delta[at] ^= 0x01;
            assert!(rebuild(&base, &flipped).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn signatures_with_unsafe_headers_are_refused() {
        let data = lines(0..100);
        let mut zero_block = signature(&data);
        zero_block[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(diff(zero_block, &data), None);
        let mut long_hash = signature(&data);
        long_hash[8..12].copy_from_slice(&17u32.to_be_bytes());
        assert_eq!(diff(long_hash, &data), None);
        assert_eq!(diff(vec![0x72, 0x73], &data), None);
        let mut ragged = signature(&data);
        ragged.push(0);
        assert_eq!(diff(ragged, &data), None);
    }

    #[test]
    fn block_sizes_follow_the_square_root_within_bounds() {
        assert_eq!(block_size(0), MIN_BLOCK);
        assert_eq!(block_size(4_000_000), 2000);
        assert_eq!(block_size(1 << 40), MAX_BLOCK);
    }
}
