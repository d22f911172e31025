//! The queue on disk: a message is safe once its file and its directory entry are fsync'd.
//!
//! Layout under the queue directory:
//! - `tmp/`: files being written; whatever is left here after a crash was never acknowledged
//!   and is removed at start.
//! - `active/<queue id>`: one file per message, envelope and content together, so a single
//!   fsync covers both. It appears here by rename only after its bytes are on disk, and the
//!   directory is fsync'd before the gateway says 250 (rename alone is not durable on ext4
//!   and XFS until the directory is synced).
//! - `pickup/<queue id>`: whole messages dropped by other programs (`moat quarantine
//!   release`), which the running queue manager moves into `active/` within seconds.
//! - `progress/<queue id>`: written only for a message whose first attempt left recipients
//!   pending: which recipients remain, how many attempts were made and when the next is due.
//!
//! A message file reads `MOAT-QUEUE 1\n`, the envelope as one line of JSON, then the content.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::queue_file::{self, io_error};
use crate::queue_id::QueueId;

/// Why the spool could not store, read or remove a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file or directory operation failed.
    #[error("queue {action} {path}: {source}")]
    Io {
        /// What the spool was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A queue file is not in Moat's format (damaged, or from another program).
    #[error("queue file {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Delivery progress of a message that is still queued after an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Recipients not yet delivered or failed, in envelope order.
    pub pending: Vec<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, in seconds since the Unix epoch.
    pub next_attempt: u64,
    /// The reason the last attempt gave for each pending recipient, for the bounce if it expires.
    pub last_reasons: Vec<String>,
}

/// The queue directory.
#[derive(Debug)]
pub struct Spool {
    tmp: PathBuf,
    active: PathBuf,
    progress: PathBuf,
    pickup: PathBuf,
    /// Kept open so each message costs one fsync of the directory, not an open and a close too.
    active_handle: File,
}

impl Spool {
    /// Opens (creating if needed) the queue under `dir` and removes unacknowledged leftovers.
    ///
    /// # Errors
    /// Fails when the directories cannot be created or read, for example when `dir` is not
    /// writable by the user Moat runs as.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let tmp = dir.join("tmp");
        let active = dir.join("active");
        let progress = dir.join("progress");
        let pickup = dir.join("pickup");
        for path in [&tmp, &active, &progress, &pickup] {
            queue_file::create_private_dir_all(path).map_err(io_error("create directory", path))?;
        }

        for entry in fs::read_dir(&tmp).map_err(io_error("read directory", &tmp))? {
            let path = entry.map_err(io_error("read directory", &tmp))?.path();
            fs::remove_file(&path).map_err(io_error("remove leftover", &path))?;
        }

