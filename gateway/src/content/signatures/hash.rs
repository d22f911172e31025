//! ClamAV hash signatures: `.hdb` (MD5) and `.hsb` (MD5, SHA-1 or SHA-256, told apart by the
//! hash's length), one `HASH:SIZE:NAME` per line, matching a whole file.
//!
//! As in ClamAV, the size comes first: a file is hashed only when some signature has its
//! size (or the wildcard size `*`), so a large table costs almost nothing on files that
//! cannot match.

use std::collections::HashMap;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One algorithm's signatures: by size, and those for any size.
#[derive(Debug)]
struct Table<const N: usize> {
    by_size: HashMap<u64, HashMap<[u8; N], String>>,
    any_size: HashMap<[u8; N], String>,
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Table {
            by_size: HashMap::new(),
            any_size: HashMap::new(),
        }
    }
}

impl<const N: usize> Table<N> {
    fn insert(&mut self, hash: [u8; N], size: Option<u64>, name: String) {
        match size {
            Some(size) => self.by_size.entry(size).or_default().insert(hash, name),
            None => self.any_size.insert(hash, name),
        };
    }

    fn wants(&self, size: u64) -> bool {
        !self.any_size.is_empty() || self.by_size.contains_key(&size)
    }

    fn find(&self, hash: &[u8; N], size: u64) -> Option<&str> {
        self.by_size
            .get(&size)
            .and_then(|table| table.get(hash))
            .or_else(|| self.any_size.get(hash))
            .map(String::as_str)
    }

    fn len(&self) -> usize {
        self.any_size.len() + self.by_size.values().map(HashMap::len).sum::<usize>()
    }
}

/// Every hash signature loaded.
#[derive(Debug, Default)]
pub struct HashSignatures {
    md5: Table<16>,
    sha1: Table<20>,
    sha256: Table<32>,
}

impl HashSignatures {
    /// Adds one line of a `.hdb` or `.hsb` file (`md5_only` for `.hdb`). Blank lines and `#`
    /// comments are ignored.
    ///
    /// # Errors
    /// What is malformed in the line.
    pub fn add_line(&mut self, line: &str, md5_only: bool) -> Result<(), String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let mut fields = line.split(':');
        let (Some(hash), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err("expected HASH:SIZE:NAME".to_owned());
        };
        if name.is_empty() {
            return Err("the signature has no name".to_owned());
        }
        let size = match size {
            "*" => None,
            digits => Some(
                digits
                    .parse::<u64>()
                    .map_err(|_| format!("size {digits:?} is not a number or *"))?,
            ),
        };
        let bytes = decode_hex(hash).ok_or_else(|| format!("hash {hash:?} is not hex"))?;
        let name = name.to_owned();
        match bytes.len() {
            16 => self.md5.insert(to_array(&bytes)?, size, name),
            20 if !md5_only => self.sha1.insert(to_array(&bytes)?, size, name),
            32 if !md5_only => self.sha256.insert(to_array(&bytes)?, size, name),
            _ if md5_only => return Err(format!("hash {hash:?} is not an MD5 (32 hex digits)")),
            _ => {
                return Err(format!(
                    "hash {hash:?} is not an MD5, SHA-1 or SHA-256 (32, 40 or 64 hex digits)"
                ));
            }
        }
        Ok(())
    }

    /// How many signatures are loaded.
    pub fn len(&self) -> usize {
        self.md5.len() + self.sha1.len() + self.sha256.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of a signature matching the whole of `data`, if any.
    pub fn find(&self, data: &[u8]) -> Option<&str> {
        let size = data.len() as u64;
        if self.md5.wants(size) {
            let hash: [u8; 16] = Md5::digest(data).into();
            if let Some(name) = self.md5.find(&hash, size) {
                return Some(name);
            }
        }
        if self.sha1.wants(size) {
            let hash: [u8; 20] = Sha1::digest(data).into();
            if let Some(name) = self.sha1.find(&hash, size) {
                return Some(name);
            }
        }
        if self.sha256.wants(size) {
            let hash: [u8; 32] = Sha256::digest(data).into();
            if let Some(name) = self.sha256.find(&hash, size) {
                return Some(name);
            }
        }
        None
    }
}

fn to_array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("hash of {} octets where {N} were expected", bytes.len()))
}

/// Hex digits to bytes; `None` unless the text is an even number of hex digits.
pub(super) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    #[test]
    fn md5_signature_matches_file_of_that_size() {
        let mut signatures = HashSignatures::default();
        signatures
            .add_line(
                "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature",
                true,
            )
            .expect("valid line");
        assert_eq!(signatures.find(EICAR), Some("Eicar-Test-Signature"));
        assert_eq!(signatures.find(b"something else"), None);
    }

    #[test]
    fn size_must_match_unless_wildcard() {
        let mut signatures = HashSignatures::default();
        signatures
            .add_line("44d88612fea8a8f36de82e1278abb02f:69:Wrong-Size", true)
            .expect("valid line");
        assert_eq!(signatures.find(EICAR), None);
        signatures
            .add_line("44d88612fea8a8f36de82e1278abb02f:*:Any-Size:73", true)
            .expect("valid line");
        assert_eq!(signatures.find(EICAR), Some("Any-Size"));
    }

    #[test]
    fn hsb_takes_sha1_and_sha256_by_length() {
        let mut signatures = HashSignatures::default();
        let sha256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
        signatures
            .add_line(&format!("{sha256}:68:Eicar.Sha256"), false)
            .expect("valid line");
        assert_eq!(signatures.find(EICAR), Some("Eicar.Sha256"));

        let mut signatures = HashSignatures::default();
        let sha1 = "3395856ce81f2b7382dee72602f798b642f14140";
        signatures
            .add_line(&format!("{sha1}:68:Eicar.Sha1"), false)
            .expect("valid line");
        assert_eq!(signatures.find(EICAR), Some("Eicar.Sha1"));
    }

    #[test]
    fn hdb_refuses_other_hashes() {
        let mut signatures = HashSignatures::default();
        let sha1 = "3395856ce81f2b7382dee72602f798b642f14140";
        assert!(signatures.add_line(&format!("{sha1}:68:X"), true).is_err());
    }

    #[test]
    fn malformed_lines_are_refused() {
        let mut signatures = HashSignatures::default();
        for line in [
            "nothex:68:X",
            "44d88612fea8a8f36de82e1278abb02f:big:X",
            "abc",
            "aa:1:",
        ] {
            assert!(signatures.add_line(line, false).is_err(), "{line}");
        }
        assert!(signatures.add_line("# comment", false).is_ok());
        assert!(signatures.is_empty());
    }
}
