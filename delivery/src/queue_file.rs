//! The on-disk form of a message, shared by the spool, its pickup folder and the quarantine:
//! `MOAT-QUEUE 1\n`, the envelope as one line of JSON, then the content.
//!
//! Queued mail is private: its files are made 0600 and its directories 0700 whatever the umask,
//! as Postfix keeps its queue, since the messages and their envelopes are other people's mail.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::envelope::Envelope;
use crate::spool::SpoolError;

/// The first line of every queue file: a format name and version.
const MAGIC: &[u8] = b"MOAT-QUEUE 1\n";

/// The mode of every file holding queued mail or its state: owner only.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// The mode of the queue's directories: owner only.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path`, which must not exist, as a private file for writing.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// Writes `bytes` to `path` (replacing what it held), as a private file if it is new.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?
        .write_all(bytes)
}

/// Creates `path` and its missing parents as private directories; an existing one is kept as
/// it is, so an operator's own modes are respected.
pub(crate) fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
}

/// Writes a message durably at `path`: into `tmp_path` first, fsync'd, then renamed, so
/// `path` only ever holds a whole message. The caller syncs the directory of `path`.
///
/// # Errors
/// Fails on any file system error, or if `tmp_path` exists already.
pub(crate) fn write(
    tmp_path: &Path,
    path: &Path,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), SpoolError> {
    let header = serde_json::to_vec(envelope).map_err(|error| SpoolError::Damaged {
        path: tmp_path.to_path_buf(),
        detail: format!("envelope cannot be encoded: {error}"),
    })?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + header.len() + 1 + message.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&header);
    bytes.push(b'\n');
    bytes.extend_from_slice(message);

    let mut file = create_private(tmp_path).map_err(io_error("create", tmp_path))?;
    file.write_all(&bytes)
        .map_err(io_error("write", tmp_path))?;
    file.sync_data().map_err(io_error("fsync", tmp_path))?;
    drop(file);
    fs::rename(tmp_path, path).map_err(io_error("rename into", path))
}

/// Reads a message written by [`write`].
///
/// # Errors
/// Fails when the file is missing, unreadable or not in the queue format.
pub(crate) fn read(path: &Path) -> Result<(Envelope, Vec<u8>), SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_error("read", path))?;

    let damaged = |detail: &str| SpoolError::Damaged {
        path: path.to_path_buf(),
        detail: detail.into(),
    };
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("no MOAT-QUEUE 1 line"))?;
    let line_end = rest
        .iter()
        .position(|&byte| byte == b'\n')
        .ok_or_else(|| damaged("no envelope"))?;
    let envelope: Envelope = serde_json::from_slice(&rest[..line_end])
        .map_err(|error| damaged(&format!("bad envelope: {error}")))?;
    let content_start = MAGIC.len() + line_end + 1;
    bytes.drain(..content_start);
    Ok((envelope, bytes))
}

/// Flushes a directory's entries, so a rename into it survives a crash.
pub(crate) fn sync_directory(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", dir))
}

/// Builds the error for a failed file operation on `path`.
pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path: PathBuf = path.to_path_buf();
    move |source| SpoolError::Io {
        action,
        path,
        source,
    }
}
