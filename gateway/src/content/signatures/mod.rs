//! ClamAV's signature formats, read by the built-in scanner: a directory of `.hdb` and `.hsb`
//! hash signatures ([`hash`]) and `.ndb` body signatures ([`body`], searched by [`matcher`]).
//!
//! The same files can be given to clamd, which is how the two anti-virus layers are compared.
//! Packed official databases (`.cvd`, `.cld`) and the other formats (logical `.ldb`, YARA,
//! PE-section `.mdb`) are not read; each such file is named in a warning.

mod body;
mod hash;
mod matcher;

use std::fs;
use std::path::{Path, PathBuf};

use super::error::ContentError;
use super::magic::FileType;
use body::{BodySignature, LineIssue, Offset};
use hash::HashSignatures;
use matcher::BodyMatcher;

/// How many skipped signatures of one file are named in warnings; the rest are counted.
const SKIPPED_NAMED: usize = 5;

/// What is being scanned, for the body signatures' target types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanTarget {
    /// The whole message as received (target type 4, mail).
    Message,
    /// A text part (target type 7; ClamAV normalises text first, this scanner does not).
    Text,
    /// An HTML part (target type 3; ClamAV normalises HTML first, this scanner does not).
    Html,
    /// An attachment or archive entry, by what its content is.
    File(FileType),
}

impl ScanTarget {
    /// Whether a body signature of ClamAV target type `target` applies.
    fn accepts(self, target: u8) -> bool {
        let file = match self {
            ScanTarget::File(file_type) => Some(file_type),
            _ => None,
        };
        match target {
            0 => true,
            1 => file == Some(FileType::WindowsExecutable),
            2 => file == Some(FileType::Ole2),
            3 => self == ScanTarget::Html || file == Some(FileType::Html),
            4 => self == ScanTarget::Message,
            5 => file.is_some_and(FileType::is_image),
            6 => file == Some(FileType::Elf),
            7 => self == ScanTarget::Text || file == Some(FileType::Text),
            9 => file == Some(FileType::MachO),
            10 => file == Some(FileType::Pdf),
            12 => file == Some(FileType::JavaClass),
            _ => false,
        }
    }
}

/// Every signature loaded from one directory.
///
/// Body signatures are split in two: those for any file at any offset ("floating"), and the
/// others. A part that the parser did not have to decode is a slice of the raw message, which
/// is always scanned; floating signatures found nothing in it there, so they need not search
/// it again. That halves the work on plain-text mail, most of the corpus.
#[derive(Debug)]
pub struct SignatureDb {
    hashes: HashSignatures,
    floating: BodyMatcher,
    anchored: BodyMatcher,
    /// Signatures skipped as unsupported.
    skipped: usize,
}

impl SignatureDb {
    /// Loads every `.hdb`, `.hsb` and `.ndb` file of `dir`, in name order.
    ///
    /// # Errors
    /// [`ContentError::Read`] when the directory or a file cannot be read,
    /// [`ContentError::Signature`] for a malformed line, [`ContentError::NoSignatures`] when
    /// nothing usable was found.
    pub fn load_dir(dir: &Path) -> Result<SignatureDb, ContentError> {
        let read_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ContentError::Read { path, source }
        };
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(read_error(dir))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect();
        files.sort();

        let mut hashes = HashSignatures::default();
        let mut bodies = Vec::new();
        let mut skipped = 0;
        for path in &files {
            let extension = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            match extension.as_str() {
                "hdb" | "hsb" => {
                    let text = fs::read_to_string(path).map_err(read_error(path))?;
                    load_hashes(&text, path, extension == "hdb", &mut hashes)?;
                }
                "ndb" => {
                    let text = fs::read_to_string(path).map_err(read_error(path))?;
                    skipped += load_bodies(&text, path, &mut bodies)?;
                }
                "cvd" | "cld" | "cud" | "ldb" | "yar" | "yara" | "mdb" | "msb" => {
                    let file = path.display();
                    tracing::warn!(%file, "signature format not read by the built-in scanner");
                }
                _ => tracing::debug!(file = %path.display(), "not a signature file, ignored"),
            }
        }

