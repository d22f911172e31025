//! The `[content]` configuration section: serde structs as written, validated into
//! [`ContentSettings`] that cannot hold an invalid value.
//!
//! ```toml
//! [content]
//! # Weighted phrases and patterns (format: gateway/rules/default.rules). Default: the rules
//! # built into Moat, which are that file.
//! rules_file = "/etc/moat/content.rules"
//! # ClamAV signature files (.hdb, .hsb, .ndb) for the built-in scanner. Default: none, so
//! # the built-in scanner applies only the attachment policy.
//! signatures_dir = "/var/lib/moat/signatures"
//! # Largest message, in octets, given to clamd and unpacked by the built-in scanner.
//! # Keep it at least smtp.max_message_size and at most clamd's StreamMaxLength.
//! max_scan_size = 26214400
//!
//! [content.clamd]
//! # "HOST:PORT" for TCP, or the absolute path of clamd's LocalSocket.
//! address = "127.0.0.1:3310"
//! timeout = "30s"
//! # When clamd is down, slow or answers ERROR: "tempfail" (451, the default) or "accept".
//! failure_mode = "tempfail"
//!
//! [content.attachments]
//! # Replaces the default list (see DEFAULT_DANGEROUS_EXTENSIONS); without dots.
//! dangerous_extensions = ["exe", "scr", "js"]
//! double_extensions = true
//! executables = true
//! scripts = true
//! office_macros = true
//! encrypted_archives = true
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ContentError, bad_value};

/// Default largest message scanned: 25 MiB, the gateway's default `max_message_size` and
/// Debian's `StreamMaxLength` for clamd, so that no accepted message is too big for either.
pub const DEFAULT_MAX_SCAN_SIZE: usize = 25 * 1024 * 1024;

/// Default time clamd may take for one message. A client waits up to 10 minutes for the reply
/// to the end of DATA (RFC 5321 section 4.5.3.2.6), but a clamd that needs more than 30 s for
/// 25 MiB is overloaded, and holding sessions longer only makes that worse.
pub const DEFAULT_CLAMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest clamd timeout accepted: well inside the 10 minutes a client waits.
pub const MAX_CLAMD_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Default file name extensions refused in attachments and archives: the list a large mail
/// provider publishes for the files it never lets through (programs, scripts, installers,
/// shortcuts and disk images that run or mount with one click).
pub const DEFAULT_DANGEROUS_EXTENSIONS: &[&str] = &[
    "ade",
    "adp",
    "apk",
    "appx",
    "appxbundle",
    "bat",
    "cab",
    "chm",
    "cmd",
    "com",
    "cpl",
    "diagcab",
    "diagcfg",
    "diagpack",
    "dll",
    "dmg",
    "ex",
    "ex_",
    "exe",
    "hta",
    "img",
    "ins",
    "iso",
    "isp",
    "jar",
    "jnlp",
    "js",
    "jse",
    "lib",
    "lnk",
    "mde",
    "mjs",
    "msc",
    "msi",
    "msix",
    "msixbundle",
    "msp",
    "mst",
    "nsh",
    "pif",
    "ps1",
    "scr",
    "sct",
    "shb",
    "sys",
    "vb",
    "vbe",
    "vbs",
    "vhd",
    "vxd",
    "wsc",
    "wsf",
    "wsh",
    "xll",
];

/// `[content]` as written; every key optional. See the module documentation for each.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSection {
    /// The rules file; the built-in rules when absent.
    pub rules_file: Option<PathBuf>,
    /// The directory of ClamAV signature files for the built-in scanner.
    pub signatures_dir: Option<PathBuf>,
    /// Largest message scanned, in octets.
    pub max_scan_size: Option<usize>,
    /// clamd, layer 1 of the anti-virus; off when absent.
    pub clamd: Option<ClamdSection>,
    /// The attachment policy.
    #[serde(default)]
    pub attachments: AttachmentSection,
}

