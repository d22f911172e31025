//! The quarantine: messages held by the verdict, kept on disk by queue id with the reasons, to
//! be listed, shown, released into the queue, or deleted by an operator.
//!
//! Layout under the quarantine directory: `<queue id>` holds the message in the queue file
//! format, written and fsync'd before the gateway answers 250, and `<queue id>.verdict` the
//! verdict as JSON. A release drops the message into the queue's pickup folder first and only
//! then deletes it here, so a crash between the two can only leave a copy, never lose it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::queue_file::{self, io_error};
use crate::queue_id::QueueId;
use crate::spool::{Spool, SpoolError};

/// Why a message was held, as the gateway's verdict gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldVerdict {
    /// The total score.
    pub score: f32,
    /// The checks that contributed, as `name=weight` or `name: detail`.
    pub checks: Vec<String>,
    /// When it was held, in seconds since the Unix epoch.
    pub held_at: u64,
}

/// One held message, without its content.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldMessage {
    /// Its queue id.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// Why it is held.
    pub verdict: HeldVerdict,
}

/// The quarantine directory.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// Opens (creating if needed) the quarantine in `dir`.
    ///
    /// # Errors
    /// Fails when the directory cannot be created.
    pub fn open(dir: &Path) -> Result<Quarantine, SpoolError> {
        queue_file::create_private_dir_all(dir).map_err(io_error("create directory", dir))?;
        Ok(Quarantine {
            dir: dir.to_path_buf(),
        })
    }

    /// Holds a message durably; when this returns Ok the gateway may answer 250.
    ///
    /// # Errors
    /// Fails on file system errors; the client must then be told to try again.
    pub fn hold(
        &self,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
        verdict: &HeldVerdict,
    ) -> Result<(), SpoolError> {
        let name = id.to_string();
        let verdict_path = self.dir.join(format!("{name}.verdict"));
        let json = serde_json::to_vec_pretty(verdict).map_err(|error| SpoolError::Damaged {
            path: verdict_path.clone(),
            detail: format!("verdict cannot be encoded: {error}"),
        })?;
        // The verdict goes first: a message file is never left without its reasons.
        queue_file::write_private(&verdict_path, &json)
            .map_err(io_error("write", &verdict_path))?;
        queue_file::write(
            &self.dir.join(format!(".{name}")),
            &self.dir.join(&name),
            envelope,
            message,
        )?;
        queue_file::sync_directory(&self.dir)
    }

    /// Every held message, oldest first.
    ///
    /// # Errors
    /// Fails when the directory cannot be read; a damaged entry is skipped with a warning.
    pub fn list(&self) -> Result<Vec<HeldMessage>, SpoolError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))? {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(QueueId::parse) {
                ids.push(id);
            }
        }
        ids.sort();

        let mut held = Vec::with_capacity(ids.len());
        for id in ids {
            match self.show(id) {
                Ok((message, _)) => held.push(message),
                Err(error) => tracing::warn!(queue_id = %id, %error, "quarantined message damaged"),
            }
        }
        Ok(held)
    }

    /// One held message with its content.
    ///
    /// # Errors
    /// Fails when the message is not held or its files are damaged.
    pub fn show(&self, id: QueueId) -> Result<(HeldMessage, Vec<u8>), SpoolError> {
        let name = id.to_string();
        let (envelope, content) = queue_file::read(&self.dir.join(&name))?;
        let verdict_path = self.dir.join(format!("{name}.verdict"));
        let json = fs::read(&verdict_path).map_err(io_error("read", &verdict_path))?;
        let verdict = serde_json::from_slice(&json).map_err(|error| SpoolError::Damaged {
            path: verdict_path,
            detail: format!("bad verdict: {error}"),
        })?;
        Ok((
            HeldMessage {
                id,
                envelope,
                verdict,
            },
            content,
        ))
    }

    /// Releases a message into the queue in `queue_dir`, to be delivered normally.
    ///
    /// # Errors
    /// Fails when the message is not held or cannot be queued; it then stays held.
    pub fn release(&self, id: QueueId, queue_dir: &Path) -> Result<HeldMessage, SpoolError> {
        let (held, content) = self.show(id)?;
        Spool::drop_for_pickup(queue_dir, id, &held.envelope, &content)?;
        self.delete(id)?;
        Ok(held)
    }

    /// Deletes a held message for good.
    ///
    /// # Errors
    /// Fails when the message is not held or cannot be removed.
    pub fn delete(&self, id: QueueId) -> Result<(), SpoolError> {
        let name = id.to_string();
        let message = self.dir.join(&name);
        fs::remove_file(&message).map_err(io_error("remove", &message))?;
        let verdict = self.dir.join(format!("{name}.verdict"));
        match fs::remove_file(&verdict) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(io_error("remove", &verdict)(error))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::envelope::BodyType;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("moat-quarantine-{name}-{}", std::process::id()));
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
    fn a_held_message_is_listed_shown_and_released_into_the_pickup() {
        let dir = scratch("release");
        let quarantine = Quarantine::open(&dir.join("quarantine")).expect("open");
        let id = QueueId::generate();
        let verdict = HeldVerdict {
            score: 7.5,
            checks: vec!["GTUBE=1000".into()],
            held_at: 1,
        };
        quarantine
            .hold(id, &envelope(), b"Subject: x\r\n\r\nbody\r\n", &verdict)
            .expect("hold");

        let listed = quarantine.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].verdict, verdict);
        let (_, content) = quarantine.show(id).expect("show");
        assert_eq!(content, b"Subject: x\r\n\r\nbody\r\n");

        let queue_dir = dir.join("queue");
        quarantine.release(id, &queue_dir).expect("release");
        assert!(quarantine.list().expect("list").is_empty());
        let spool = Spool::open(&queue_dir).expect("open spool");
        assert_eq!(spool.take_pickups().expect("pickup"), vec![id]);
        assert_eq!(
            spool.load(id).expect("load").1,
            b"Subject: x\r\n\r\nbody\r\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn deleting_an_unknown_message_is_an_error() {
        let dir = scratch("delete");
        let quarantine = Quarantine::open(&dir).expect("open");
        assert!(quarantine.delete(QueueId::generate()).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
