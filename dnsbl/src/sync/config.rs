//! The `[dnsbl.sync]` section: who publishes, who pulls from whom and how often, parsed into
//! serde structs and validated into [`SyncSettings`].
//!
//! ```toml
//! [dnsbl.sync.publish]
//! listen = ["192.0.2.10:5380"]
//! allow = ["192.0.2.0/24"]
//! key_file = "sync.key"
//! [dnsbl.sync.subscribe]
//! publisher = "192.0.2.10:5380"
//! interval = "1h"
//! key_file = "sync.key"
//! ```
//!
//! `key_file` is optional, but a key set on one side must be set, the same, on the other.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::key::SyncKey;
use crate::config::duration;
use crate::error::Error;

/// How often a subscriber pulls when nothing says otherwise. Blocklist vendors refresh most
/// feeds every 30 to 60 minutes, and a listing an hour late costs little next to the other
/// checks of a message; operators who want less lag set a shorter interval or send SIGHUP.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// How long one exchange with the publisher (a request and its answer) may take. A full copy
/// of a 100 MB dataset takes about 40 s at 20 Mbit/s; a peer silent longer is gone.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Who may pull when `allow` is not given: this host only. Licensed feeds must not be handed
/// to whoever reaches the port, so opening up is the operator's explicit choice.
pub const DEFAULT_SYNC_ALLOW: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The `[dnsbl.sync]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `[dnsbl.sync.publish]`: this node serves its dataset files to subscribers.
    #[serde(default)]
    pub publish: Option<PublishConfig>,
    /// `[dnsbl.sync.subscribe]`: this node pulls its dataset files from a publisher.
    #[serde(default)]
    pub subscribe: Option<SubscribeConfig>,
}

/// `[dnsbl.sync.publish]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// TCP addresses to publish on, as `IP:PORT` (port 0 picks a free one).
    pub listen: Vec<String>,
    /// Client networks allowed to pull, as `IP` or `IP/PREFIX` (default: loopback only).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// A file holding the shared key (hex or base64, at least 32 bytes, not readable by every
    /// user); relative to the configuration file. Without it the sync is unauthenticated.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// `[dnsbl.sync.subscribe]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeConfig {
    /// The publisher, as `HOST:PORT`.
    pub publisher: String,
    /// How often to pull (default `1h`), in rbldnsd's units: `90s`, `30m`, `1h`.
    #[serde(default)]
    pub interval: Option<String>,
    /// How long one exchange may take (default `1m`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// A file holding the shared key, the same as the publisher's; relative to the
    /// configuration file. Without it the sync is unauthenticated.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// The validated `[dnsbl.sync]` section; both parts absent when there is no sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSettings {
    /// Publish this node's dataset files.
    pub publish: Option<PublishSettings>,
    /// Pull this node's dataset files from a publisher.
    pub subscribe: Option<SubscribeSettings>,
}

/// A validated publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// Where to listen (TCP).
    pub listen: Vec<SocketAddr>,
    /// Who may pull.
    pub allow: Vec<Network>,
    /// The shared key subscribers must prove they hold; `None` for an unauthenticated sync.
    pub key: Option<SyncKey>,
}

/// A validated subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSettings {
    /// The publisher, `HOST:PORT`.
    pub publisher: String,
    /// Time between two pulls.
    pub interval: Duration,
    /// Time one exchange may take.
    pub timeout: Duration,
    /// The shared key the publisher must prove it holds; `None` for an unauthenticated sync.
    pub key: Option<SyncKey>,
}

/// An IP network: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `IP` or `IP/PREFIX`; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().ok().filter(|&p| p <= bits)?,
            None => bits,
        };
        Some(Network { addr, prefix })
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 client counts as its IPv4 address,
    /// as a dual-stack socket reports IPv4 clients that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl SyncConfig {
    /// Validates the section; a relative `key_file` is refused, as there is no directory to
    /// take it from. [`SyncConfig::validate_in`] is what a configuration file calls.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key, the value and what would do.
    pub fn validate(&self) -> Result<SyncSettings, Error> {
        self.validate_from(None)
    }

    /// Validates the section, taking a relative `key_file` from `base` (the directory of the
    /// configuration file), and reads the keys.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key, the value and what would do.
    pub fn validate_in(&self, base: &Path) -> Result<SyncSettings, Error> {
        self.validate_from(Some(base))
    }

    fn validate_from(&self, base: Option<&Path>) -> Result<SyncSettings, Error> {
        let publish = self
            .publish
            .as_ref()
            .map(|publish| publish.validate(base))
            .transpose()?;
        let subscribe = self
            .subscribe
            .as_ref()
            .map(|subscribe| subscribe.validate(base))
            .transpose()?;
        Ok(SyncSettings { publish, subscribe })
    }
}

