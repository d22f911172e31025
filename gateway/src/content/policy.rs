//! The attachment policy: files refused for what they are, whatever the signatures say.
//! Dangerous extensions, a dangerous extension hidden behind a document one, programs and
//! scripts recognised by content, office documents with macros, and encrypted archives that
//! no scanner can look into.
//!
//! Windows scripts (`.js`, `.vbs`, `.ps1`, `.bat`) have no magic bytes and are refused by
//! extension; scripts with an interpreter line (`#!`) are recognised by content, under their
//! own rule `script`, since the SpamAssassin ham corpus shows them in ordinary technical mail
//! (2 of 4,150 messages) where a site may want to let them through.

use memchr::memmem;

use super::magic::FileType;
use super::report::PolicyHit;
use super::settings::AttachmentPolicy;

/// Extensions a sender puts before the real one to pass a program off as a document:
/// `invoice.pdf.exe`.
const DECOY_EXTENSIONS: &[&str] = &[
    "7z", "avi", "bmp", "csv", "doc", "docx", "gif", "htm", "html", "jpeg", "jpg", "mov", "mp3",
    "mp4", "odt", "ods", "pdf", "png", "ppt", "pptx", "rar", "rtf", "tif", "tiff", "txt", "wav",
    "xls", "xlsx", "xml", "zip",
];

/// The VBA project stream of an OLE2 document, as its directory stores the name (UTF-16LE).
/// Word keeps it under `Macros`, Excel under `_VBA_PROJECT_CUR`; both have this stream.
const VBA_PROJECT_UTF16: &[u8] = b"_\0V\0B\0A\0_\0P\0R\0O\0J\0E\0C\0T\0";

/// One file the policy looks at: an attachment or an archive entry.
#[derive(Debug, Clone, Copy)]
pub struct PolicySubject<'a> {
    /// Where it is, for the hits.
    pub part: &'a str,
    /// Its file name, if it has one.
    pub name: Option<&'a str>,
    /// What its content is.
    pub file_type: FileType,
    /// Whether it is an office document carrying macros.
    pub macros: bool,
    /// Whether it is an archive with encrypted entries.
    pub encrypted: bool,
}

/// Every policy rule `subject` breaks.
pub fn check(policy: &AttachmentPolicy, subject: &PolicySubject<'_>, hits: &mut Vec<PolicyHit>) {
    let mut hit = |rule: &'static str| {
        hits.push(PolicyHit {
            rule,
            part: subject.part.to_owned(),
        })
    };
    if let Some(name) = subject.name {
        let (last, before) = extensions(name);
        let dangerous = last.is_some_and(|last| policy.dangerous_extensions.contains(&last));
        if dangerous {
            hit("dangerous_extension");
        }
        let decoy = before.is_some_and(|before| DECOY_EXTENSIONS.contains(&before.as_str()));
        if dangerous && decoy && policy.double_extensions {
            hit("double_extension");
        }
    }
    if policy.executables && subject.file_type.is_executable() {
        hit("executable");
    }
    if policy.scripts && subject.file_type == FileType::Script {
        hit("script");
    }
    if policy.office_macros && subject.macros {
        hit("office_macro");
    }
    if policy.encrypted_archives && subject.encrypted {
        hit("encrypted_archive");
    }
}

/// The last extension of a file name and the one before it, lower case. Windows ignores
/// trailing dots and spaces (`x.exe. ` runs as `x.exe`), and senders pad the decoy with
/// spaces (`x.pdf      .exe`), so both are trimmed away.
fn extensions(name: &str) -> (Option<String>, Option<String>) {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let trimmed = base.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let lower = trimmed.to_lowercase();
    let mut pieces = lower.rsplit('.');
    let last = pieces.next();
    let Some(before_last) = pieces.next() else {
        return (None, None);
    };
    let last = last.map(|e| e.trim().to_owned());
    // Only a name with a third piece has an extension before the last one.
    let before = pieces.next().map(|_| before_last.trim().to_owned());
    (last, before)
}

/// Whether an OLE2 document (doc, xls, ppt) carries a VBA project.
pub fn ole2_has_macros(data: &[u8]) -> bool {
    memmem::find(data, VBA_PROJECT_UTF16).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_hit(name: Option<&str>, file_type: FileType) -> Vec<&'static str> {
        let subject = PolicySubject {
            part: "part",
            name,
            file_type,
            macros: false,
            encrypted: false,
        };
        let mut hits = Vec::new();
        check(&AttachmentPolicy::default(), &subject, &mut hits);
        hits.into_iter().map(|hit| hit.rule).collect()
    }

    #[test]
    fn dangerous_extension_is_refused_in_any_case() {
        assert_eq!(
            rules_hit(Some("setup.EXE"), FileType::Binary),
            ["dangerous_extension"]
        );
        assert_eq!(
            rules_hit(Some("run.vbs"), FileType::Text),
            ["dangerous_extension"]
        );
    }

    #[test]
    fn document_decoy_before_a_program_is_a_double_extension() {
        let hits = rules_hit(Some("invoice.pdf.exe"), FileType::Binary);
        assert_eq!(hits, ["dangerous_extension", "double_extension"]);
        let padded = rules_hit(Some("invoice.pdf        .scr"), FileType::Binary);
        assert_eq!(padded, ["dangerous_extension", "double_extension"]);
    }

    #[test]
    fn trailing_dots_and_spaces_do_not_hide_the_extension() {
        assert_eq!(
            rules_hit(Some("x.exe. "), FileType::Binary),
            ["dangerous_extension"]
        );
    }

    #[test]
    fn harmless_names_pass() {
        for name in [
            "report.pdf",
            "photo.2024.jpg",
            "archive.tar.gz",
            "README",
            "exe",
        ] {
            assert!(rules_hit(Some(name), FileType::Binary).is_empty(), "{name}");
        }
    }

    #[test]
    fn programs_are_refused_by_content_whatever_their_name() {
        assert_eq!(
            rules_hit(Some("photo.jpg"), FileType::WindowsExecutable),
            ["executable"]
        );
        assert_eq!(rules_hit(None, FileType::Script), ["script"]);
        assert!(rules_hit(None, FileType::Pdf).is_empty());
    }

    #[test]
    fn macros_and_encryption_are_refused_when_on() {
        let subject = PolicySubject {
            part: "a.zip",
            name: Some("a.zip"),
            file_type: FileType::Zip,
            macros: true,
            encrypted: true,
        };
        let mut hits = Vec::new();
        check(&AttachmentPolicy::default(), &subject, &mut hits);
        let rules: Vec<_> = hits.iter().map(|hit| hit.rule).collect();
        assert_eq!(rules, ["office_macro", "encrypted_archive"]);

        let off = AttachmentPolicy {
            office_macros: false,
            encrypted_archives: false,
            ..AttachmentPolicy::default()
        };
        let mut hits = Vec::new();
        check(&off, &subject, &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn finds_vba_project_in_ole2_directory() {
        let mut doc = vec![0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
        doc.extend_from_slice(&[0; 64]);
        assert!(!ole2_has_macros(&doc));
        doc.extend_from_slice(VBA_PROJECT_UTF16);
        assert!(ole2_has_macros(&doc));
    }
}
