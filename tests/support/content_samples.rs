//! Test material for the content checks, built in memory: the EICAR and GTUBE test strings, a
//! custom signature, MIME messages with attachments, and ZIP archives (stored, optionally
//! flagged as encrypted), written by hand so the tests need no archiver.
//!
//! A test file includes it with `#[path = "support/content_samples.rs"] mod samples;`.

#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// The EICAR anti-virus test file (68 octets): every scanner is expected to detect it.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// EICAR's MD5, for a `.hdb` line.
pub const EICAR_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

/// SpamAssassin's GTUBE.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// Text that the custom body signature of [`write_signatures`] matches: the signature has a
/// bounded gap and a star between its fixed runs.
pub const CUSTOM_MALWARE: &str = "MOAT-TEST-MALWARE:v2:payload-for-the-scanner-tests";

/// The signature names of [`write_signatures`].
pub const EICAR_HASH_NAME: &str = "Moat.Test.Eicar.Hash";
/// The name of the EICAR body signature.
pub const EICAR_BODY_NAME: &str = "Moat.Test.Eicar.Body";
/// The name of the custom body signature.
pub const CUSTOM_NAME: &str = "Moat.Test.Custom";

/// Writes the test signature set into `dir`: `moat-test.hdb` (EICAR by MD5) and
/// `moat-test.ndb` (EICAR's distinctive middle, and the custom signature with wildcards).
/// clamd and the built-in scanner load the very same files.
pub fn write_signatures(dir: &Path) {
    fs::create_dir_all(dir).expect("create the signature directory");
    fs::write(
        dir.join("moat-test.hdb"),
        format!("{EICAR_MD5}:68:{EICAR_HASH_NAME}\n"),
    )
    .expect("write moat-test.hdb");
    let eicar_body = hex(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE");
    // MOAT-TEST-MALWARE, then 1 to 4 bytes (":v2:"), then "payload", then anything, then
    // "scanner-tests".
    let custom = format!(
        "{}{{1-4}}{}*{}",
        hex(b"MOAT-TEST-MALWARE"),
        hex(b"payload"),
        hex(b"scanner-tests")
    );
    fs::write(
        dir.join("moat-test.ndb"),
        format!("{EICAR_BODY_NAME}:0:*:{eicar_body}\n{CUSTOM_NAME}:0:*:{custom}\n"),
    )
    .expect("write moat-test.ndb");
}

/// Writes only the EICAR hash signature (`moat-test.hdb`) into `dir`. clamd reports the first
/// signature that matches a stream, so each signature is checked alone too.
pub fn write_eicar_hash_only(dir: &Path) {
    write_signatures(dir);
    fs::remove_file(dir.join("moat-test.ndb")).expect("remove moat-test.ndb");
}

/// Writes only the body signatures (`moat-test.ndb`) into `dir`.
pub fn write_body_only(dir: &Path) {
    write_signatures(dir);
    fs::remove_file(dir.join("moat-test.hdb")).expect("remove moat-test.hdb");
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with line breaks every 76 characters, as MIME wants.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (index, chunk) in data.chunks(3).enumerate() {
        if index > 0 && index % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One attachment of [`message_with`].
pub struct Part<'a> {
    /// Its file name.
    pub name: &'a str,
    /// Its declared Content-Type.
    pub content_type: &'a str,
    /// Its bytes.
    pub data: &'a [u8],
}

/// A multipart/mixed message with a text part and these attachments, base64-encoded.
pub fn message_with(subject: &str, text: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = format!(
        "From: sender@example.com\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n\
Message-ID: <test@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=-moat-boundary\"\r\n\r\n\
This is a multi-part message in MIME format.\r\n\
--=-moat-boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    );
    for part in parts {
        out.push_str(&format!(
            "--=-moat-boundary\r\nContent-Type: {}; name=\"{}\"\r\n\
Content-Disposition: attachment; filename=\"{}\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            part.content_type,
            part.name,
            part.name,
            base64(part.data)
        ));
    }
    out.push_str("--=-moat-boundary--\r\n");
    out.into_bytes()
}

/// A plain text message.
pub fn text_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.com\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n\
Message-ID: <plain@example.com>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A ZIP archive of stored (uncompressed) files.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    build_zip(files, false)
}

/// A ZIP archive whose entries are flagged as encrypted (general purpose bit 0), with their
/// data left as it is: enough for any reader of the central directory to see encryption.
pub fn zip_encrypted(files: &[(&str, &[u8])]) -> Vec<u8> {
    build_zip(files, true)
}

fn build_zip(files: &[(&str, &[u8])], encrypted: bool) -> Vec<u8> {
    let flags: u16 = if encrypted { 1 } else { 0 };
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        // Local file header (APPNOTE 4.3.7).
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&0u32.to_le_bytes()); // time and date
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory header (APPNOTE 4.3.12).
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&flags.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    let count = files.len() as u16;
    out.extend_from_slice(&central);
    // End of central directory (APPNOTE 4.3.16).
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit: slow, but these archives are small.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The smallest Windows program header: `MZ`, `e_lfanew` = 0x40, `PE\0\0` there.
pub fn tiny_pe() -> Vec<u8> {
    let mut pe = vec![0u8; 0x80];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe
}

/// An ELF header's first bytes.
pub fn tiny_elf() -> Vec<u8> {
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    elf
}

/// A Word document with macros, as far as a scanner can tell: an Office Open XML package
/// with a `vbaProject.bin`.
pub fn docm() -> Vec<u8> {
    zip(&[
        ("[Content_Types].xml", b"<?xml version=\"1.0\"?><Types/>"),
        ("word/document.xml", b"<w:document/>"),
        ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
    ])
}

/// A one-page PDF's first bytes.
pub fn tiny_pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

/// A PNG signature and header chunk.
pub fn tiny_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.resize(33, 0);
    png
}
