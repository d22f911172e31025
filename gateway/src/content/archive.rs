//! ZIP archives opened in memory: every entry listed (with its encryption flag), and the
//! unencrypted ones unpacked within a budget so the scanners can look inside, nested
//! archives included.
//!
//! Office Open XML documents are ZIP archives too; their macros live in an entry named
//! `vbaProject.bin` (or, for Excel 4 macros, under `macrosheets/`), which is how they are
//! found without understanding the document.

use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::magic::FileType;
use super::report::{ArchiveEntry, ArchiveListing};

/// How deep archives inside archives are opened. ClamAV's default is 17 levels, for every
/// format it knows; three ZIP levels cover real mail, and deeper nesting is itself suspicious
/// and reported as incomplete.
pub const MAX_ARCHIVE_DEPTH: usize = 3;

/// How many entries of one message's archives are listed and unpacked at most, against
/// archives of a million empty files (ClamAV's MaxFiles is 10,000 for everything it opens).
pub const MAX_ARCHIVE_ENTRIES: usize = 1_000;

/// What may still be unpacked for one message: octets and entries.
#[derive(Debug)]
pub struct Budget {
    /// Octets that may still be unpacked.
    pub bytes: usize,
    /// Entries that may still be listed.
    pub entries: usize,
}

impl Budget {
    /// A budget of `bytes` octets and [`MAX_ARCHIVE_ENTRIES`] entries.
    pub fn new(bytes: usize) -> Budget {
        Budget {
            bytes,
            entries: MAX_ARCHIVE_ENTRIES,
        }
    }
}

/// One unpacked file.
#[derive(Debug)]
pub struct Unpacked {
    /// Its path from the outermost archive, as `inner.zip/file.exe`.
    pub name: String,
    /// Its content.
    pub data: Vec<u8>,
    /// What its content is.
    pub detected_type: FileType,
}

/// An archive opened.
#[derive(Debug, Default)]
pub struct Opened {
    /// Every entry, nested ones with their path.
    pub listing: ArchiveListing,
    /// The entries unpacked, for the scanners.
    pub files: Vec<Unpacked>,
    /// Whether this is an Office Open XML document.
    pub office_document: bool,
    /// Whether an Office Open XML document here (or nested) carries macros.
    pub macros: bool,
    /// What could not be opened or unpacked, and why.
    pub incomplete: Vec<String>,
}

/// Opens the ZIP archive `data`, spending `budget` on what is unpacked.
pub fn open_zip(data: &[u8], budget: &mut Budget) -> Opened {
    let mut opened = Opened::default();
    open_into(data, "", 0, budget, &mut opened);
    opened
}

fn open_into(data: &[u8], prefix: &str, depth: usize, budget: &mut Budget, opened: &mut Opened) {
    let mut archive = match ZipArchive::new(Cursor::new(data)) {
        Ok(archive) => archive,
        Err(e) => {
            opened
                .incomplete
                .push(format!("zip {prefix}: cannot be read: {e}"));
            return;
        }
    };

    for index in 0..archive.len() {
        if budget.entries == 0 {
            opened.incomplete.push(format!(
                "zip {prefix}: more than {MAX_ARCHIVE_ENTRIES} entries, the rest not listed"
            ));
            return;
        }
        budget.entries -= 1;
        let Some(entry) = list_entry(&mut archive, index, prefix, opened) else {
            continue;
        };
        let leaf = entry.name.rsplit('/').next().unwrap_or("");
        if depth == 0 && entry.name == "[Content_Types].xml" {
            opened.office_document = true;
        }
        if is_macro_entry(&entry.name) {
            opened.macros = true;
        }
        let skip = entry.encrypted || leaf.is_empty();
        let position = opened.listing.entries.len();
        opened.listing.encrypted |= entry.encrypted;
        opened.listing.entries.push(entry);
        if skip {
            continue;
        }
        if let Some(file) = unpack(&mut archive, index, position, budget, opened) {
            let nested = matches!(file.detected_type, FileType::Zip | FileType::OfficeOpenXml);
            if nested && depth + 1 < MAX_ARCHIVE_DEPTH {
                let prefix = format!("{}/", file.name);
                open_into(&file.data, &prefix, depth + 1, budget, opened);
            } else if nested {
                opened.incomplete.push(format!(
                    "zip {}: nested deeper than {MAX_ARCHIVE_DEPTH} archives, not opened",
                    file.name
                ));
            }
            opened.files.push(file);
        }
    }
}

/// The entry's name and flags from the central directory, without reading its data.
fn list_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    prefix: &str,
    opened: &mut Opened,
) -> Option<ArchiveEntry> {
    let entry = match archive.by_index_raw(index) {
        Ok(entry) => entry,
        Err(e) => {
            opened
                .incomplete
                .push(format!("zip {prefix}: entry {index} cannot be read: {e}"));
            return None;
        }
    };
    let name = match entry.name() {
        Ok(name) => name.into_owned(),
        Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
    };
    Some(ArchiveEntry {
        name: format!("{prefix}{name}"),
        size: entry.size(),
        encrypted: entry.encrypted(),
        detected_type: None,
    })
}

