//! What can go wrong with the classifier's model file.

use std::path::PathBuf;

/// Why the model could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifierError {
    /// The model file exists but cannot be read.
    #[error("classifier model {path}: cannot be read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The model file is not a model this Moat can use.
    #[error(
        "classifier model {path} is unusable: {detail}; restore it from a backup or another \
         node, or delete it and train again with `moat learn`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The model (or its directory) could not be written.
    #[error("classifier model {path}: cannot be written: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("classifier lock file {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
