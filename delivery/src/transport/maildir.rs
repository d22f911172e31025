//! Local delivery into one Maildir per recipient under a root directory (`maildir:PATH`).
//!
//! Each recipient `local@domain` gets the Maildir `ROOT/domain/local/` with its `tmp`, `new` and
//! `cur` subdirectories, made on first use. A message is written to `tmp/`, synced, renamed into
//! `new/`, and the `new` directory is synced, as the Maildir specification
//! (<https://cr.yp.to/proto/maildir.html>) requires; only then is the recipient reported
//! delivered, so a crash can lose no message we have acknowledged.
//!
//! # Mapping addresses to directories
//!
//! The domain and the local part are lower-cased, then the characters that could change the
//! meaning of the path are percent-encoded (`%2F`): `/`, NUL, `%` itself, the other ASCII
//! controls, and a leading `.` (so neither `.`, `..` nor a hidden name can appear). Encoding `%`
//! keeps the mapping injective: `a/b@example.com` and `a%2Fb@example.com` never share a mailbox,
//! which replacing characters by `_` could not promise. Other characters, UTF-8 included, are
//! kept as they are. An address without `@` (RFC 5321 allows a bare `postmaster`)
//! is filed under the local host name. An empty local part or domain is refused permanently.
//!
//! Deliveries are independent per recipient: the same bytes are written once per recipient, even
//! when two recipients share a file system, because hard links would tie their mailboxes'
//! quotas and expunges together.
//!
//! Messages are written 0600 and mailboxes made 0700, whatever the umask, as Postfix's local
//! and virtual delivery agents do: a mailbox is its owner's alone.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::RecipientResult;

/// The mode of a delivered message: readable and writable by the mailbox owner only.
const MESSAGE_MODE: u32 = 0o600;

/// The mode of a directory this transport makes.
const DIRECTORY_MODE: u32 = 0o700;