/// The key in `file`, if one is given.
fn key(key: &str, file: Option<&str>, base: Option<&Path>) -> Result<Option<SyncKey>, Error> {
    let Some(file) = file else {
        return Ok(None);
    };
    let path = Path::new(file);
    let path = match base {
        _ if path.is_absolute() => path.to_owned(),
        Some(base) => base.join(path),
        None => {
            return Err(Error::Config {
                key: key.to_owned(),
                value: file.to_owned(),
                expected: "an absolute path to the key file",
            });
        }
    };
    SyncKey::load(key, &path).map(Some)
}

impl PublishConfig {
    fn validate(&self, base: Option<&Path>) -> Result<PublishSettings, Error> {
        if self.listen.is_empty() {
            return Err(Error::Config {
                key: "dnsbl.sync.publish.listen".into(),
                value: "[]".into(),
                expected: "at least one IP:PORT to publish on, such as 192.0.2.10:5380",
            });
        }
        let listen = self
            .listen
            .iter()
            .map(|addr| {
                addr.parse().map_err(|_| Error::Config {
                    key: "dnsbl.sync.publish.listen".into(),
                    value: addr.clone(),
                    expected: "IP:PORT, such as 192.0.2.10:5380 or [2001:db8::10]:5380",
                })
            })
            .collect::<Result<Vec<SocketAddr>, Error>>()?;

        let written: Vec<String> = match &self.allow {
            Some(allow) => allow.clone(),
            None => DEFAULT_SYNC_ALLOW.iter().map(|&a| a.to_owned()).collect(),
        };
        let allow = written
            .iter()
            .map(|text| {
                Network::parse(text).ok_or_else(|| Error::Config {
                    key: "dnsbl.sync.publish.allow".into(),
                    value: text.clone(),
                    expected: "an IP address or network, such as 192.0.2.0/24 or 2001:db8::/32",
                })
            })
            .collect::<Result<Vec<Network>, Error>>()?;
        let key = key(
            "dnsbl.sync.publish.key_file",
            self.key_file.as_deref(),
            base,
        )?;
        Ok(PublishSettings { listen, allow, key })
    }
}

impl SubscribeConfig {
    fn validate(&self, base: Option<&Path>) -> Result<SubscribeSettings, Error> {
        let has_port = self.publisher.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !has_port {
            return Err(Error::Config {
                key: "dnsbl.sync.subscribe.publisher".into(),
                value: self.publisher.clone(),
                expected: "HOST:PORT, such as 192.0.2.10:5380 or sync.example.com:5380",
            });
        }
        let interval = positive("dnsbl.sync.subscribe.interval", self.interval.as_deref())?
            .unwrap_or(DEFAULT_SYNC_INTERVAL);
        let timeout = positive("dnsbl.sync.subscribe.timeout", self.timeout.as_deref())?
            .unwrap_or(DEFAULT_SYNC_TIMEOUT);
        let key = key(
            "dnsbl.sync.subscribe.key_file",
            self.key_file.as_deref(),
            base,
        )?;
        Ok(SubscribeSettings {
            publisher: self.publisher.clone(),
            interval,
            timeout,
            key,
        })
    }
}

