//! What a file is, told from its first bytes rather than its name or declared type, which the
//! sender chooses.
//!
//! Only the kinds the checks act on are told apart: programs and scripts (the attachment
//! policy), archives (listed and unpacked), office containers (macros), and the kinds ClamAV's
//! body signatures can be restricted to (PE, ELF, Mach-O, OLE2, PDF, images, HTML).

use std::fmt;

/// The OLE2 compound file header: Word, Excel and PowerPoint 97-2003, MSI installers.
const OLE2_MAGIC: &[u8] = &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];

/// The Windows shortcut header (size 0x4c, then the shell link CLSID's first bytes).
const LNK_MAGIC: &[u8] = &[0x4c, 0x00, 0x00, 0x00, 0x01, 0x14, 0x02, 0x00];

/// Where an ISO 9660 image has its volume descriptor identifier.
const ISO9660_OFFSET: usize = 0x8001;

/// How far into a file `%PDF-` may appear: readers accept junk before it, and so must we.
const PDF_SEARCH: usize = 1024;

/// How many bytes are looked at to tell text from binary.
const TEXT_SAMPLE: usize = 4096;

/// A Mach-O universal binary has few architectures; a Java class file has its version where
/// the count would be, and every Java version is above this.
const MAX_FAT_ARCHITECTURES: u32 = 30;

/// A kind of file, recognised by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileType {
    /// Nothing at all.
    Empty,
    /// A Windows or DOS program (`MZ`).
    WindowsExecutable,
    /// A Unix program (ELF).
    Elf,
    /// A macOS program (Mach-O, thin or universal).
    MachO,
    /// A Java class file.
    JavaClass,
    /// A script with an interpreter line (`#!`).
    Script,
    /// A Windows shortcut, which can run any command.
    WindowsShortcut,
    /// A ZIP archive.
    Zip,
    /// An Office Open XML document (a ZIP with `[Content_Types].xml`): docx, xlsx, pptx.
    OfficeOpenXml,
    /// An OLE2 compound file: doc, xls, ppt, msi.
    Ole2,
    /// A RAR archive.
    Rar,
    /// A 7-Zip archive.
    SevenZip,
    /// gzip-compressed data.
    Gzip,
    /// bzip2-compressed data.
    Bzip2,
    /// xz-compressed data.
    Xz,
    /// A Microsoft cabinet.
    Cabinet,
    /// An ISO 9660 disk image.
    Iso9660,
    /// A PDF document.
    Pdf,
    /// An RTF document.
    Rtf,
    /// A PNG image.
    Png,
    /// A JPEG image.
    Jpeg,
    /// A GIF image.
    Gif,
    /// HTML.
    Html,
    /// Text (ASCII or UTF-8, or mostly printable).
    Text,
    /// Anything else.
    Binary,
}

impl FileType {
    /// Recognises `data` by its first bytes.
    pub fn detect(data: &[u8]) -> FileType {
        if data.is_empty() {
            return FileType::Empty;
        }
        if let Some(kind) = by_prefix(data) {
            return kind;
        }
        if data.get(ISO9660_OFFSET..ISO9660_OFFSET + 5) == Some(b"CD001") {
            return FileType::Iso9660;
        }
        let head = &data[..data.len().min(PDF_SEARCH)];
        if head.windows(5).any(|w| w == b"%PDF-") {
            return FileType::Pdf;
        }
        if looks_like_html(data) {
            return FileType::Html;
        }
        if looks_like_text(data) {
            return FileType::Text;
        }
        FileType::Binary
    }

