//! The errors of this crate, grouped by whose fault they are: the operator's files and
//! configuration, or the machine (a port that cannot be bound).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why zones could not be loaded or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A dataset file could not be read.
    #[error("reading dataset file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said (in the message, not as a source, so a chain prints it once).
        error: std::io::Error,
    },
    /// In strict mode, a line that rbldnsd would skip with a warning.
    #[error("dataset file {path} line {line}: {message} (strict mode refuses the dataset)")]
    Strict {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: u32,
        /// What is wrong with the line.
        message: String,
    },
    /// A dataset specification is not `type:file[,file...]` with a known type.
    #[error("dataset specification {spec:?}: {expected}")]
    Spec {
        /// The specification as written.
        spec: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A configuration value cannot be used.
    #[error("config {key} = {value:?}: {expected}")]
    Config {
        /// The key, with its section.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A listening socket could not be set up.
    #[error("listening on {addr} ({protocol}): {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// What the system said (in the message, not as a source, so a chain prints it once).
        error: std::io::Error,
    },
}
