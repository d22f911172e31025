//! The `[dnsbl]` section of Moat's configuration: parsed into serde structs, then validated
//! into [`Settings`] that cannot hold an invalid value.
//!
//! ```toml
//! [dnsbl]
//! listen = ["127.0.0.1:5353"]
//! [[dnsbl.zone]]
//! name = "bl.example.com"
//! datasets = ["ip4set:/var/lib/moat/dnsbl/spam.txt", "dnset:/var/lib/moat/dnsbl/domains.txt"]
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dataset::reader::LoadOptions;
use crate::dataset::special::{DEFAULT_TTL, parse_time};
use crate::dataset::{DatasetType, ParseOptions};
use crate::error::Error;
use crate::name::Name;
use crate::sync::{SyncConfig, SyncSettings};
use crate::zone::Aggregate;

/// Where a DNS node listens when nothing says otherwise: loopback and an unprivileged port,
/// so a first run needs no root and exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5353";

/// How often files are checked for changes when nothing says otherwise (rbldnsd's `-c 1m`).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The `[dnsbl]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblConfig {
    /// Addresses to answer DNS on, UDP and TCP, as `IP:PORT` (default `127.0.0.1:5353`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// UDP sockets per address, each with its own thread, sharing the port with
    /// SO_REUSEPORT (default: one per CPU).
    #[serde(default)]
    pub udp_sockets: Option<usize>,
    /// Which code answers UDP: `"fast"` (Moat's own packet loop) or `"hickory"`
    /// (hickory-server's, slower; kept for comparison).
    #[serde(default)]
    pub udp_engine: Option<String>,
    /// TTL of answers when a dataset has no `$TTL` (default `35m`, rbldnsd's).
    #[serde(default)]
    pub default_ttl: Option<String>,
    /// How often dataset files are checked for changes (default `1m`; `0` only on SIGHUP).
    #[serde(default)]
    pub check_interval: Option<String>,
    /// Refuse a dataset with any malformed line instead of skipping the line (default false).
    #[serde(default)]
    pub strict: bool,
    /// Accept CIDR blocks with host bits set, clearing them (rbldnsd's `-e`; default false).
    #[serde(default)]
    pub accept_in_cidr: bool,
    /// The zones.
    #[serde(default, rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// `[dnsbl.sync]`: publishing this node's dataset files, or pulling them from a publisher
    /// (default: neither).
    #[serde(default)]
    pub sync: Option<SyncConfig>,
    /// Where `moat dnsbl serve` answers `GET /metrics` (the sync counters), as `IP:PORT`
    /// (default: no endpoint). `moat serve` reports the same counters on its `[metrics]`
    /// endpoint instead.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// One `[[dnsbl.zone]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's name, such as `bl.example.com`.
    pub name: String,
    /// Its datasets, each `type:file[,file...]` (rbldnsd's specification) or a table with
    /// `spec` and a return code `a` that all its listings answer with.
    pub datasets: Vec<DatasetConfig>,
    /// How the A records of several listings combine: `"all"` (default) or `"bitmask"`.
    #[serde(default)]
    pub aggregate: Aggregate,
}

/// A dataset of a zone, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DatasetConfig {
    /// `type:file[,file...]`.
    Spec(String),
    /// A specification with a return code.
    Detailed(DetailedDataset),
}

/// A dataset with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedDataset {
    /// `type:file[,file...]`.
    pub spec: String,
    /// The A address every listing of this dataset answers with, such as `127.0.0.4`.
    #[serde(default)]
    pub a: Option<String>,
}

/// Which code answers UDP queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpEngine {
    /// Moat's packet loop: one thread per socket, no allocation per query.
    #[default]
    Fast,
    /// hickory-server's UDP handling with the same answers.
    Hickory,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// UDP sockets per address.
    pub udp_sockets: usize,
    /// Which code answers UDP.
    pub udp_engine: UdpEngine,
    /// How datasets are read.
    pub(crate) load: LoadOptions,
    /// How often files are checked for changes; `None` for SIGHUP only.
    pub check_interval: Option<Duration>,
    /// The zones.
    pub zones: Vec<ZoneSpec>,
    /// Publishing and pulling dataset files across the cluster.
    pub sync: SyncSettings,
    /// Where `moat dnsbl serve` answers `GET /metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// A zone to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Its name.
    pub name: Name,
    /// Its datasets, in order (the first `$SOA` and `$NS` among them count).
    pub datasets: Vec<DatasetSpec>,
    /// How A records combine.
    pub aggregate: Aggregate,
}

/// A dataset: a type and its files, read as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    /// The type.
    pub kind: DatasetType,
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// A return code overriding the files' A values.
    pub a: Option<Ipv4Addr>,
}