/// A time above zero, or `None` when not given.
fn positive(key: &str, text: Option<&str>) -> Result<Option<Duration>, Error> {
    let Some(text) = text else {
        return Ok(None);
    };
    let seconds = duration(key, text)?
        .filter(|&s| s > 0)
        .ok_or_else(|| Error::Config {
            key: key.to_owned(),
            value: text.to_owned(),
            expected: "a time above zero such as 30s, 10m or 1h",
        })?;
    Ok(Some(Duration::from_secs(u64::from(seconds))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SyncSettings, Error> {
        let config: SyncConfig = toml::from_str(text).map_err(|e| Error::Config {
            key: "toml".into(),
            value: e.to_string(),
            expected: "",
        })?;
        config.validate()
    }

    #[test]
    fn both_roles_validate_with_defaults() {
        let settings = parse(
            "[publish]\nlisten = [\"127.0.0.1:5380\"]\n\
             [subscribe]\npublisher = \"sync.example.com:5380\"\n",
        )
        .expect("valid");
        let publish = settings.publish.expect("a publisher");
        assert_eq!(publish.listen, ["127.0.0.1:5380".parse().expect("addr")]);
        assert!(
            publish
                .allow
                .iter()
                .any(|n| n.contains("127.0.0.9".parse().expect("ip")))
        );
        assert!(
            publish
                .allow
                .iter()
                .all(|n| !n.contains("192.0.2.1".parse().expect("ip")))
        );
        let subscribe = settings.subscribe.expect("a subscriber");
        assert_eq!(subscribe.interval, DEFAULT_SYNC_INTERVAL);
        assert_eq!(subscribe.timeout, DEFAULT_SYNC_TIMEOUT);
    }

    #[test]
    fn no_section_means_no_sync() {
        assert_eq!(parse("").expect("valid"), SyncSettings::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "[subscribe]\npublisher = \"192.0.2.10\"",
                "dnsbl.sync.subscribe.publisher",
            ),
            (
                "[subscribe]\npublisher = \"h:1\"\ninterval = \"0\"",
                "dnsbl.sync.subscribe.interval",
            ),
            ("[publish]\nlisten = []", "dnsbl.sync.publish.listen"),
            (
                "[publish]\nlisten = [\"127.0.0.1:1\"]\nallow = [\"192.0.2.0/33\"]",
                "dnsbl.sync.publish.allow",
            ),
        ];
        for (text, key) in cases {
            let error = parse(text).expect_err(text);
            assert!(
                error.to_string().starts_with(&format!("config {key} ")),
                "{error}"
            );
        }
        assert!(parse("[subscribe]\npublisher = \"h:1\"\nbogus = 1").is_err());
    }

    #[test]
    fn the_example_file_documents_a_valid_section() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../moat.example.toml");
        let example = std::fs::read_to_string(path).expect("moat.example.toml");
        let start = example.find("# [dnsbl.sync.publish]").expect("documented");
        // The commented-out tables and `key = value` lines, not the prose around them.
        let is_key = |line: &str| {
            line.split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        };
        let section: String = example[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with('[') || is_key(line))
            .map(|line| line.replace("[dnsbl.sync.", "[") + "\n")
            .collect();
        let settings = parse(&section).expect("valid");
        assert!(
            settings.publish.is_some() && settings.subscribe.is_some(),
            "{section}"
        );
    }

    #[test]
    fn key_files_are_read_from_the_config_directory_and_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("moat-sync-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let write = |name: &str, text: String, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        write("good.key", "cd".repeat(32), 0o600);
        write("short.key", "cd".repeat(16), 0o600);
        write("open.key", "cd".repeat(32), 0o644);
        let section = |file: &str| -> SyncConfig {
            let text = format!(
                "[publish]\nlisten = [\"127.0.0.1:1\"]\nkey_file = \"{file}\"\n\
                 [subscribe]\npublisher = \"h:1\"\nkey_file = \"{file}\"\n"
            );
            toml::from_str(&text).expect("parses")
        };

        let settings = section("good.key").validate_in(&dir).expect("valid");
        let publish_key = settings.publish.and_then(|p| p.key).expect("a key");
        assert_eq!(publish_key.file(), dir.join("good.key"));
        assert_eq!(settings.subscribe.and_then(|s| s.key), Some(publish_key));

        for (file, says) in [
            ("short.key", "holds a key of 16 bytes"),
            ("open.key", "readable by every user"),
            ("missing.key", "No such file"),
        ] {
            let error = section(file).validate_in(&dir).expect_err(file).to_string();
            assert!(
                error.starts_with("config dnsbl.sync.publish.key_file "),
                "{error}"
            );
            assert!(error.contains(says), "{error}");
        }
        let error = section("good.key")
            .validate()
            .expect_err("relative")
            .to_string();
        assert!(error.contains("an absolute path"), "{error}");
    }

    #[test]
    fn networks_match_by_prefix_and_map_ipv4_in_ipv6() {
        let net = Network::parse("192.0.2.0/24").expect("valid");
        assert!(net.contains("192.0.2.200".parse().expect("ip")));
        assert!(net.contains("::ffff:192.0.2.7".parse().expect("ip")));
        assert!(!net.contains("192.0.3.1".parse().expect("ip")));
        let net = Network::parse("2001:db8::/32").expect("valid");
        assert!(net.contains("2001:db8:ffff::1".parse().expect("ip")));
        assert!(!net.contains("2001:db9::1".parse().expect("ip")));
        let any = Network::parse("0.0.0.0/0").expect("valid");
        assert!(any.contains("198.51.100.1".parse().expect("ip")));
        assert_eq!(Network::parse("192.0.2.1/x"), None);
    }
}