        let (floating, anchored) = bodies
            .into_iter()
            .partition(|signature| signature.target == 0 && signature.offset == Offset::Any);
        let compile = |signatures| {
            BodyMatcher::new(signatures).map_err(|e| ContentError::Signature {
                path: dir.to_owned(),
                line: 0,
                detail: format!("the body signatures cannot be compiled: {e}"),
            })
        };
        let (floating, anchored) = (compile(floating)?, compile(anchored)?);
        if hashes.is_empty() && floating.is_empty() && anchored.is_empty() {
            return Err(ContentError::NoSignatures {
                path: dir.to_owned(),
            });
        }
        tracing::info!(
            dir = %dir.display(),
            hash_signatures = hashes.len(),
            body_signatures = floating.len() + anchored.len(),
            skipped,
            "signatures loaded"
        );
        Ok(SignatureDb {
            hashes,
            floating,
            anchored,
            skipped,
        })
    }

    /// Signatures loaded, hash and body.
    pub fn len(&self) -> usize {
        self.hashes.len() + self.floating.len() + self.anchored.len()
    }

    /// Signatures skipped as unsupported.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The names of the signatures matching `data`: a hash signature first, then body ones.
    /// `in_raw_message` says that `data` is a slice of the raw message, already searched by
    /// the floating signatures.
    pub fn scan(&self, data: &[u8], target: ScanTarget, in_raw_message: bool) -> Vec<&str> {
        let mut names: Vec<&str> = self.hashes.find(data).into_iter().collect();
        if !in_raw_message {
            names.extend(self.floating.scan(data, |_| true));
        }
        names.extend(self.anchored.scan(data, |kind| target.accepts(kind)));
        names
    }
}

fn load_hashes(
    text: &str,
    path: &Path,
    md5_only: bool,
    hashes: &mut HashSignatures,
) -> Result<(), ContentError> {
    for (number, line) in text.lines().enumerate() {
        hashes
            .add_line(line, md5_only)
            .map_err(|detail| ContentError::Signature {
                path: path.to_owned(),
                line: number + 1,
                detail,
            })?;
    }
    Ok(())
}

/// Adds a `.ndb` file's signatures; returns how many were skipped.
fn load_bodies(
    text: &str,
    path: &Path,
    bodies: &mut Vec<BodySignature>,
) -> Result<usize, ContentError> {
    let mut skipped = 0;
    for (number, line) in text.lines().enumerate() {
        match BodySignature::parse(line) {
            Ok(Some(signature)) => bodies.push(signature),
            Ok(None) => {}
            Err(LineIssue::Unsupported(what)) => {
                skipped += 1;
                if skipped <= SKIPPED_NAMED {
                    let signature = line.split(':').next().unwrap_or("");
                    let (file, line) = (path.display(), number + 1);
                    let unsupported = what.as_str();
                    tracing::warn!(%file, line, signature, unsupported, "signature skipped");
                }
            }
            Err(LineIssue::Malformed(detail)) => {
                return Err(ContentError::Signature {
                    path: path.to_owned(),
                    line: number + 1,
                    detail,
                });
            }
        }
    }
    if skipped > SKIPPED_NAMED {
        tracing::warn!(file = %path.display(), skipped, "signatures skipped in all");
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "moat-signatures-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn loads_a_directory_of_hash_and_body_signatures() {
        let dir = temp_dir("load");
        fs::write(
            dir.join("test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Test.Eicar.Hash\n",
        )
        .expect("write");
        fs::write(
            dir.join("test.ndb"),
            "Test.Eicar.Body:0:*:45494341522d\nX:0:EP+0:4d5a\n",
        )
        .expect("write");
        fs::write(dir.join("README"), "not signatures").expect("write");
        let db = SignatureDb::load_dir(&dir).expect("loads");
        assert_eq!(db.len(), 2);
        assert_eq!(db.skipped(), 1);
        assert_eq!(
            db.scan(EICAR, ScanTarget::File(FileType::Text), false),
            ["Test.Eicar.Hash", "Test.Eicar.Body"]
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = temp_dir("empty");
        let error = SignatureDb::load_dir(&dir).expect_err("refused");
        assert!(
            matches!(error, ContentError::NoSignatures { .. }),
            "{error}"
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = temp_dir("malformed");
        fs::write(dir.join("bad.ndb"), "# fine\nBad:0:*:4d5\n").expect("write");
        let error = SignatureDb::load_dir(&dir)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("bad.ndb line 2"), "{error}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn target_types_select_what_they_apply_to() {
        let pe = ScanTarget::File(FileType::WindowsExecutable);
        assert!(pe.accepts(0) && pe.accepts(1) && !pe.accepts(6) && !pe.accepts(4));
        let mail = ScanTarget::Message;
        assert!(mail.accepts(0) && mail.accepts(4) && !mail.accepts(7) && !mail.accepts(1));
        assert!(ScanTarget::Text.accepts(7) && ScanTarget::Html.accepts(3));
    }
}
