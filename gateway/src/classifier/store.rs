//! The model file in the data directory: a versioned, checksummed binary file written
//! atomically, and a lock file that serialises every read-merge-write.
//!
//! Layout of `classifier/model.bin`, little-endian:
//!
//! | octets | field |
//! |---|---|
//! | 8 | magic `MOATBAYS` |
//! | 4 | format version, [`FORMAT_VERSION`] |
//! | 8 | spam messages learned |
//! | 8 | ham messages learned |
//! | 8 | number of entries N |
//! | 12 × N | entries sorted by feature hash: hash, spam count, ham count (u32 each) |
//! | 32 | SHA-256 of everything before |
//!
//! Writers (`moat learn`, a `moat serve` flushing what it auto-learned, `moat quarantine`)
//! take an exclusive `flock` on `classifier/model.lock`, read the file, add their counts, write
//! `model.bin.tmp`, fsync it, rename it over `model.bin` and fsync the directory. So a reader
//! sees the old file or the new one, never a half-written one, a crash loses at most the
//! update in flight, and two writers at once lose nothing: the second adds its counts to the
//! first's result.
//!
//! The record of learned messages, `classifier/seen.bin` (see `seen`), is read, merged and
//! written under the same lock, model first: a crash between the two renames leaves a record
//! missing the last batch, so those messages would count twice if learned again, never a
//! message recorded but not counted.
//!
//! The directory is created 0700 and the files 0600: the model and the record say what mail
//! the site receives, which is nobody else's business on a shared host.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::error::ClassifierError;
use super::features::Features;
use super::model::{Counts, Label, Model};
use super::seen::{MessageDigest, SEEN_FILE, SEEN_LIMIT, Seen};

/// The first octets of a model file.
const MAGIC: &[u8; 8] = b"MOATBAYS";

/// The format written; a file of another version is refused, not misread.
pub const FORMAT_VERSION: u32 = 1;

/// The file name of the model in the classifier directory.
pub const MODEL_FILE: &str = "model.bin";

/// The lock file serialising writers.
const LOCK_FILE: &str = "model.lock";

/// Mode of the classifier directory: the owner's alone.
const DIR_MODE: u32 = 0o700;

/// Mode of the model, the record and the lock file: the owner's alone.
const FILE_MODE: u32 = 0o600;

/// Octets before the entries.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// Octets of one entry.
const ENTRY_LEN: usize = 12;

/// Octets of the checksum.
const CHECKSUM_LEN: usize = 32;

/// What identifies one version of the file on disk, to notice that another process or node
/// replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// One message to learn: its digest, its features and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    /// What identifies the message in the record of learned messages.
    pub digest: MessageDigest,
    /// Its features.
    pub features: Features,
    /// What it is learned as.
    pub label: Label,
}

/// What learning one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// It was not learned before: its features were added.
    New,
    /// It was learned as this class before: nothing changed.
    Already,
    /// It was learned as the other class: its features moved to this one.
    Relearned,
}