/// `[content.clamd]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdSection {
    /// `HOST:PORT`, or the absolute path of a Unix socket.
    pub address: String,
    /// Time one scan may take ("30s").
    pub timeout: Option<String>,
    /// `"tempfail"` or `"accept"`.
    pub failure_mode: Option<String>,
}

/// `[content.attachments]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSection {
    /// Extensions refused, replacing the default list.
    pub dangerous_extensions: Option<Vec<String>>,
    /// Refuse a dangerous extension behind a document one (`invoice.pdf.exe`).
    pub double_extensions: Option<bool>,
    /// Refuse programs recognised by their content, whatever their name.
    pub executables: Option<bool>,
    /// Refuse scripts with an interpreter line (`#!`), whatever their name.
    pub scripts: Option<bool>,
    /// Refuse office documents that carry macros.
    pub office_macros: Option<bool>,
    /// Refuse archives with encrypted entries, which no scanner can look into.
    pub encrypted_archives: Option<bool>,
}

/// Validated content-check settings.
#[derive(Debug, Clone)]
pub struct ContentSettings {
    /// The rules file; `None` for the built-in rules.
    pub rules_file: Option<PathBuf>,
    /// The directory of `.hdb`, `.hsb` and `.ndb` files; `None` for no signatures.
    pub signatures_dir: Option<PathBuf>,
    /// clamd, when configured.
    pub clamd: Option<ClamdSettings>,
    /// The attachment policy.
    pub attachment_policy: AttachmentPolicy,
    /// Largest message scanned, in octets; also the most unpacked from archives per message.
    pub max_scan_size: usize,
}

impl Default for ContentSettings {
    /// The built-in rules and attachment policy, no signatures, no clamd.
    fn default() -> Self {
        ContentSettings {
            rules_file: None,
            signatures_dir: None,
            clamd: None,
            attachment_policy: AttachmentPolicy::default(),
            max_scan_size: DEFAULT_MAX_SCAN_SIZE,
        }
    }
}

/// How to reach clamd and what to do when it gives no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdSettings {
    /// Where clamd listens.
    pub address: ClamdAddress,
    /// Time one scan may take, connection included.
    pub timeout: Duration,
    /// What a message gets when clamd is down, slow or answers an error.
    pub failure_mode: FailureMode,
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `HOST:PORT` (a name is resolved at each connection).
    Tcp(String),
    /// A Unix socket (clamd's `LocalSocket`).
    Unix(PathBuf),
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddress::Tcp(address) => f.write_str(address),
            ClamdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What a message gets when a scan that must run could not give a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Refuse for now (451): the client retries later, when clamd may be back. The default,
    /// since unscanned mail must never slip in silently.
    #[default]
    TempFail,
    /// Accept unscanned, with a warning in the log; for sites that prefer mail to safety.
    Accept,
}

/// Which attachments are refused whatever the signatures say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPolicy {
    /// Lower-case extensions, without dots.
    pub dangerous_extensions: Vec<String>,
    /// Refuse `name.doc.exe` where the last extension is dangerous.
    pub double_extensions: bool,
    /// Refuse programs (PE, ELF, Mach-O, Java class, Windows shortcut) by their magic bytes.
    pub executables: bool,
    /// Refuse scripts with an interpreter line (`#!`).
    pub scripts: bool,
    /// Refuse office documents with macros.
    pub office_macros: bool,
    /// Refuse archives with encrypted entries.
    pub encrypted_archives: bool,
}

impl Default for AttachmentPolicy {
    /// Every check on, with [`DEFAULT_DANGEROUS_EXTENSIONS`].
    fn default() -> Self {
        AttachmentPolicy {
            dangerous_extensions: DEFAULT_DANGEROUS_EXTENSIONS
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            double_extensions: true,
            executables: true,
            scripts: true,
            office_macros: true,
            encrypted_archives: true,
        }
    }
}