impl DatasetSpec {
    /// Parses `type:file[,file...]`; relative paths are taken from `base`.
    ///
    /// # Errors
    ///
    /// [`Error::Spec`] for an unknown type or no file.
    pub fn parse(spec: &str, base: &Path) -> Result<DatasetSpec, Error> {
        let bad = |expected| Error::Spec {
            spec: spec.to_owned(),
            expected,
        };
        let (kind, files) = spec
            .split_once(':')
            .ok_or(bad("expected type:file[,file...]"))?;
        let kind: DatasetType = kind.parse().map_err(|()| {
            bad(concat!(
                "unknown dataset type; expected ip4set, ip4tset, ip4trie, ip6trie, ip6tset, ",
                "dnset, generic or combined"
            ))
        })?;
        let files: Vec<PathBuf> = files
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| base.join(f))
            .collect();
        if files.is_empty() {
            return Err(bad("expected at least one file after type:"));
        }
        Ok(DatasetSpec {
            kind,
            files,
            a: None,
        })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind)?;
        for (i, file) in self.files.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", file.display())?;
        }
        Ok(())
    }
}

impl ZoneSpec {
    /// Parses rbldnsd's command-line zone form `name:type:file[,file...]`.
    ///
    /// # Errors
    ///
    /// [`Error::Spec`] or [`Error::Config`] when a part is invalid.
    pub fn parse_rbldnsd(spec: &str) -> Result<ZoneSpec, Error> {
        let (name, dataset) = spec.split_once(':').ok_or(Error::Spec {
            spec: spec.to_owned(),
            expected: "expected zone:type:file[,file...]",
        })?;
        Ok(ZoneSpec {
            name: zone_name(name, "--zone")?,
            datasets: vec![DatasetSpec::parse(dataset, Path::new(""))?],
            aggregate: Aggregate::All,
        })
    }
}

fn zone_name(name: &str, key: &str) -> Result<Name, Error> {
    Name::parse(name.as_bytes())
        .filter(|n| !n.is_root())
        .map(|n| n.to_lowercase())
        .ok_or_else(|| Error::Config {
            key: key.to_owned(),
            value: name.to_owned(),
            expected: "a domain name such as bl.example.com",
        })
}

impl DnsblConfig {
    /// Validates the section. Relative dataset paths are taken from `base` (the directory of
    /// the configuration file).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Spec`] naming the key, the value and what would do.
    pub fn validate(&self, base: &Path) -> Result<Settings, Error> {
        let listen = if self.listen.is_empty() {
            vec![DEFAULT_LISTEN.to_owned()]
        } else {
            self.listen.clone()
        };
        let listen = listen
            .iter()
            .map(|a| {
                a.parse().map_err(|_| Error::Config {
                    key: "dnsbl.listen".into(),
                    value: a.clone(),
                    expected: "IP:PORT, such as 127.0.0.1:5353 or [::1]:5353",
                })
            })
            .collect::<Result<Vec<SocketAddr>, Error>>()?;
        let default_ttl = match &self.default_ttl {
            None => DEFAULT_TTL,
            Some(text) => duration("dnsbl.default_ttl", text)?
                .filter(|&t| t > 0)
                .ok_or_else(|| Error::Config {
                    key: "dnsbl.default_ttl".into(),
                    value: text.clone(),
                    expected: "a time above zero such as 35m",
                })?,
        };
        let check_interval = match &self.check_interval {
            None => Some(DEFAULT_CHECK_INTERVAL),
            Some(text) => duration("dnsbl.check_interval", text)?
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        };
        let udp_engine = match self.udp_engine.as_deref() {
            None | Some("fast") => UdpEngine::Fast,
            Some("hickory") => UdpEngine::Hickory,
            Some(other) => {
                return Err(Error::Config {
                    key: "dnsbl.udp_engine".into(),
                    value: other.into(),
                    expected: "\"fast\" or \"hickory\"",
                });
            }
        };
        let udp_sockets = match self.udp_sockets {
            Some(0) => {
                return Err(Error::Config {
                    key: "dnsbl.udp_sockets".into(),
                    value: "0".into(),
                    expected: "at least 1",
                });
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let mut zones: Vec<ZoneSpec> = Vec::new();
        for zone in &self.zones {
            zones.push(zone.validate(base)?);
        }
        let load = LoadOptions {
            default_ttl,
            parse: ParseOptions {
                accept_in_cidr: self.accept_in_cidr,
            },
            strict: self.strict,
        };
        let sync = match &self.sync {
            Some(section) => section.validate_in(base)?,
            None => SyncSettings::default(),
        };
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| Error::Config {
                key: "dnsbl.metrics_listen".into(),
                value: text.clone(),
                expected: "IP:PORT, such as 127.0.0.1:9188",
            })?),
        };
        Ok(Settings {
            metrics_listen,
            listen,
            udp_sockets,
            udp_engine,
            load,
            check_interval,
            zones,
            sync,
        })
    }
}