/// Tells apart files written by this process within the same microsecond, whatever the queue id.
static DELIVERY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Delivers `message` to the Maildir of each recipient, returning one result per recipient in the
/// order given.
///
/// The bytes are written exactly as given: the gateway has already prepended its Received header.
/// `hostname` ends every file name, as the Maildir specification asks, and is the domain of
/// addresses that have none. `queue_id` goes into the file name so that an operator can match a
/// file to the queue's logs.
///
/// This function blocks on file I/O and fsync; call it from `spawn_blocking`.
///
/// An I/O error (a full disk, a missing permission) gives [`RecipientResult::Deferred`] with a
/// reason naming the path; an address that cannot name a directory (empty parts, or a name
/// longer than the file system allows) gives [`RecipientResult::Failed`].
pub fn deliver(
    root: &Path,
    hostname: &str,
    queue_id: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<RecipientResult> {
    recipients
        .iter()
        .map(|recipient| deliver_one(root, hostname, queue_id, recipient, message))
        .collect()
}

/// Delivers to one recipient and turns the outcome into its result.
fn deliver_one(
    root: &Path,
    hostname: &str,
    queue_id: &str,
    recipient: &str,
    message: &[u8],
) -> RecipientResult {
    let Some(maildir) = maildir_path(root, hostname, recipient) else {
        return RecipientResult::Failed {
            reason: format!(
                "5.1.3 maildir: recipient has an empty local part or domain: {recipient}"
            ),
        };
    };

    let name = unique_name(hostname, queue_id);
    match write_message(root, &maildir, &name, message) {
        Ok(path) => RecipientResult::Delivered {
            reply: format!("250 2.0.0 delivered to maildir {}", path.display()),
        },
        // A name over the file system's limit (255 octets a component) will be as long on
        // every retry: the address cannot have a mailbox here, so it fails at once.
        Err(failure) if failure.source.kind() == io::ErrorKind::InvalidFilename => {
            RecipientResult::Failed {
                reason: format!(
                    "5.1.3 maildir: the recipient's mailbox name is too long for the file system: \
                     {}",
                    failure.path.display()
                ),
            }
        }
        Err(failure) => RecipientResult::Deferred {
            reason: format!(
                "{} maildir write failed: {}: {}",
                enhanced_status(&failure.source),
                failure.path.display(),
                failure.source
            ),
        },
    }
}

/// An I/O error together with the path it happened on, so the reason can name it.
struct WriteFailure {
    path: PathBuf,
    source: io::Error,
}

/// Returns the result of `op`, or the error paired with `path`.
fn at<T>(path: &Path, op: io::Result<T>) -> Result<T, WriteFailure> {
    op.map_err(|source| WriteFailure {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the message into `maildir/tmp`, moves it into `maildir/new` and makes both durable.
fn write_message(
    root: &Path,
    maildir: &Path,
    name: &str,
    message: &[u8],
) -> Result<PathBuf, WriteFailure> {
    ensure_maildir(root, maildir)?;

    // Step 1: the whole file in tmp/, synced, so that new/ never shows a partial message.
    let tmp_path = maildir.join("tmp").join(name);
    if let Err(failure) = write_synced(&tmp_path, message) {
        // Best effort: a partial file in tmp/ is harmless (readers ignore tmp/) but wastes space.
        let _ = fs::remove_file(&tmp_path);
        return Err(failure);
    }

    // Step 2: the rename is the atomic commit; syncing new/ makes the commit itself durable.
    let new_dir = maildir.join("new");
    let new_path = new_dir.join(name);
    if let Err(source) = fs::rename(&tmp_path, &new_path) {
        let _ = fs::remove_file(&tmp_path);
        return Err(WriteFailure {
            path: new_path,
            source,
        });
    }
    at(&new_dir, sync_directory(&new_dir))?;

    Ok(new_path)
}

/// Creates `path` exclusively, writes `bytes` and fsyncs the file.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WriteFailure> {
    // create_new: a name collision must fail loudly rather than overwrite another message.
    let mut file = at(
        path,
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MESSAGE_MODE)
            .open(path),
    )?;
    at(path, file.write_all(bytes))?;
    at(path, file.sync_all())
}

/// Makes `maildir` with `tmp`, `new` and `cur` below `root` if missing.
///
/// Each directory this call creates has its parent synced, because a fsync of `new/` alone would
/// not keep `new/` itself (or the mailbox above it) after a crash on a fresh mailbox.
fn ensure_maildir(root: &Path, maildir: &Path) -> Result<(), WriteFailure> {
    // The common case: the mailbox exists already; one stat instead of six mkdir calls.
    if maildir.join("new").is_dir() && maildir.join("tmp").is_dir() {
        return Ok(());
    }

    let relative = maildir.strip_prefix(root).unwrap_or(maildir);
    let mut path = root.to_path_buf();
    for component in relative.components() {
        path.push(component);
        make_directory(&path)?;
    }
    for sub in ["tmp", "new", "cur"] {
        make_directory(&maildir.join(sub))?;
    }
    Ok(())
}

/// Creates one directory, syncing its parent when it was created by this call.
fn make_directory(path: &Path) -> Result<(), WriteFailure> {
    match DirBuilder::new().mode(DIRECTORY_MODE).create(path) {
        Ok(()) => {
            let parent = path.parent().unwrap_or(path);
            at(parent, sync_directory(parent))
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(WriteFailure {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Flushes a directory's entries to disk (POSIX: fsync on a directory opened read-only).
fn sync_directory(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Chooses the enhanced status code (RFC 3463) for a local I/O error.
fn enhanced_status(error: &io::Error) -> &'static str {
    match error.kind() {
        // 4.3.1: mail system full.
        io::ErrorKind::StorageFull => "4.3.1",
        // 4.2.2: mailbox full (a per-user disk quota).
        io::ErrorKind::QuotaExceeded => "4.2.2",
        // 4.3.0: other or undefined mail system status.
        _ => "4.3.0",
    }
}

/// Returns `root/<domain>/<local-part>` for `recipient`, or `None` if either part is empty.
fn maildir_path(root: &Path, hostname: &str, recipient: &str) -> Option<PathBuf> {
    // The last '@' separates the domain: a quoted local part may itself contain '@'.
    let (local_part, domain) = recipient.rsplit_once('@').unwrap_or((recipient, hostname));
    if local_part.is_empty() || domain.is_empty() {
        return None;
    }
    Some(
        root.join(safe_component(domain))
            .join(safe_component(local_part)),
    )
}

/// Lower-cases `raw` and percent-encodes the characters that could escape or hide a directory.
///
/// Only ASCII characters are ever encoded, so the rest of the UTF-8 text stays readable.
fn safe_component(raw: &str) -> String {
    let lowered = raw.to_lowercase();
    let mut safe = String::with_capacity(lowered.len());
    for (index, ch) in lowered.char_indices() {
        let needs_encoding =
            matches!(ch, '/' | '%' | '\u{0}'..='\u{1f}' | '\u{7f}') || (index == 0 && ch == '.');
        if needs_encoding {
            // Writing into a String cannot fail.
            let _ = write!(safe, "%{:02X}", u32::from(ch));
        } else {
            safe.push(ch);
        }
    }
    safe
}

/// Builds a Maildir file name: `<secs>.M<micros>P<pid>Q<queue id>R<sequence>.<hostname>`.
///
/// The time, process id and a per-process sequence make the name unique on this host; the
/// queue id is there for people. '/' and ':' in the host name are written as `\057` and `\072`,
/// as the Maildir specification asks, since ':' starts the info suffix in `cur/`.
fn unique_name(hostname: &str, queue_id: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let sequence = DELIVERY_SEQUENCE.fetch_add(1, Ordering::Relaxed);

    // The queue id is ours and should be alphanumeric; anything else must not break the
    // dot-separated structure of the name.
    let queue_id: String = queue_id
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect();
    let mut host = String::with_capacity(hostname.len());
    for ch in hostname.chars() {
        match ch {
            '/' => host.push_str("\\057"),
            ':' => host.push_str("\\072"),
            _ => host.push(ch),
        }
    }

    format!(
        "{}.M{}P{}Q{}R{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        queue_id,
        sequence,
        host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "moat-maildir-{}-{name}-{unique}",
                std::process::id()
            ));
            fs::create_dir_all(&path).expect("create test directory");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    const MESSAGE: &[u8] = b"Received: from client.example.com\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn writes_the_message_unchanged_into_new() {
        let root = TempDir::new("unchanged");
        let results = deliver(
            &root.0,
            "mx.example.com",
            "Q1",
            &["alice@example.com".into()],
            MESSAGE,
        );

        assert!(
            matches!(results.as_slice(), [RecipientResult::Delivered { .. }]),
            "{results:?}"
        );
        let maildir = root.0.join("example.com").join("alice");
        let delivered = files_in(&maildir.join("new"));
        assert_eq!(delivered.len(), 1);
        assert_eq!(fs::read(&delivered[0]).expect("read"), MESSAGE);
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(maildir.join("cur").is_dir());
    }

    #[test]
    fn messages_and_mailboxes_are_the_owners_alone_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;

        let root = TempDir::new("modes");
        deliver(
            &root.0,
            "mx.example.com",
            "Q9",
            &["alice@example.com".into()],
            MESSAGE,
        );

        let mode = |path: &Path| fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        let maildir = root.0.join("example.com").join("alice");
        for directory in [maildir.clone(), maildir.join("new"), maildir.join("tmp")] {
            assert_eq!(mode(&directory), 0o700, "{}", directory.display());
        }
        let delivered = files_in(&maildir.join("new"));
        assert_eq!(mode(&delivered[0]), 0o600);
    }

    #[test]
    fn a_mailbox_name_over_the_file_system_limit_fails_at_once() {
        let root = TempDir::new("long");
        let long_local = format!("{}@example.com", "a".repeat(300));
        let results = deliver(&root.0, "mx.example.com", "Q8", &[long_local], MESSAGE);

        assert!(
            matches!(&results[..], [RecipientResult::Failed { reason }] if reason.starts_with("5.1.3")),
            "{results:?}"
        );
    }

    #[test]
    fn returns_one_result_per_recipient_in_order() {
        let root = TempDir::new("order");
        let recipients = vec![
            "a@example.com".to_string(),
            "@example.com".into(),
            "b@x.test".into(),
        ];
        let results = deliver(&root.0, "mx.example.com", "Q2", &recipients, MESSAGE);

        assert_eq!(results.len(), 3);
        assert!(matches!(results[0], RecipientResult::Delivered { .. }));
        assert!(
            matches!(&results[1], RecipientResult::Failed { reason } if reason.starts_with("5.1.3"))
        );
        assert!(matches!(results[2], RecipientResult::Delivered { .. }));
    }

    #[test]
    fn lower_cases_domain_and_local_part() {
        let root = TempDir::new("case");
        deliver(
            &root.0,
            "mx.example.com",
            "Q3",
            &["Bob.Smith@Example.COM".into()],
            MESSAGE,
        );
        assert_eq!(
            files_in(&root.0.join("example.com").join("bob.smith").join("new")).len(),
            1
        );
    }

    #[test]
    fn keeps_hostile_local_parts_inside_the_root() {
        let root = TempDir::new("escape");
        let recipients: Vec<String> = [
            "../../etc@example.com",
            "..@example.com",
            ".@example.com",
            ".hidden@example.com",
        ]
        .iter()
        .map(|r| r.to_string())
        .collect();
        let results = deliver(&root.0, "mx.example.com", "Q4", &recipients, MESSAGE);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, RecipientResult::Delivered { .. })),
            "{results:?}"
        );

        let mut mailboxes: Vec<String> = fs::read_dir(root.0.join("example.com"))
            .expect("domain dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        mailboxes.sort();
        assert_eq!(mailboxes, ["%2E", "%2E.", "%2E.%2F..%2Fetc", "%2Ehidden"]);
    }

    #[test]
    fn percent_encoding_keeps_distinct_addresses_apart() {
        assert_ne!(safe_component("a/b"), safe_component("a%2Fb"));
        assert_eq!(safe_component("a/b"), "a%2Fb");
        assert_eq!(safe_component("a%2Fb"), "a%252fb");
        assert_eq!(safe_component("nul\0"), "nul%00");
        assert_eq!(safe_component("Ünïcode.Ok"), "ünïcode.ok");
    }

    #[test]
    fn files_an_address_without_domain_under_the_host_name() {
        let root = TempDir::new("postmaster");
        deliver(
            &root.0,
            "mx.example.com",
            "Q5",
            &["Postmaster".into()],
            MESSAGE,
        );
        assert_eq!(
            files_in(&root.0.join("mx.example.com").join("postmaster").join("new")).len(),
            1
        );
    }

    #[test]
    fn gives_each_delivery_its_own_file() {
        let root = TempDir::new("unique");
        let twice = vec!["carol@example.com".to_string(), "carol@example.com".into()];
        deliver(&root.0, "mx.example.com", "Q6", &twice, MESSAGE);
        assert_eq!(
            files_in(&root.0.join("example.com").join("carol").join("new")).len(),
            2
        );
    }

    #[test]
    fn escapes_slash_and_colon_in_the_host_name() {
        let name = unique_name("odd/host:name", "Q7.x");
        assert!(name.ends_with(".odd\\057host\\072name"), "{name}");
        assert!(name.contains("QQ7_xR"), "{name}");
        assert!(!name.contains('/') && !name.contains(':'));
    }

    #[test]
    fn defers_with_the_path_when_the_root_is_unusable() {
        let root = TempDir::new("unusable");
        // A regular file where the domain directory should be: fails even when run as root,
        // unlike a permission test.
        fs::write(root.0.join("example.com"), b"not a directory").expect("write file");
        let results = deliver(
            &root.0,
            "mx.example.com",
            "Q8",
            &["dave@example.com".into()],
            MESSAGE,
        );

        let [RecipientResult::Deferred { reason }] = results.as_slice() else {
            panic!("expected one deferral: {results:?}");
        };
        assert!(
            reason.starts_with("4.3.0 maildir write failed: "),
            "{reason}"
        );
        assert!(reason.contains("example.com"), "{reason}");
    }
}