        let active_handle = File::open(&active).map_err(io_error("open directory", &active))?;
        Ok(Spool {
            tmp,
            active,
            progress,
            pickup,
            active_handle,
        })
    }

    /// Stores a message durably: when this returns Ok, a crash cannot lose it.
    ///
    /// Blocking; call it from a blocking thread.
    ///
    /// # Errors
    /// Fails on any file system error (full disk, permissions); the message is then not queued
    /// and the client must be told to try again.
    pub fn store(
        &self,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), SpoolError> {
        let name = id.to_string();
        queue_file::write(
            &self.tmp.join(&name),
            &self.active.join(&name),
            envelope,
            message,
        )?;
        self.active_handle
            .sync_all()
            .map_err(io_error("fsync directory", &self.active))?;
        Ok(())
    }

    /// Drops a whole message into the pickup folder of the queue in `queue_dir`, for the
    /// running queue manager to take; used by programs other than `moat serve`.
    ///
    /// # Errors
    /// Fails on file system errors; the message is then not queued.
    pub fn drop_for_pickup(
        queue_dir: &Path,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), SpoolError> {
        let pickup = queue_dir.join("pickup");
        queue_file::create_private_dir_all(&pickup)
            .map_err(io_error("create directory", &pickup))?;
        let name = id.to_string();
        // A dot name is never taken by the pickup, so a half-written file is never seen.
        queue_file::write(
            &pickup.join(format!(".{name}")),
            &pickup.join(&name),
            envelope,
            message,
        )?;
        queue_file::sync_directory(&pickup)
    }

    /// Moves every message waiting in the pickup folder into the queue; returns their ids.
    ///
    /// # Errors
    /// Fails when the folders cannot be read or the renames fail.
    pub fn take_pickups(&self) -> Result<Vec<QueueId>, SpoolError> {
        let ids = ids_in(&self.pickup)?;
        for &id in &ids {
            let name = id.to_string();
            let to = self.active.join(&name);
            fs::rename(self.pickup.join(&name), &to).map_err(io_error("rename into", &to))?;
        }
        if !ids.is_empty() {
            self.active_handle
                .sync_all()
                .map_err(io_error("fsync directory", &self.active))?;
        }
        Ok(ids)
    }

    /// Reads a queued message back: its envelope and content.
    ///
    /// # Errors
    /// Fails when the file is missing, unreadable or not in the queue format.
    pub fn load(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        queue_file::read(&self.active.join(id.to_string()))
    }

    /// Records the progress of a message still queued after an attempt, atomically.
    ///
    /// # Errors
    /// Fails on file system errors.
    pub fn save_progress(&self, id: QueueId, progress: &Progress) -> Result<(), SpoolError> {
        let name = id.to_string();
        let tmp_path = self.tmp.join(format!("{name}.progress"));
        let path = self.progress.join(&name);
        let bytes = serde_json::to_vec(progress).map_err(|error| SpoolError::Damaged {
            path: path.clone(),
            detail: format!("progress cannot be encoded: {error}"),
        })?;
        // A leftover of a crash between create and rename would make create_new fail.
        let _ = fs::remove_file(&tmp_path);
        let mut file =
            queue_file::create_private(&tmp_path).map_err(io_error("create", &tmp_path))?;
        file.write_all(&bytes)
            .map_err(io_error("write", &tmp_path))?;
        file.sync_data().map_err(io_error("fsync", &tmp_path))?;
        fs::rename(&tmp_path, &path).map_err(io_error("rename into", &path))?;
        File::open(&self.progress)
            .and_then(|directory| directory.sync_all())
            .map_err(io_error("fsync directory", &self.progress))
    }

    /// The recorded progress of a message, or `None` if no attempt has left anything pending.
    ///
    /// # Errors
    /// Fails when the progress file exists but cannot be read or parsed.
    pub fn load_progress(&self, id: QueueId) -> Result<Option<Progress>, SpoolError> {
        let path = self.progress.join(id.to_string());
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| SpoolError::Damaged {
                        path,
                        detail: format!("bad progress record: {error}"),
                    })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("read", &path)(error)),
        }
    }

    /// Removes a message whose every recipient is delivered or failed.
    ///
    /// The message file goes first: a crash between the two removals leaves only a progress
    /// file, which [`Spool::list`] ignores and the next start removes, instead of a message that
    /// would be delivered twice.
    ///
    /// # Errors
    /// Fails on file system errors other than the file being gone already.
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let name = id.to_string();
        for path in [self.active.join(&name), self.progress.join(&name)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error("remove", &path)(error)),
            }
        }
        Ok(())
    }

    /// The ids of every queued message, oldest first, and removes orphaned progress files.
    ///
    /// # Errors
    /// Fails when the queue directories cannot be read.
    pub fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        let mut ids = ids_in(&self.active)?;
        ids.sort();

        for orphan in ids_in(&self.progress)? {
            if ids.binary_search(&orphan).is_err() {
                let path = self.progress.join(orphan.to_string());
                fs::remove_file(&path).map_err(io_error("remove orphan", &path))?;
            }
        }
        Ok(ids)
    }
}

/// The queue ids named by the files of a directory; other names are ignored.
fn ids_in(dir: &Path) -> Result<Vec<QueueId>, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("read directory", dir))? {
        let entry = entry.map_err(io_error("read directory", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(QueueId::parse) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::envelope::BodyType;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn envelope() -> Envelope {
        Envelope {
            reverse_path: "alice@example.org".into(),
            recipients: vec!["bob@example.com".into()],
            smtputf8: false,
            body: BodyType::SevenBit,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            helo: "mx.example.org".into(),
            received_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_stored_message_reads_back_identically() {
        let dir = scratch("roundtrip");
        let spool = Spool::open(&dir).expect("open spool");
        let id = QueueId::generate();
        spool
            .store(id, &envelope(), b"Subject: x\r\n\r\nbody\n\r\n")
            .expect("store");
        assert_eq!(spool.list().expect("list"), vec![id]);
        let (read_envelope, content) = spool.load(id).expect("load");
        assert_eq!(read_envelope, envelope());
        assert_eq!(content, b"Subject: x\r\n\r\nbody\n\r\n");
        spool.remove(id).expect("remove");
        assert!(spool.list().expect("list").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn queued_mail_is_the_owners_alone_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;

        let dir = scratch("modes");
        let spool = Spool::open(&dir).expect("open spool");
        let id = QueueId::generate();
        spool
            .store(id, &envelope(), b"Subject: x\r\n\r\nbody\r\n")
            .expect("store");

        let mode = |path: &Path| fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        for sub in ["active", "tmp", "progress", "pickup"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}/");
        }
        assert_eq!(mode(&dir.join("active").join(id.to_string())), 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftovers_and_orphans_are_cleaned_at_open() {
        let dir = scratch("leftovers");
        let spool = Spool::open(&dir).expect("open spool");
        fs::write(dir.join("tmp/0000000000000001"), b"partial").expect("write leftover");
        let orphan = QueueId::generate();
        let progress = Progress {
            pending: vec![],
            attempts: 1,
            next_attempt: 0,
            last_reasons: vec![],
        };
        spool
            .save_progress(orphan, &progress)
            .expect("save progress");
        drop(spool);

        let spool = Spool::open(&dir).expect("reopen spool");
        assert!(spool.list().expect("list").is_empty());
        assert_eq!(fs::read_dir(dir.join("tmp")).expect("read tmp").count(), 0);
        assert_eq!(spool.load_progress(orphan).expect("load progress"), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