impl ZoneConfig {
    fn validate(&self, base: &Path) -> Result<ZoneSpec, Error> {
        let key = format!("dnsbl.zone {:?}", self.name);
        let name = zone_name(&self.name, "dnsbl.zone.name")?;
        if self.datasets.is_empty() {
            return Err(Error::Config {
                key: format!("{key}.datasets"),
                value: "[]".into(),
                expected: "at least one dataset",
            });
        }
        let mut datasets = Vec::new();
        for dataset in &self.datasets {
            let (spec, a) = match dataset {
                DatasetConfig::Spec(spec) => (spec, None),
                DatasetConfig::Detailed(d) => (&d.spec, d.a.as_ref()),
            };
            let mut parsed = DatasetSpec::parse(spec, base)?;
            if let Some(a) = a {
                parsed.a = Some(a.parse().map_err(|_| Error::Config {
                    key: format!("{key}.datasets.a"),
                    value: a.clone(),
                    expected: "an IPv4 address such as 127.0.0.4",
                })?);
            }
            datasets.push(parsed);
        }
        Ok(ZoneSpec {
            name,
            datasets,
            aggregate: self.aggregate,
        })
    }
}

/// Parses a time in rbldnsd's units (`35m`, `1h`, `2d`, `1w`, plain seconds).
pub(crate) fn duration(key: &str, text: &str) -> Result<Option<u32>, Error> {
    match parse_time(text.trim().as_bytes()) {
        Some((value, [])) => Ok(Some(value)),
        _ => Err(Error::Config {
            key: key.to_owned(),
            value: text.to_owned(),
            expected: "a time such as 90s, 35m, 1h or 2d",
        }),
    }
}

impl Settings {
    /// Settings for a quick start from the command line: these zones on these addresses,
    /// everything else default.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an address that is not `IP:PORT`.
    pub fn quick(listen: &[String], zones: Vec<ZoneSpec>) -> Result<Settings, Error> {
        let config = DnsblConfig {
            listen: listen.to_vec(),
            ..DnsblConfig::default()
        };
        let mut settings = config.validate(Path::new(""))?;
        settings.zones = merge_zones(zones);
        Ok(settings)
    }

    /// Adds zones given on the command line; a repeated name joins the zone of that name.
    pub fn add_zones(&mut self, zones: Vec<ZoneSpec>) {
        let mut all = std::mem::take(&mut self.zones);
        all.extend(zones);
        self.zones = merge_zones(all);
    }
}

/// Joins zone specifications with the same name, keeping dataset order (rbldnsd's rule for
/// repeated zone names on its command line).
fn merge_zones(zones: Vec<ZoneSpec>) -> Vec<ZoneSpec> {
    let mut merged: Vec<ZoneSpec> = Vec::new();
    for zone in zones {
        match merged.iter_mut().find(|z| z.name == zone.name) {
            Some(existing) => existing.datasets.extend(zone.datasets),
            None => merged.push(zone),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, Error> {
        #[derive(Deserialize)]
        struct File {
            dnsbl: DnsblConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| Error::Config {
            key: "toml".into(),
            value: e.to_string(),
            expected: "",
        })?;
        file.dnsbl.validate(Path::new("/etc/moat"))
    }

    #[test]
    fn a_full_section_validates() {
        let settings = parse(
            r#"
            [dnsbl]
            listen = ["127.0.0.1:5353", "[::1]:5353"]
            default_ttl = "1h"
            check_interval = "0"
            metrics_listen = "127.0.0.1:9188"
            [[dnsbl.zone]]
            name = "bl.example.com"
            aggregate = "bitmask"
            datasets = [
                "ip4set:spam.txt,local.txt",
                { spec = "dnset:/abs/domains", a = "127.0.0.4" },
            ]
            "#,
        )
        .expect("valid");
        assert_eq!(settings.listen.len(), 2);
        assert_eq!(settings.load.default_ttl, 3600);
        assert_eq!(settings.check_interval, None);
        assert_eq!(settings.metrics_listen, "127.0.0.1:9188".parse().ok());
        let zone = &settings.zones[0];
        assert_eq!(zone.aggregate, Aggregate::Bitmask);
        assert_eq!(
            zone.datasets[0].files[1],
            PathBuf::from("/etc/moat/local.txt")
        );
        assert_eq!(zone.datasets[1].a, Some(Ipv4Addr::new(127, 0, 0, 4)));
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = parse("[dnsbl]\nlisten = [\"localhost\"]").expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("config dnsbl.listen = \"localhost\""),
            "{error}"
        );
        let error =
            parse("[[dnsbl.zone]]\nname = \"x\"\ndatasets = [\"ip5set:f\"]").expect_err("invalid");
        assert!(
            error.to_string().contains("unknown dataset type"),
            "{error}"
        );
        let error = parse("[dnsbl]\nmetrics_listen = \"9188\"").expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("config dnsbl.metrics_listen = \"9188\""),
            "{error}"
        );
        assert!(parse("[dnsbl]\nbogus = 1").is_err());
    }

    #[test]
    fn rbldnsd_zone_specs_merge_by_name() {
        let a = ZoneSpec::parse_rbldnsd("bl.test:ip4set:a,b").expect("valid");
        let b = ZoneSpec::parse_rbldnsd("bl.test:dnset:c").expect("valid");
        let merged = merge_zones(vec![a, b]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].datasets.len(), 2);
    }
}