/// The model file of one data directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// The store in `dir` (`data_dir/classifier`); nothing is touched until it is used.
    pub fn new(dir: &Path) -> ModelStore {
        ModelStore {
            dir: dir.to_path_buf(),
        }
    }

    /// The model file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// The stamp of the file now, or `None` when there is none.
    pub fn stamp(&self) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(self.path()).ok()?;
        Some(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }

    /// Reads the model; an empty model when there is no file yet.
    ///
    /// # Errors
    /// [`ClassifierError::Read`] when the file cannot be read, [`ClassifierError::Corrupt`]
    /// when it is not a model of this version or fails its checksum.
    pub fn load(&self) -> Result<(Model, Option<FileStamp>), ClassifierError> {
        let path = self.path();
        let stamp = self.stamp();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Model::default(), None));
            }
            Err(error) => return Err(ClassifierError::Read { path, error }),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|error| ClassifierError::Read {
                path: path.clone(),
                error,
            })?;
        let model = decode(&bytes).map_err(|detail| ClassifierError::Corrupt { path, detail })?;
        Ok((model, stamp))
    }

    /// Under the lock: reads the model, adds `delta`, writes the sum atomically, and returns
    /// it with the new file's stamp. The record of learned messages is not consulted: this is
    /// for merging counts learned elsewhere (another node's model).
    ///
    /// # Errors
    /// [`ClassifierError`] when the lock, the old file or the new file fails; the file on
    /// disk is then unchanged.
    pub fn update(&self, delta: &Model) -> Result<(Model, Option<FileStamp>), ClassifierError> {
        self.create_dir()?;
        let lock = self.lock()?;

        let (mut model, _) = self.load()?;
        model.merge(delta);
        self.write(&self.path(), &encode(&model))?;
        let stamp = self.stamp();

        drop(lock);
        Ok((model, stamp))
    }

    /// Under the lock: reads the model and the record of learned messages, learns each lesson
    /// that is new, moves each learned as the other class, skips each learned as the same, and
    /// writes both files atomically. Returns the model, its stamp and what each lesson did.
    ///
    /// # Errors
    /// [`ClassifierError`] when the lock or a file fails; [`ClassifierError::Corrupt`] is a
    /// damaged model or record, which the operator must restore or delete.
    pub fn learn(
        &self,
        lessons: &[Lesson],
    ) -> Result<(Model, Option<FileStamp>, Vec<Learned>), ClassifierError> {
        self.create_dir()?;
        let lock = self.lock()?;

        let (mut model, _) = self.load()?;
        let mut seen = self.load_seen()?;
        let outcomes = lessons
            .iter()
            .map(|lesson| apply(&mut model, &mut seen, lesson))
            .collect();
        seen.truncate_oldest(SEEN_LIMIT);
        self.write(&self.path(), &encode(&model))?;
        self.write(&self.dir.join(SEEN_FILE), &seen.encode())?;
        let stamp = self.stamp();

        drop(lock);
        Ok((model, stamp, outcomes))
    }

    /// The record of learned messages; empty when there is none yet.
    fn load_seen(&self) -> Result<Seen, ClassifierError> {
        let path = self.dir.join(SEEN_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Seen::default());
            }
            Err(error) => return Err(ClassifierError::Read { path, error }),
        };
        Seen::decode(&bytes).map_err(|detail| ClassifierError::Corrupt { path, detail })
    }

    /// Creates the classifier directory (and the data directory) for the owner alone.
    fn create_dir(&self) -> Result<(), ClassifierError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)
            .map_err(|error| ClassifierError::Write {
                path: self.dir.clone(),
                error,
            })
    }

    /// Takes the exclusive lock, waiting for another writer to finish.
    fn lock(&self) -> Result<File, ClassifierError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|error| ClassifierError::Lock {
                path: path.clone(),
                error,
            })?;
        file.lock()
            .map_err(|error| ClassifierError::Lock { path, error })?;
        Ok(file)
    }

    /// Writes `bytes` to a temporary file, fsyncs it, renames it over `path` and fsyncs the
    /// directory, so that the rename itself survives a crash.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), ClassifierError> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ClassifierError::Write { path, error }
        };

        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&temporary)
            .map_err(failed(&temporary))?;
        file.write_all(bytes).map_err(failed(&temporary))?;
        file.sync_all().map_err(failed(&temporary))?;
        drop(file);

        std::fs::rename(&temporary, path).map_err(failed(path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(failed(&self.dir))?;
        Ok(())
    }
}

/// Learns one lesson into `model`, as the record says it must.
fn apply(model: &mut Model, seen: &mut Seen, lesson: &Lesson) -> Learned {
    let learned = match seen.label(&lesson.digest) {
        Some(label) if label == lesson.label => return Learned::Already,
        Some(other) => {
            model.unlearn(&lesson.features, other);
            Learned::Relearned
        }
        None => Learned::New,
    };
    model.learn(&lesson.features, lesson.label);
    seen.record(lesson.digest, lesson.label);
    learned
}

/// The file's bytes for `model`.
pub fn encode(model: &Model) -> Vec<u8> {
    let mut entries: Vec<(u32, Counts)> = model.counts.iter().map(|(h, c)| (*h, *c)).collect();
    entries.sort_unstable_by_key(|(hash, _)| *hash);

    let mut bytes = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + CHECKSUM_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&model.spam_messages.to_le_bytes());
    bytes.extend_from_slice(&model.ham_messages.to_le_bytes());
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (hash, counts) in entries {
        bytes.extend_from_slice(&hash.to_le_bytes());
        bytes.extend_from_slice(&counts.spam.to_le_bytes());
        bytes.extend_from_slice(&counts.ham.to_le_bytes());
    }
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

