//! Why the sync of a dataset failed, grouped by whose fault it is: the publisher or the path to
//! it, the data it sent, or this machine. Each error maps to one [`SyncOutcome`].

use std::path::PathBuf;
use std::time::Duration;

use super::outcome::SyncOutcome;
use super::refusal::Refusal;

/// Why a sync, or the sync of one dataset, failed. The copy held stays in service whatever
/// the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The publisher could not be reached.
    #[error("connecting to publisher {publisher}: {error}")]
    Connect {
        /// The publisher as configured.
        publisher: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// The connection failed while a frame was sent or read.
    #[error("sync connection: {0}")]
    Io(std::io::Error),
    /// The peer did not answer in time.
    #[error("sync exchange timed out after {0:?}")]
    Timeout(Duration),
    /// The connection ended inside a frame.
    #[error("frame truncated: {part} cut short")]
    Truncated {
        /// Which part of the frame was cut: `header`, `payload`, `checksum` or `tag`.
        part: &'static str,
    },
    /// A frame's CRC-32 does not match its bytes.
    #[error("frame corrupt: CRC-32 mismatch")]
    FrameChecksum,
    /// A frame carries a protocol version this node does not speak.
    #[error("frame version {0} not supported: expected 1")]
    Version(u8),
    /// A frame's length is past the bound for what it should carry.
    #[error("frame too long: {len} bytes, at most {max}")]
    TooLong {
        /// The length announced.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A whole frame that breaks the protocol.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The publisher refused.
    #[error("publisher refused: {0}")]
    Refused(Refusal),
    /// The peer did not prove it holds the shared key, or one end has a key and the other
    /// none.
    #[error(
        "sync peer not authenticated: {0}; the keys must match: set the same key_file in \
             [dnsbl.sync.publish] and [dnsbl.sync.subscribe]"
    )]
    Unauthenticated(&'static str),
    /// A frame after the handshake failed its HMAC: it was altered, replayed, reordered or a
    /// frame before it dropped.
    #[error("frame {sequence} failed its MAC: altered, replayed, reordered or dropped in transit")]
    BadMac {
        /// The frame's sequence number in its direction.
        sequence: u64,
    },
    /// The publisher offered a version older than the copy held.
    #[error("dataset {dataset}: generation {offered} is older than the copy held ({held})")]
    OutOfOrder {
        /// The dataset's name.
        dataset: String,
        /// The generation offered.
        offered: u64,
        /// The generation held.
        held: u64,
    },
    /// The delta does not apply to the copy held.
    #[error("dataset {dataset}: delta does not apply: {error}")]
    BadDelta {
        /// The dataset's name.
        dataset: String,
        /// What the delta decoder said.
        error: fast_rsync::ApplyError,
    },
    /// The rebuilt file is not what the publisher announced.
    #[error("dataset {dataset}: rebuilt file fails verification: {detail}")]
    ChecksumMismatch {
        /// The dataset's name.
        dataset: String,
        /// Which check failed (length or SHA-256).
        detail: &'static str,
    },
    /// The local copy could not be read, or the new one written.
    #[error("dataset file {path}: {error}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// A worker thread ended without an answer (it panicked or the runtime is shutting down).
    #[error("sync worker thread failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl SyncError {
    /// The outcome this error counts as in logs and metrics.
    pub fn outcome(&self) -> SyncOutcome {
        match self {
            SyncError::Connect { .. } => SyncOutcome::Unreachable,
            SyncError::Io(_) | SyncError::Truncated { .. } => SyncOutcome::Truncated,
            SyncError::Timeout(_) => SyncOutcome::Timeout,
            SyncError::FrameChecksum | SyncError::Version(_) => SyncOutcome::FrameCorrupt,
            SyncError::TooLong { .. } | SyncError::Malformed(_) => SyncOutcome::Malformed,
            SyncError::Refused(Refusal::Unauthenticated) | SyncError::Unauthenticated(_) => {
                SyncOutcome::Unauthenticated
            }
            SyncError::Refused(_) => SyncOutcome::Refused,
            SyncError::BadMac { .. } => SyncOutcome::BadMac,
            SyncError::OutOfOrder { .. } => SyncOutcome::OutOfOrder,
            SyncError::BadDelta { .. } => SyncOutcome::BadDelta,
            SyncError::ChecksumMismatch { .. } => SyncOutcome::ChecksumMismatch,
            SyncError::Local { .. } | SyncError::Worker(_) => SyncOutcome::LocalFailure,
        }
    }

    /// Whether the connection can go on after this error: only when a whole, well-formed
    /// answer was read and it was the data in it that was refused.
    pub(crate) fn keeps_connection(&self) -> bool {
        matches!(
            self,
            SyncError::Refused(_)
                | SyncError::OutOfOrder { .. }
                | SyncError::BadDelta { .. }
                | SyncError::ChecksumMismatch { .. }
                | SyncError::Local { .. }
        )
    }
}