    /// The MIME type this kind is usually declared as.
    pub fn mime_type(self) -> &'static str {
        match self {
            FileType::Empty => "application/x-empty",
            FileType::WindowsExecutable => "application/x-dosexec",
            FileType::Elf => "application/x-executable",
            FileType::MachO => "application/x-mach-binary",
            FileType::JavaClass => "application/java-vm",
            FileType::Script => "text/x-script",
            FileType::WindowsShortcut => "application/x-ms-shortcut",
            FileType::Zip => "application/zip",
            FileType::OfficeOpenXml => "application/vnd.openxmlformats-officedocument",
            FileType::Ole2 => "application/x-ole-storage",
            FileType::Rar => "application/vnd.rar",
            FileType::SevenZip => "application/x-7z-compressed",
            FileType::Gzip => "application/gzip",
            FileType::Bzip2 => "application/x-bzip2",
            FileType::Xz => "application/x-xz",
            FileType::Cabinet => "application/vnd.ms-cab-compressed",
            FileType::Iso9660 => "application/x-iso9660-image",
            FileType::Pdf => "application/pdf",
            FileType::Rtf => "text/rtf",
            FileType::Png => "image/png",
            FileType::Jpeg => "image/jpeg",
            FileType::Gif => "image/gif",
            FileType::Html => "text/html",
            FileType::Text => "text/plain",
            FileType::Binary => "application/octet-stream",
        }
    }

    /// Whether this kind is a program that runs when opened: the attachment policy's
    /// "executable". Scripts are told apart ([`FileType::Script`]) since they also travel in
    /// ordinary technical mail.
    pub fn is_executable(self) -> bool {
        matches!(
            self,
            FileType::WindowsExecutable
                | FileType::Elf
                | FileType::MachO
                | FileType::JavaClass
                | FileType::WindowsShortcut
        )
    }

    /// Whether this kind is an image (ClamAV's target type 5).
    pub fn is_image(self) -> bool {
        matches!(self, FileType::Png | FileType::Jpeg | FileType::Gif)
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime_type())
    }
}

/// The kinds with a fixed signature at offset 0.
fn by_prefix(data: &[u8]) -> Option<FileType> {
    const PREFIXES: &[(&[u8], FileType)] = &[
        (b"\x7fELF", FileType::Elf),
        (&[0xfe, 0xed, 0xfa, 0xce], FileType::MachO),
        (&[0xfe, 0xed, 0xfa, 0xcf], FileType::MachO),
        (&[0xce, 0xfa, 0xed, 0xfe], FileType::MachO),
        (&[0xcf, 0xfa, 0xed, 0xfe], FileType::MachO),
        (b"#!", FileType::Script),
        (LNK_MAGIC, FileType::WindowsShortcut),
        (b"PK\x03\x04", FileType::Zip),
        (b"PK\x05\x06", FileType::Zip),
        (OLE2_MAGIC, FileType::Ole2),
        (b"Rar!\x1a\x07", FileType::Rar),
        (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c], FileType::SevenZip),
        (&[0x1f, 0x8b], FileType::Gzip),
        (b"BZh", FileType::Bzip2),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], FileType::Xz),
        (b"MSCF\0\0\0\0", FileType::Cabinet),
        (b"{\\rtf", FileType::Rtf),
        (&[0x89, b'P', b'N', b'G'], FileType::Png),
        (&[0xff, 0xd8, 0xff], FileType::Jpeg),
        (b"GIF87a", FileType::Gif),
        (b"GIF89a", FileType::Gif),
    ];
    if data.starts_with(&[0xca, 0xfe, 0xba, 0xbe]) {
        return Some(fat_binary_or_java(data));
    }
    if data.starts_with(b"MZ") && (has_pe_header(data) || !looks_like_text(data)) {
        return Some(FileType::WindowsExecutable);
    }
    PREFIXES
        .iter()
        .find(|(prefix, _)| data.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// `CAFEBABE` starts both a Mach-O universal binary and a Java class file; the next word is an
/// architecture count in the first and a version (45 or more) in the second.
fn fat_binary_or_java(data: &[u8]) -> FileType {
    let next = data
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match next {
        Some(count) if count < MAX_FAT_ARCHITECTURES => FileType::MachO,
        _ => FileType::JavaClass,
    }
}

/// A PE file has `PE\0\0` where the DOS header's `e_lfanew` (at 0x3c) points. Checked so that a
/// text that happens to start with "MZ" is not taken for a program; a DOS program without a
/// PE header is still one when the rest is binary.
fn has_pe_header(data: &[u8]) -> bool {
    let Some(field) = data.get(0x3c..0x40) else {
        return false;
    };
    let offset = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize;
    offset
        .checked_add(4)
        .and_then(|end| data.get(offset..end))
        .is_some_and(|signature| signature == b"PE\0\0")
}

/// An HTML document starts, after white space, with a doctype, a comment or one of the
/// outer tags.
fn looks_like_html(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let head = &data[start..data.len().min(start + 16)];
    let starts =
        |tag: &[u8]| head.len() >= tag.len() && head[..tag.len()].eq_ignore_ascii_case(tag);
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<!--",
    ]
    .iter()
    .any(|tag| starts(tag))
}

