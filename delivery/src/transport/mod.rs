//! How a message leaves the queue: into a local Maildir, or over LMTP or SMTP to a storage host.
//!
//! Every transport reports one [`RecipientResult`] per recipient, because a downstream host may
//! accept some recipients of a message and refuse others (RFC 2033 section 4.2 for LMTP).

pub mod maildir;
pub mod smtp;

/// What happened to one recipient in one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    /// The downstream host took responsibility (2xx), or the Maildir file is durably written.
    Delivered {
        /// The reply, as the downstream host gave it (code, enhanced status, text).
        reply: String,
    },
    /// A temporary failure (4xx, a lost connection, a full disk): try again later.
    Deferred {
        /// The reply or the local error that explains why.
        reason: String,
    },
    /// A permanent failure (5xx): the sender gets a delivery status notification.
    Failed {
        /// The reply or the local error that explains why.
        reason: String,
    },
}