/// Unpacks entry `index` if the budget allows, and records its detected type in the listing.
fn unpack(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    position: usize,
    budget: &mut Budget,
    opened: &mut Opened,
) -> Option<Unpacked> {
    let name = opened.listing.entries[position].name.clone();
    let declared = opened.listing.entries[position].size;
    if declared > budget.bytes as u64 {
        opened.incomplete.push(format!(
            "zip entry {name}: {declared} octets unpacked is over what is left of max_scan_size"
        ));
        return None;
    }

    let mut entry = match archive.by_index(index) {
        Ok(entry) => entry,
        Err(e) => {
            opened
                .incomplete
                .push(format!("zip entry {name}: cannot be unpacked: {e}"));
            return None;
        }
    };
    // The declared size may lie: read at most what the budget has left, plus one octet to
    // notice a lie.
    let mut data = Vec::with_capacity(declared as usize);
    let limit = budget.bytes as u64 + 1;
    if let Err(e) = (&mut entry).take(limit).read_to_end(&mut data) {
        opened
            .incomplete
            .push(format!("zip entry {name}: cannot be unpacked: {e}"));
        return None;
    }
    if data.len() > budget.bytes {
        budget.bytes = 0;
        opened.incomplete.push(format!(
            "zip entry {name}: unpacks to more than is left of max_scan_size"
        ));
        return None;
    }
    budget.bytes -= data.len();

    let detected_type = FileType::detect(&data);
    opened.listing.entries[position].detected_type = Some(detected_type);
    Some(Unpacked {
        name,
        data,
        detected_type,
    })
}

/// Entries that hold Office macros: VBA projects, and Excel 4 macro sheets.
fn is_macro_entry(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with("vbaproject.bin") || lower.contains("macrosheets/")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in files {
            let options =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            writer.start_file(*name, options).expect("start file");
            writer.write_all(data).expect("write file");
        }
        writer.finish().expect("finish zip").into_inner()
    }

    /// Sets the encryption flag (general purpose bit 0) of every entry, local and central.
    fn mark_encrypted(mut zip: Vec<u8>) -> Vec<u8> {
        for signature in [&b"PK\x03\x04"[..], b"PK\x01\x02"] {
            let flag_offset = if signature == b"PK\x03\x04" { 6 } else { 8 };
            let mut at = 0;
            while let Some(found) = zip[at..].windows(4).position(|w| w == signature) {
                let start = at + found;
                zip[start + flag_offset] |= 1;
                at = start + 4;
            }
        }
        zip
    }

    #[test]
    fn lists_and_unpacks_deflated_entries() {
        let zip = zip_of(&[
            ("readme.txt", b"hello"),
            ("bin/tool.exe", b"MZ\x90\x00\x03\x00"),
        ]);
        let opened = open_zip(&zip, &mut Budget::new(1 << 20));
        let names: Vec<&str> = opened
            .listing
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["readme.txt", "bin/tool.exe"]);
        assert_eq!(opened.files.len(), 2);
        assert_eq!(opened.files[1].detected_type, FileType::WindowsExecutable);
        assert!(!opened.listing.encrypted);
        assert!(opened.incomplete.is_empty(), "{:?}", opened.incomplete);
    }

    #[test]
    fn opens_nested_archives_with_their_path() {
        let inner = zip_of(&[("eicar.com", b"X5O!P%@AP")]);
        let outer = zip_of(&[("inner.zip", &inner)]);
        let opened = open_zip(&outer, &mut Budget::new(1 << 20));
        let names: Vec<&str> = opened
            .listing
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["inner.zip", "inner.zip/eicar.com"]);
        assert!(opened.files.iter().any(|f| f.name == "inner.zip/eicar.com"));
    }

    #[test]
    fn stops_opening_below_the_depth_limit() {
        let mut archive = zip_of(&[("deep.txt", b"bottom")]);
        for level in 0..MAX_ARCHIVE_DEPTH {
            archive = zip_of(&[(&format!("level{level}.zip"), &archive)]);
        }
        let opened = open_zip(&archive, &mut Budget::new(1 << 20));
        assert!(!opened.files.iter().any(|f| f.name.ends_with("deep.txt")));
        assert!(
            opened
                .incomplete
                .iter()
                .any(|r| r.contains("nested deeper"))
        );
    }

    #[test]
    fn encrypted_entries_are_listed_but_not_unpacked() {
        let zip = mark_encrypted(zip_of(&[("secret.exe", b"MZ")]));
        let opened = open_zip(&zip, &mut Budget::new(1 << 20));
        assert!(opened.listing.encrypted);
        assert!(opened.listing.entries[0].encrypted);
        assert!(opened.files.is_empty());
    }

    #[test]
    fn budget_caps_what_is_unpacked() {
        let big = vec![b'a'; 10_000];
        let zip = zip_of(&[("big.txt", &big), ("small.txt", b"x")]);
        let opened = open_zip(&zip, &mut Budget::new(5_000));
        assert_eq!(opened.files.len(), 1);
        assert_eq!(opened.files[0].name, "small.txt");
        assert!(opened.incomplete.iter().any(|r| r.contains("big.txt")));
    }

    #[test]
    fn finds_macros_in_office_documents() {
        let docm = zip_of(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", b"<w:document/>"),
            ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0"),
        ]);
        let opened = open_zip(&docm, &mut Budget::new(1 << 20));
        assert!(opened.office_document);
        assert!(opened.macros);

        let docx = zip_of(&[("[Content_Types].xml", b"<Types/>")]);
        assert!(!open_zip(&docx, &mut Budget::new(1 << 20)).macros);
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        let opened = open_zip(
            b"PK\x03\x04 this is not really a zip",
            &mut Budget::new(1 << 20),
        );
        assert!(opened.listing.entries.is_empty());
        assert_eq!(opened.incomplete.len(), 1);
    }
}
