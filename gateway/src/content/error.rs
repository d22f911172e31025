//! Why the content checks cannot start: a bad `[content]` value, or a rule or signature file
//! that cannot be read or parsed.
//!
//! Scanning itself never fails with an error: whatever goes wrong while a message is scanned
//! is part of its [`ContentReport`](super::ContentReport), so the caller decides the reply.

use std::path::PathBuf;

/// Why [`ContentSection::validate`](super::ContentSection::validate) or
/// [`ContentScanner::load`](super::ContentScanner::load) failed. Grouped by who must act: the
/// configuration's author for [`ContentError::Value`], the author of a file otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// A `[content]` key has a value that cannot be used.
    #[error("config content.{key} = {value:?}: expected {expected}")]
    Value {
        /// The key within `[content]`, as `clamd.timeout`.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: String,
    },
    /// A rules file, signature file or signature directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A line of a rules file is malformed; the whole file is refused so that a typo does not
    /// silently switch a rule off.
    #[error("rules file {path} line {line}: {detail}")]
    Rule {
        /// The file (`<built-in>` for the default rules).
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A line of a signature file is malformed (not merely using a feature the built-in
    /// scanner lacks: such signatures are skipped with a warning).
    #[error("signature file {path} line {line}: {detail}")]
    Signature {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// The signature directory holds no signature the built-in scanner can use: a wrong path
    /// would otherwise turn layer 2 into a scanner that finds nothing.
    #[error("signature directory {path}: no usable .hdb, .hsb or .ndb signature")]
    NoSignatures {
        /// The directory.
        path: PathBuf,
    },
}

/// A [`ContentError::Value`] for `key`.
pub(crate) fn bad_value(key: &str, value: impl ToString, expected: &str) -> ContentError {
    ContentError::Value {
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_error_names_key_value_and_what_is_accepted() {
        let error = bad_value("clamd.failure_mode", "maybe", "\"tempfail\" or \"accept\"");
        assert_eq!(
            error.to_string(),
            "config content.clamd.failure_mode = \"maybe\": expected \"tempfail\" or \"accept\""
        );
    }

    #[test]
    fn rule_error_names_file_and_line() {
        let error = ContentError::Rule {
            path: PathBuf::from("/etc/moat/content.rules"),
            line: 7,
            detail: "unknown scope \"footer\"".into(),
        };
        assert_eq!(
            error.to_string(),
            "rules file /etc/moat/content.rules line 7: unknown scope \"footer\""
        );
    }
}
