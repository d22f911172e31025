//! Every way the sync of one dataset can end, and the one table of their names: the log lines,
//! the counters and the tests all say `checksum_mismatch`, never something else.

/// How the sync of one dataset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncOutcome {
    /// A new version was verified and renamed into place.
    Updated,
    /// The copy held has the publisher's checksum already.
    Unchanged,
    /// The publisher could not be reached.
    Unreachable,
    /// The publisher took longer than the timeout to answer.
    Timeout,
    /// The connection ended inside a frame.
    Truncated,
    /// A frame failed its CRC-32 or carried an unknown protocol version.
    FrameCorrupt,
    /// A frame was whole but broke the protocol (a length past its bound, an unknown message).
    Malformed,
    /// The publisher refused the request.
    Refused,
    /// The publisher offered a version older than the copy held.
    OutOfOrder,
    /// The delta could not be applied to the copy held.
    BadDelta,
    /// The rebuilt file did not have the length and SHA-256 the publisher announced.
    ChecksumMismatch,
    /// The local copy could not be read or the new one written.
    LocalFailure,
    /// The handshake failed: the keys differ, or only one end has one.
    Unauthenticated,
    /// A frame after the handshake failed its HMAC.
    BadMac,
}

impl SyncOutcome {
    /// Every outcome, in the order of [`SyncOutcome::name`]'s table.
    pub const ALL: [SyncOutcome; 14] = [
        SyncOutcome::Updated,
        SyncOutcome::Unchanged,
        SyncOutcome::Unreachable,
        SyncOutcome::Timeout,
        SyncOutcome::Truncated,
        SyncOutcome::FrameCorrupt,
        SyncOutcome::Malformed,
        SyncOutcome::Refused,
        SyncOutcome::OutOfOrder,
        SyncOutcome::BadDelta,
        SyncOutcome::ChecksumMismatch,
        SyncOutcome::LocalFailure,
        SyncOutcome::Unauthenticated,
        SyncOutcome::BadMac,
    ];

    /// The outcome's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SyncOutcome::Updated => "updated",
            SyncOutcome::Unchanged => "unchanged",
            SyncOutcome::Unreachable => "unreachable",
            SyncOutcome::Timeout => "timeout",
            SyncOutcome::Truncated => "truncated",
            SyncOutcome::FrameCorrupt => "frame_corrupt",
            SyncOutcome::Malformed => "malformed",
            SyncOutcome::Refused => "refused",
            SyncOutcome::OutOfOrder => "out_of_order",
            SyncOutcome::BadDelta => "bad_delta",
            SyncOutcome::ChecksumMismatch => "checksum_mismatch",
            SyncOutcome::LocalFailure => "local_failure",
            SyncOutcome::Unauthenticated => "unauthenticated",
            SyncOutcome::BadMac => "bad_mac",
        }
    }

    /// The outcome's position in [`SyncOutcome::ALL`].
    pub(crate) fn index(self) -> usize {
        SyncOutcome::ALL
            .iter()
            .position(|&o| o == self)
            .unwrap_or_default()
    }
}

impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_name_and_index() {
        for (i, outcome) in SyncOutcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i);
            let same = SyncOutcome::ALL
                .iter()
                .filter(|o| o.name() == outcome.name());
            assert_eq!(same.count(), 1, "{outcome}");
        }
    }
}