impl ContentSection {
    /// Checks every value. Files are only read by
    /// [`ContentScanner::load`](super::ContentScanner::load).
    ///
    /// # Errors
    /// [`ContentError::Value`] naming the first bad key, its value and what is accepted.
    pub fn validate(self) -> Result<ContentSettings, ContentError> {
        let max_scan_size = self.max_scan_size.unwrap_or(DEFAULT_MAX_SCAN_SIZE);
        if max_scan_size == 0 {
            return Err(bad_value("max_scan_size", 0, "a size in octets above 0"));
        }
        let clamd = self.clamd.map(ClamdSection::validate).transpose()?;
        let attachment_policy = self.attachments.validate()?;
        Ok(ContentSettings {
            rules_file: self.rules_file,
            signatures_dir: self.signatures_dir,
            clamd,
            attachment_policy,
            max_scan_size,
        })
    }
}

impl ClamdSection {
    fn validate(self) -> Result<ClamdSettings, ContentError> {
        let address = parse_address(&self.address)?;

        let timeout = match &self.timeout {
            None => DEFAULT_CLAMD_TIMEOUT,
            Some(text) => humantime::parse_duration(text)
                .map_err(|_| bad_value("clamd.timeout", text, "a duration such as \"30s\""))?,
        };
        if timeout.is_zero() || timeout > MAX_CLAMD_TIMEOUT {
            let shown = self.timeout.unwrap_or_default();
            return Err(bad_value("clamd.timeout", shown, "from 1ms to 5m"));
        }

        let failure_mode = match self.failure_mode.as_deref() {
            None | Some("tempfail") => FailureMode::TempFail,
            Some("accept") => FailureMode::Accept,
            Some(other) => {
                return Err(bad_value(
                    "clamd.failure_mode",
                    other,
                    "\"tempfail\" or \"accept\"",
                ));
            }
        };
        Ok(ClamdSettings {
            address,
            timeout,
            failure_mode,
        })
    }
}

/// `/path` is a Unix socket; anything else must be `HOST:PORT` with a port from 1 to 65535.
fn parse_address(text: &str) -> Result<ClamdAddress, ContentError> {
    if text.starts_with('/') {
        return Ok(ClamdAddress::Unix(PathBuf::from(text)));
    }
    let expected = "\"HOST:PORT\" or the absolute path of a Unix socket";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(bad_value("clamd.address", text, expected));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || !port_ok {
        return Err(bad_value("clamd.address", text, expected));
    }
    Ok(ClamdAddress::Tcp(text.to_owned()))
}

impl AttachmentSection {
    fn validate(self) -> Result<AttachmentPolicy, ContentError> {
        let defaults = AttachmentPolicy::default();
        let dangerous_extensions = match self.dangerous_extensions {
            None => defaults.dangerous_extensions,
            Some(list) => list
                .into_iter()
                .map(|extension| normalise_extension(&extension))
                .collect::<Result<_, _>>()?,
        };
        Ok(AttachmentPolicy {
            dangerous_extensions,
            double_extensions: self.double_extensions.unwrap_or(defaults.double_extensions),
            executables: self.executables.unwrap_or(defaults.executables),
            scripts: self.scripts.unwrap_or(defaults.scripts),
            office_macros: self.office_macros.unwrap_or(defaults.office_macros),
            encrypted_archives: self
                .encrypted_archives
                .unwrap_or(defaults.encrypted_archives),
        })
    }
}

