//! What can go wrong in a session with a downstream host: the [`Stage`] it was at and the
//! [`TransportError`] the runner sees.

use std::fmt;
use std::io;

use thiserror::Error;

/// The step of the session during which something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Resolving the host and opening the TCP connection.
    Connect,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO, LHLO or HELO.
    Hello,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command, up to its 354 reply.
    Data,
    /// Writing the content and reading the final reply or replies.
    Content,
    /// RSET after a transaction that did not reach the content.
    Rset,
    /// QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Hello => "EHLO/LHLO",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content => "message content",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        })
    }
}

/// Why a session with a downstream host failed. The runner defers the message, or tries a
/// standby host; none of these is a verdict on the message itself.
///
/// The `error` fields are part of the message rather than a `source`, so that a log line of the
/// error alone names the cause.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name could not be resolved, or the address has no port.
    #[error("resolving downstream host failed: {host}: {error}")]
    Resolve {
        /// The host as configured.
        host: String,
        /// The resolver's error.
        error: io::Error,
    },
    /// No address of the host accepted the TCP connection.
    #[error("connecting to downstream host failed: {host}: {error}")]
    Connect {
        /// The host as configured.
        host: String,
        /// The error from the last address tried.
        error: io::Error,
    },
    /// A stage took longer than its [`Timeouts`](super::Timeouts) allow.
    #[error("downstream host timed out: {host} during {stage}")]
    Timeout {
        /// The host as configured.
        host: String,
        /// The stage that took too long.
        stage: Stage,
    },
    /// The host refused the session: a greeting other than 220, or EHLO/LHLO/HELO refused.
    #[error("downstream host refused the session: {host} at {stage}: {reply}")]
    Refused {
        /// The host as configured.
        host: String,
        /// [`Stage::Greeting`] or [`Stage::Hello`].
        stage: Stage,
        /// The host's reply.
        reply: String,
    },
    /// Reading or writing the socket failed.
    #[error("connection to downstream host lost: {host} during {stage}: {error}")]
    Io {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// The socket error.
        error: io::Error,
    },
    /// The host closed the connection while we waited for a reply.
    #[error("downstream host closed the connection: {host} during {stage}")]
    Closed {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
    },
    /// A reply line did not have the form of RFC 5321 section 4.2.
    #[error("malformed reply from downstream host: {host} during {stage}: {detail}")]
    MalformedReply {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// What was wrong, with the offending line.
        detail: String,
    },
    /// A well-formed reply that makes no sense at this point, such as 354 to RCPT.
    #[error("unexpected reply from downstream host: {host} during {stage}: {reply}")]
    UnexpectedReply {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// The host's reply.
        reply: String,
    },
    /// `send` was called on a connection that an earlier error left in an unknown state.
    #[error("downstream connection unusable after an earlier error: {host}")]
    Unusable {
        /// The host as configured.
        host: String,
    },
}
