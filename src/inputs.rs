//! The message files a command names (`moat learn`, `moat check`): paths expanded into
//! regular files (a directory walked without following its symbolic links, a Maildir's cur/
//! and new/), what was skipped and why, and each file made into a message as SMTP would have
//! carried it.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{Failure, exit, fail};

/// What was named on the command line, expanded: the files to read, and what was skipped
/// on the way.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Regular files, in the order named, each directory's sorted.
    pub files: Vec<PathBuf>,
    /// What was not taken, and why.
    pub skipped: Skipped,
}

impl Inputs {
    /// Exit 66 when a named path did not exist, after the others were used.
    pub(crate) fn missing_failure(&self) -> Result<(), Failure> {
        if self.skipped.missing == 0 {
            return Ok(());
        }
        Err(fail(exit::NO_INPUT)(anyhow::anyhow!(
            "{} named {} not exist (reported above): name message files, directories of them, \
             or a Maildir",
            self.skipped.missing,
            if self.skipped.missing == 1 {
                "path does"
            } else {
                "paths do"
            }
        )))
    }
}

/// How many inputs were skipped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Named paths that do not exist (also counted as unreadable).
    pub missing: usize,
    /// FIFOs, devices, sockets, and symbolic links found inside a directory.
    pub not_regular: usize,
    /// Files that could not be opened or read.
    pub unreadable: usize,
    /// Files with no header section: empty, binary, or text that is no message.
    pub not_message: usize,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} not a regular file, {} unreadable, {} not a message",
            self.not_regular, self.unreadable, self.not_message
        )
    }
}

impl Skipped {
    /// Adds another count.
    pub(crate) fn add(&mut self, other: &Skipped) {
        self.missing += other.missing;
        self.not_regular += other.not_regular;
        self.unreadable += other.unreadable;
        self.not_message += other.not_message;
    }

    /// The message in the file at `path`, as received; `None`, counted and reported on
    /// stderr, when it is not a regular file, cannot be read or holds no message.
    ///
    /// The file is stat'ed before it is opened, so that a FIFO is never opened (opening one
    /// for reading waits for a writer, for ever), and its open handle is checked again in
    /// case the path was replaced in between.
    pub(crate) fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        let regular = |metadata: &std::fs::Metadata| metadata.file_type().is_file();
        match std::fs::metadata(path) {
            Ok(metadata) if !regular(&metadata) => return self.not_regular(path),
            Ok(_) => {}
            Err(error) => return self.unreadable(path, &error),
        }
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) => return self.unreadable(path, &error),
        };
        match file.metadata() {
            Ok(metadata) if !regular(&metadata) => return self.not_regular(path),
            Ok(_) => {}
            Err(error) => return self.unreadable(path, &error),
        }
        let mut raw = Vec::new();
        if let Err(error) = file.read_to_end(&mut raw) {
            return self.unreadable(path, &error);
        }

        let message = as_received(&raw);
        if !is_message(&message) {
            eprintln!(
                "moat: {}: not a message (no header section), skipped",
                path.display()
            );
            self.not_message += 1;
            return None;
        }
        Some(message)
    }

    fn not_regular(&mut self, path: &Path) -> Option<Vec<u8>> {
        eprintln!("moat: {}: not a regular file, skipped", path.display());
        self.not_regular += 1;
        None
    }

    fn unreadable(&mut self, path: &Path, error: &std::io::Error) -> Option<Vec<u8>> {
        eprintln!("moat: {}: cannot be read: {error}, skipped", path.display());
        self.unreadable += 1;
        None
    }
}

/// Whether `message` (as received) starts with a header field, `Name: value`: a message has
/// a header section before its first empty line, while an empty file, a binary file or plain
/// text has none. RFC 5322 section 2.2: a field name is printable ASCII other than the colon.
pub(crate) fn is_message(message: &[u8]) -> bool {
    let Some(colon) = message.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &message[..colon];
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
}

/// The message files named by `paths`: files as they are, directories walked (a Maildir's
/// `cur/` and `new/` only, anything else recursively), `-` for paths read from stdin.
///
/// A named path is followed if it is a symbolic link; inside a directory none is (a link to
/// `..` would loop, a link to /etc would learn what was never meant), and only regular files
/// are taken. A named path that does not exist is reported on stderr and counted as missing.
///
/// # Errors
/// Exit 66 when the paths cannot be read from stdin.
pub(crate) fn expand(paths: &[PathBuf]) -> Result<Inputs, Failure> {
    let mut named = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line
                    .context("reading paths from stdin")
                    .map_err(fail(exit::NO_INPUT))?;
                if !line.trim().is_empty() {
                    named.push(PathBuf::from(line.trim_end_matches(['\r', '\n'])));
                }
            }
        } else {
            named.push(path.clone());
        }
    }

    let mut inputs = Inputs::default();
    for path in named {
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("moat: {}: does not exist, skipped", path.display());
                inputs.skipped.missing += 1;
                inputs.skipped.unreadable += 1;
                continue;
            }
            Err(error) => {
                inputs.skipped.unreadable(&path, &error);
                continue;
            }
        };
        if metadata.is_dir() {
            let maildir = path.join("cur").is_dir() || path.join("new").is_dir();
            let roots = if maildir {
                vec![path.join("cur"), path.join("new")]
            } else {
                vec![path]
            };
            for root in roots {
                walk(&root, &mut inputs);
            }
        } else if metadata.is_file() {
            inputs.files.push(path);
        } else {
            inputs.skipped.not_regular(&path);
        }
    }
    Ok(inputs)
}

/// Every regular file under `dir`, sorted, recursively, symbolic links not followed;
/// unreadable directories are counted and reported.
fn walk(dir: &Path, inputs: &mut Inputs) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A Maildir may lack `new/` or `cur/`.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            inputs.skipped.unreadable(dir, &error);
            return;
        }
    };
    let mut found: Vec<(PathBuf, Option<std::fs::FileType>)> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| (entry.path(), entry.file_type().ok()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file_type) in found {
        // DirEntry's file type is lstat's: a symbolic link is a link here, never its target.
        match file_type {
            Some(kind) if kind.is_dir() => walk(&path, inputs),
            Some(kind) if kind.is_file() => inputs.files.push(path),
            _ => {
                inputs.skipped.not_regular(&path);
            }
        }
    }
}

/// A message file as the gateway would have received it: an mbox `From ` envelope line
/// dropped (it is no header field), and bare LF line ends made CRLF, as SMTP carries them.
pub(crate) fn as_received(raw: &[u8]) -> Vec<u8> {
    let raw = match raw.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&raw[raw.len()..], |end| &rest[end + 1..]),
        None => raw,
    };
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (index, &byte) in raw.iter().enumerate() {
        if byte == b'\n' && (index == 0 || raw[index - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_line_is_dropped_and_line_ends_become_crlf() {
        assert_eq!(
            as_received(b"From a@example.com  Thu Aug 22 2002\nSubject: x\n\nbody\r\n"),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(as_received(b"Subject: y\n"), b"Subject: y\r\n");
    }
}