/// An extension as compared: lower case, without a leading dot.
fn normalise_extension(text: &str) -> Result<String, ContentError> {
    let extension = text.strip_prefix('.').unwrap_or(text).to_ascii_lowercase();
    let valid = !extension.is_empty()
        && extension
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(bad_value(
            "attachments.dangerous_extensions",
            text,
            "extensions of letters, digits, '_' or '-', such as \"exe\"",
        ));
    }
    Ok(extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clamd(address: &str) -> ClamdSection {
        ClamdSection {
            address: address.to_owned(),
            ..ClamdSection::default()
        }
    }

    fn with_clamd(clamd: ClamdSection) -> ContentSection {
        ContentSection {
            clamd: Some(clamd),
            ..ContentSection::default()
        }
    }

    #[test]
    fn empty_section_gives_defaults() {
        let settings = ContentSection::default().validate().expect("valid");
        assert_eq!(settings.max_scan_size, DEFAULT_MAX_SCAN_SIZE);
        assert!(settings.clamd.is_none());
        assert_eq!(settings.attachment_policy, AttachmentPolicy::default());
        assert!(settings.rules_file.is_none());
    }

    #[test]
    fn clamd_defaults_to_tempfail_and_thirty_seconds() {
        let settings = with_clamd(clamd("127.0.0.1:3310"))
            .validate()
            .expect("valid");
        let clamd = settings.clamd.expect("clamd configured");
        assert_eq!(clamd.address, ClamdAddress::Tcp("127.0.0.1:3310".into()));
        assert_eq!(clamd.timeout, DEFAULT_CLAMD_TIMEOUT);
        assert_eq!(clamd.failure_mode, FailureMode::TempFail);
    }

    #[test]
    fn absolute_path_is_a_unix_socket() {
        let section = ClamdSection {
            failure_mode: Some("accept".into()),
            ..clamd("/run/clamav/clamd.ctl")
        };
        let clamd = with_clamd(section).validate().expect("valid").clamd;
        let clamd = clamd.expect("clamd configured");
        assert_eq!(
            clamd.address,
            ClamdAddress::Unix(PathBuf::from("/run/clamav/clamd.ctl"))
        );
        assert_eq!(clamd.failure_mode, FailureMode::Accept);
    }

    #[test]
    fn accepts_names_and_ipv6_with_a_port() {
        for address in ["clamd.example.com:3310", "[2001:db8::1]:3310"] {
            assert!(with_clamd(clamd(address)).validate().is_ok(), "{address}");
        }
    }

    #[test]
    fn refuses_address_without_port() {
        for address in ["localhost", "localhost:0", ":3310", "relative/socket"] {
            let error = with_clamd(clamd(address)).validate().expect_err("refused");
            assert!(
                error.to_string().contains("content.clamd.address"),
                "{error}"
            );
        }
    }

    #[test]
    fn refuses_unknown_failure_mode() {
        let section = ClamdSection {
            failure_mode: Some("ignore".into()),
            ..clamd("h:1")
        };
        let error = with_clamd(section).validate().expect_err("refused");
        assert!(
            error.to_string().contains("\"tempfail\" or \"accept\""),
            "{error}"
        );
    }

    #[test]
    fn refuses_zero_huge_and_unreadable_timeouts() {
        for timeout in ["0s", "1h", "soon"] {
            let section = ClamdSection {
                timeout: Some(timeout.into()),
                ..clamd("h:1")
            };
            assert!(
                with_clamd(section).validate().is_err(),
                "{timeout} accepted"
            );
        }
    }

    #[test]
    fn refuses_zero_max_scan_size() {
        let section = ContentSection {
            max_scan_size: Some(0),
            ..ContentSection::default()
        };
        assert!(section.validate().is_err());
    }

    #[test]
    fn extensions_are_lowercased_and_lose_their_dot() {
        let section = ContentSection {
            attachments: AttachmentSection {
                dangerous_extensions: Some(vec![".EXE".into(), "scr".into()]),
                ..AttachmentSection::default()
            },
            ..ContentSection::default()
        };
        let policy = section.validate().expect("valid").attachment_policy;
        assert_eq!(policy.dangerous_extensions, vec!["exe", "scr"]);
    }

    #[test]
    fn refuses_extension_with_a_path() {
        let section = ContentSection {
            attachments: AttachmentSection {
                dangerous_extensions: Some(vec!["a/b".into()]),
                ..AttachmentSection::default()
            },
            ..ContentSection::default()
        };
        assert!(section.validate().is_err());
    }
}