/// The model in `bytes`, or what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<Model, String> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN || &bytes[..8] != MAGIC {
        return Err("not a Moat classifier model (bad magic or too short)".into());
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err("checksum mismatch: the file is damaged or was cut short".into());
    }
    let version = u32::from_le_bytes(array(&body[8..12]));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this Moat reads version {FORMAT_VERSION}"
        ));
    }
    let spam_messages = u64::from_le_bytes(array(&body[12..20]));
    let ham_messages = u64::from_le_bytes(array(&body[20..28]));
    let entries = u64::from_le_bytes(array(&body[28..36]));
    let expected = (entries as usize).checked_mul(ENTRY_LEN);
    if expected != Some(body.len() - HEADER_LEN) {
        return Err(format!(
            "{entries} entries declared but {} octets of entries",
            body.len() - HEADER_LEN
        ));
    }

    let mut counts = std::collections::HashMap::with_capacity(entries as usize);
    for entry in body[HEADER_LEN..].chunks_exact(ENTRY_LEN) {
        let hash = u32::from_le_bytes(array(&entry[0..4]));
        let spam = u32::from_le_bytes(array(&entry[4..8]));
        let ham = u32::from_le_bytes(array(&entry[8..12]));
        counts.insert(hash, Counts { spam, ham });
    }
    Ok(Model {
        spam_messages,
        ham_messages,
        counts,
    })
}

/// Four or eight octets as an array; the callers' slices have that length by construction.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::features::{Features, hash};
    use crate::classifier::model::Label;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn small_model() -> Model {
        let mut model = Model::default();
        let features = Features::from_hashes(vec![hash(&["b", "x"]), hash(&["b", "y"])]);
        model.learn(&features, Label::Spam);
        model.learn(&features, Label::Ham);
        model
    }

    #[test]
    fn a_saved_model_loads_as_it_was() {
        let dir = temp_dir("roundtrip");
        let store = ModelStore::new(&dir);
        store.update(&small_model()).expect("written");
        let (loaded, stamp) = store.load().expect("loads");
        assert_eq!(loaded, small_model());
        assert!(stamp.is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn updates_add_up() {
        let dir = temp_dir("add");
        let store = ModelStore::new(&dir);
        store.update(&small_model()).expect("written");
        let (sum, _) = store.update(&small_model()).expect("written");
        assert_eq!(sum.spam_messages, 2);
        assert_eq!(sum.counts[&hash(&["b", "x"])], Counts { spam: 2, ham: 2 });
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn damage_anywhere_is_detected() {
        let bytes = encode(&small_model());
        for at in [0, 9, 13, HEADER_LEN + 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(decode(&damaged).is_err(), "damage at {at} not seen");
        }
        assert!(decode(&bytes[..bytes.len() - 5]).is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn a_lesson_learned_again_counts_once_and_the_other_class_moves_it() {
        let dir = temp_dir("seen");
        let store = ModelStore::new(&dir);
        let lesson = |label| Lesson {
            digest: MessageDigest::of(b"Message-ID: <1@example.com>\r\n\r\nbody\r\n"),
            features: Features::from_hashes(vec![hash(&["b", "x"])]),
            label,
        };
        let (_, _, first) = store
            .learn(&[lesson(Label::Spam), lesson(Label::Spam)])
            .expect("learned");
        assert_eq!(first, [Learned::New, Learned::Already]);
        let (model, _, moved) = store.learn(&[lesson(Label::Ham)]).expect("learned");
        assert_eq!(moved, [Learned::Relearned]);
        assert_eq!((model.spam_messages, model.ham_messages), (0, 1));
        assert_eq!(model.counts[&hash(&["b", "x"])], Counts { spam: 0, ham: 1 });
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(MODEL_FILE), b"garbage").expect("write");
        let error = ModelStore::new(&dir).load().expect_err("corrupt");
        assert!(error.to_string().contains("model.bin"), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
