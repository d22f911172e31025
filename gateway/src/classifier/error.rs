//! What can go wrong with the classifier's model file.
//!
//! The I/O error is a field named `error`, not a `source`: the message already ends with it,
//! and `moat` prints the whole chain, which would print it twice.

use std::path::PathBuf;

/// Why the model could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifierError {
    /// The model file exists but cannot be read.
    #[error("classifier model {path}: cannot be read: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The model file is not a model this Moat can use.
    #[error(
        "classifier model {path} is unusable: {detail}; restore it from a backup or delete it \
         and retrain with `moat learn`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The model (or its directory) could not be written.
    #[error("classifier model {path}: cannot be written: {error}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("classifier lock file {path}: {error}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}
