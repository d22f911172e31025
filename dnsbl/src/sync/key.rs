//! The shared sync key: read from `key_file`, refused when short or readable by every user.
//!
//! The file holds one secret of at least [`MIN_KEY_LEN`] bytes, written as hex or base64, as
//! `openssl rand -hex 32` or `openssl rand -base64 32` print it; surrounding whitespace is
//! ignored. The secret never appears in logs or `Debug` output.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::Error;

/// The shortest key accepted: 256 bits, the output size of the HMAC-SHA256 it keys. RFC 2104
/// section 3 advises no key shorter than the hash's output, and a shorter one would be the
/// weakest part of the scheme.
pub const MIN_KEY_LEN: usize = 32;

/// The longest key file read: a secret is a few dozen bytes, a larger file is a wrong path.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// A shared secret that authenticates a publisher and its subscribers to each other.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey {
    secret: Vec<u8>,
    /// Where it was read, for log lines and errors.
    file: PathBuf,
}

impl SyncKey {
    /// Reads the key of `key` (the configuration key, such as `dnsbl.sync.publish.key_file`)
    /// from `file`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read, is readable by every user, or holds
    /// something other than hex or base64 of at least [`MIN_KEY_LEN`] bytes.
    pub fn load(key: &str, file: &Path) -> Result<SyncKey, Error> {
        let refuse = |value: String, expected: &'static str| Error::Config {
            key: key.to_owned(),
            value,
            expected,
        };
        let shown = file.display().to_string();
        let metadata = std::fs::metadata(file)
            .map_err(|error| refuse(format!("{shown}: {error}"), "a readable key file"))?;
        if metadata.permissions().mode() & 0o004 != 0 {
            return Err(refuse(
                format!("{shown} is readable by every user"),
                "a key file only its owner (and group) can read: chmod 600 or 640",
            ));
        }
        if metadata.len() > MAX_KEY_FILE_LEN {
            return Err(refuse(
                format!("{shown} is {} bytes", metadata.len()),
                "a file holding one key, such as the output of `openssl rand -hex 32`",
            ));
        }
        let text = std::fs::read_to_string(file)
            .map_err(|error| refuse(format!("{shown}: {error}"), "a readable key file"))?;

        let secret = decode(text.trim()).ok_or_else(|| {
            refuse(
                format!("{shown} holds neither hex nor base64"),
                "a key written as hex or base64, such as the output of `openssl rand -hex 32`",
            )
        })?;
        if secret.len() < MIN_KEY_LEN {
            return Err(refuse(
                format!("{shown} holds a key of {} bytes", secret.len()),
                "a key of at least 32 bytes: make one with `openssl rand -hex 32`",
            ));
        }
        Ok(SyncKey {
            secret,
            file: file.to_owned(),
        })
    }

    /// The secret, to key an HMAC.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The file it was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A key from raw bytes, for tests of the protocol.
    #[cfg(test)]
    pub(crate) fn from_secret(secret: &[u8]) -> SyncKey {
        SyncKey {
            secret: secret.to_vec(),
            file: PathBuf::from("test.key"),
        }
    }
}

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncKey")
            .field("file", &self.file)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Hex when every character is a hex digit and there is an even number of them (a hex key is
/// also valid base64 text, and hex is what `openssl rand -hex` and most tools print), else
/// standard base64 with or without padding.
fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        return text
            .as_bytes()
            .chunks(2)
            .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect();
    }
    let padded = base64::engine::general_purpose::STANDARD.decode(text);
    padded
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dnsbl.sync.publish.key_file";

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moat-key-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn reads_hex_and_base64_keys() {
        let dir = dir("good");
        let hex = write(&dir, "hex.key", &format!("{}\n", "ab".repeat(32)), 0o600);
        assert_eq!(SyncKey::load(KEY, &hex).expect("hex").secret(), [0xab; 32]);
        let b64 = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
        let b64 = write(&dir, "b64.key", b64, 0o640);
        assert_eq!(
            SyncKey::load(KEY, &b64).expect("base64").secret(),
            [0xab; 32]
        );
    }

    #[test]
    fn refuses_a_short_key_naming_the_key_and_the_remedy() {
        let dir = dir("short");
        let path = write(&dir, "short.key", &"ab".repeat(31), 0o600);
        let error = SyncKey::load(KEY, &path).expect_err("short").to_string();
        assert!(error.contains(KEY), "{error}");
        assert!(error.contains("31 bytes"), "{error}");
        assert!(error.contains("at least 32 bytes"), "{error}");
    }

    #[test]
    fn refuses_a_world_readable_key_file() {
        let dir = dir("open");
        let path = write(&dir, "open.key", &"ab".repeat(32), 0o644);
        let error = SyncKey::load(KEY, &path).expect_err("open").to_string();
        assert!(error.contains("readable by every user"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn refuses_text_that_is_no_key_and_hides_the_secret_in_debug() {
        let dir = dir("junk");
        let path = write(&dir, "junk.key", "not a key!", 0o600);
        assert!(SyncKey::load(KEY, &path).is_err());
        let key = SyncKey::from_secret(&[0x5a; 32]);
        assert!(!format!("{key:?}").contains("90"), "{key:?}");
    }
}
