//! A dataset file as the sync sees it: read whole, versioned by its modification time and its
//! SHA-256, and replaced by writing aside, syncing and renaming, so that no reader (the zone
//! loader, rbldnsd, a publisher) ever sees half a file.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::wire::{CHECKSUM_LEN, MAX_DATASET_LEN, MAX_NAME_LEN, Version};
use crate::config::ZoneSpec;
use crate::dataset::reader::FileStamp;

/// A dataset file's bytes and version.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: Version,
}

/// Reads `path` whole; `Ok(None)` when there is no such file.
///
/// # Errors
///
/// When the file cannot be read, is larger than the protocol carries, or changed while it
/// was read (a tool writing in place rather than renaming).
pub(crate) fn read(path: &Path) -> io::Result<Option<Snapshot>> {
    let before = match FileStamp::of(path) {
        Ok(stamp) => stamp,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    if before.len > MAX_DATASET_LEN {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "{} bytes, the sync carries at most {MAX_DATASET_LEN}",
                before.len
            ),
        ));
    }
    let bytes = std::fs::read(path)?;
    if FileStamp::of(path)? != before || bytes.len() as u64 != before.len {
        return Err(io::Error::other(
            "file changed while being read; write a temporary file and rename it",
        ));
    }
    let version = Version {
        generation: generation(before.modified),
        len: before.len,
        checksum: checksum(&bytes),
    };
    Ok(Some(Snapshot { bytes, version }))
}

/// A modification time as a generation: nanoseconds since 1970, 0 before it.
pub(crate) fn generation(modified: SystemTime) -> u64 {
    modified.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// The SHA-256 of `bytes`.
pub(crate) fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    Sha256::digest(bytes).into()
}

/// Replaces `path` with `bytes`, stamped with `generation` as its modification time (so the
/// copy carries its version across restarts, as `rsync -t` does).
///
/// The bytes go to a hidden file beside it, are synced to disk, then renamed over it, and the
/// directory is synced: a crash leaves the old file or the new one, never a mix.
///
/// # Errors
///
/// When the directory cannot be written.
pub(crate) fn install(path: &Path, bytes: &[u8], generation: u64) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "dataset path has no file name")
    })?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(".moat-sync");
    let temporary = dir.join(temporary);

    let written = write_synced(&temporary, bytes, generation)
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    // The rename is durable once the directory is.
    File::open(dir)?.sync_all()
}

fn write_synced(path: &Path, bytes: &[u8], generation: u64) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.set_modified(UNIX_EPOCH + Duration::from_nanos(generation))?;
    file.sync_all()
}

/// The name a dataset file is published and pulled under: its file name, when it is UTF-8
/// and not too long for the protocol.
pub(crate) fn dataset_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.is_empty() && name.len() <= MAX_NAME_LEN).then(|| name.to_owned())
}

/// Every file of every dataset of `zones`, once each, in order.
pub(crate) fn zone_files(zones: &[ZoneSpec]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for file in zones
        .iter()
        .flat_map(|z| &z.datasets)
        .flat_map(|d| &d.files)
    {
        if !files.contains(file) {
            files.push(file.clone());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("moat-sync-copy-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a directory");
        dir
    }

    #[test]
    fn install_replaces_the_file_and_stamps_its_generation() {
        let dir = scratch("install");
        let path = dir.join("spam.txt");
        std::fs::write(&path, "192.0.2.1\n").expect("write");
        let generation = 1_700_000_000_123_456_789;

        install(&path, b"192.0.2.2\n", generation).expect("installs");

        let snapshot = read(&path).expect("reads").expect("a file");
        assert_eq!(snapshot.bytes, b"192.0.2.2\n");
        assert_eq!(snapshot.version.generation, generation);
        assert_eq!(snapshot.version.checksum, checksum(b"192.0.2.2\n"));
        let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_reads_as_none() {
        let dir = scratch("missing");
        assert!(read(&dir.join("none.txt")).expect("no error").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_are_file_names() {
        assert_eq!(
            dataset_name(Path::new("/var/lib/x/spam.txt")).as_deref(),
            Some("spam.txt")
        );
        assert_eq!(dataset_name(Path::new("/")), None);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(dataset_name(Path::new(&long)), None);
    }
}