/// Text has no NUL and few control characters in its first few kilobytes.
fn looks_like_text(data: &[u8]) -> bool {
    let sample = &data[..data.len().min(TEXT_SAMPLE)];
    if sample.contains(&0) {
        return false;
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
        .count();
    control * 100 <= sample.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest PE header: `MZ`, `e_lfanew` = 0x40, `PE\0\0` there.
    fn tiny_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 0x48];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe
    }

    #[test]
    fn recognises_programs_by_magic_whatever_their_name() {
        assert_eq!(FileType::detect(&tiny_pe()), FileType::WindowsExecutable);
        assert_eq!(
            FileType::detect(b"MZ\x90\x00\x03\x00"),
            FileType::WindowsExecutable
        );
        assert_eq!(FileType::detect(b"\x7fELF\x02\x01\x01"), FileType::Elf);
        assert_eq!(
            FileType::detect(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]),
            FileType::MachO
        );
        assert_eq!(FileType::detect(b"#!/bin/sh\nrm -rf ~\n"), FileType::Script);
        assert!(FileType::detect(LNK_MAGIC).is_executable());
    }

    #[test]
    fn tells_universal_binary_from_java_class() {
        assert_eq!(
            FileType::detect(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2]),
            FileType::MachO
        );
        assert_eq!(
            FileType::detect(&[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52]),
            FileType::JavaClass
        );
    }

    #[test]
    fn recognises_archives_and_documents() {
        assert_eq!(FileType::detect(b"PK\x03\x04\x14\x00"), FileType::Zip);
        assert_eq!(FileType::detect(OLE2_MAGIC), FileType::Ole2);
        assert_eq!(FileType::detect(b"Rar!\x1a\x07\x01\x00"), FileType::Rar);
        assert_eq!(FileType::detect(b"%PDF-1.7\n"), FileType::Pdf);
        assert_eq!(FileType::detect(b"\r\n\r\n%PDF-1.4\n"), FileType::Pdf);
        assert_eq!(FileType::detect(b"{\\rtf1\\ansi"), FileType::Rtf);
    }

    #[test]
    fn recognises_disk_image_by_its_volume_descriptor() {
        let mut image = vec![0u8; ISO9660_OFFSET + 8];
        image[ISO9660_OFFSET..ISO9660_OFFSET + 5].copy_from_slice(b"CD001");
        assert_eq!(FileType::detect(&image), FileType::Iso9660);
    }

    #[test]
    fn tells_text_html_and_binary_apart() {
        assert_eq!(FileType::detect(b"Hello,\r\nworld\r\n"), FileType::Text);
        assert_eq!(FileType::detect("Grüße\n".as_bytes()), FileType::Text);
        assert_eq!(FileType::detect(b"  <!DOCTYPE html><p>x"), FileType::Html);
        assert_eq!(FileType::detect(b"<HTML><body>"), FileType::Html);
        assert_eq!(FileType::detect(&[0, 1, 2, 3, 0xff]), FileType::Binary);
        assert_eq!(FileType::detect(b""), FileType::Empty);
    }

    #[test]
    fn text_starting_with_mz_is_not_a_program() {
        assert_eq!(FileType::detect(b"MZ is a postcode area"), FileType::Text);
    }
}
