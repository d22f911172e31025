//! The configuration file: TOML parsed into serde structs, then validated into runtime settings.
//!
//! Every key is optional, so `moat serve` with no file runs the embedded default: SMTP on
//! 127.0.0.1:2525, mail for `localhost` into a Maildir under `./moat-data`. See
//! moat.example.toml for every key with its default.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_delivery::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE_LIFETIME, DEFAULT_RETRY_SCHEDULE, DeliveryConfig, Route,
    Timeouts,
};
use moat_gateway::{
    AcceptedDomains, BareNewline, DEFAULT_DNSBL_TIMEOUT, DEFAULT_SUBJECT_TAG, DnsblSettings,
    DnsblSite, RecipientList, SmtpConfig, Thresholds, VerdictPolicy,
};
use serde::Deserialize;

/// Where SMTP listens when nothing says otherwise: loopback and an unprivileged port, so a
/// first run needs no root and exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// The data directory when nothing says otherwise, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./moat-data";

/// The domain accepted when the configuration names none.
pub const DEFAULT_DOMAIN: &str = "localhost";

/// Default DNSBL score that refuses a client, as postscreen_dnsbl_threshold.
const DEFAULT_DNSBL_THRESHOLD: i32 = 1;

/// Default DNSBL score at or below which a client is allowlisted, as
/// postscreen_dnsbl_allowlist_threshold.
const DEFAULT_DNSBL_ALLOWLIST_THRESHOLD: i32 = -1;

/// Default timeout to open a connection to a downstream host.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default timeout for each downstream reply (RFC 5321 section 4.5.3.2 gives 5 minutes for most).
const DEFAULT_DOWNSTREAM_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys; the parser's message gives the line.
    #[error("config file {path}: {detail}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        detail: String,
    },
    /// The `[greylist]` section has a value the greylist cannot use.
    #[error("config {0}")]
    Greylist(moat_greylist::ConfigError),
    /// A key has a value Moat cannot use.
    #[error("config {key} = {value:?}: {expected}")]
    Value {
        /// The key, with its section.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the queue, TLS files and default Maildir live.
    pub data_dir: Option<PathBuf>,
    /// The server's name in greetings and headers.
    pub hostname: Option<String>,
    /// The SMTP server.
    #[serde(default)]
    pub smtp: SmtpSection,
    /// STARTTLS certificate.
    #[serde(default)]
    pub tls: TlsSection,
    /// The queue and relay.
    #[serde(default)]
    pub delivery: DeliverySection,
    /// Accepted domains.
    #[serde(default)]
    pub domain: Vec<DomainSection>,
    /// Greylisting at RCPT; on when the section is present.
    pub greylist: Option<moat_greylist::GreylistSection>,
    /// Blocklist zones this node serves over DNS, beside the gateway, which also looks its
    /// clients up in them in-process.
    pub dnsbl: Option<moat_dnsbl::DnsblConfig>,
    /// Sender authentication (SPF, DKIM, ARC, DMARC); on when the section is present.
    pub auth: Option<moat_gateway::AuthSection>,
    /// How check scores become actions.
    #[serde(default)]
    pub verdict: VerdictSection,
    /// Content rules and both anti-virus layers; on when the section is present.
    pub content: Option<moat_gateway::content::ContentSection>,
    /// The Prometheus metrics endpoint; on when the section is present.
    pub metrics: Option<MetricsSection>,
    /// The statistical classifier, run with the content checks.
    #[serde(default)]
    pub classifier: moat_gateway::classifier::ClassifierSection,
    /// The directory of the file, which relative paths are taken from; empty (the working
    /// directory) for the embedded default.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[metrics]`: where `GET /metrics` is answered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct MetricsSection {
    pub listen: String,
}

/// `[verdict]`: thresholds of the score, and `[[verdict.domain]]` overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct VerdictSection {
    pub tag_at: Option<f32>,
    pub quarantine_at: Option<f32>,
    pub reject_at: Option<f32>,
    pub reject_viruses: Option<bool>,
    pub subject_tag: Option<String>,
    #[serde(default)]
    pub domain: Vec<VerdictDomainSection>,
}

/// `[[verdict.domain]]`: one recipient domain's own thresholds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct VerdictDomainSection {
    pub name: String,
    pub tag_at: Option<f32>,
    pub quarantine_at: Option<f32>,
    pub reject_at: Option<f32>,
    pub reject_viruses: Option<bool>,
}

/// `[smtp]`: see moat.example.toml for each key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SmtpSection {
    pub listen: Option<Vec<String>>,
    pub max_message_size: Option<usize>,
    pub max_content_in_memory: Option<usize>,
    pub max_recipients: Option<usize>,
    pub max_errors: Option<u32>,
    pub max_sessions: Option<usize>,
    pub max_sessions_per_ip: Option<usize>,
    pub max_command_line: Option<usize>,
    pub max_text_line: Option<usize>,
    pub command_timeout: Option<String>,
    pub data_timeout: Option<String>,
    pub pregreet_wait: Option<String>,
    pub pregreet_pass_ttl: Option<String>,
    pub bare_newline: Option<String>,
    pub dnsbl_threshold: Option<i32>,
    pub dnsbl_allowlist_threshold: Option<i32>,
    pub dnsbl_timeout: Option<String>,
    pub dns_resolver: Option<String>,
    #[serde(default)]
    pub dnsbl_site: Vec<DnsblSiteSection>,
    #[serde(default)]
    pub uribl_site: Vec<DnsblSiteSection>,
}

/// `[[smtp.dnsbl_site]]`: one DNSBL or DNSWL the gateway asks about each client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DnsblSiteSection {
    pub zone: String,
    pub weight: Option<i32>,
    pub codes: Option<Vec<String>>,
}

/// `[tls]`: PEM files; both or neither.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TlsSection {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

/// `[delivery]`: see moat.example.toml for each key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DeliverySection {
    pub concurrency: Option<usize>,
    pub retry_schedule: Option<Vec<String>>,
    pub max_queue_lifetime: Option<String>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub fallback_route: Option<String>,
}

/// `[[domain]]`: one accepted domain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DomainSection {
    pub name: String,
    pub route: Option<String>,
    pub recipients: Option<PathBuf>,
}

/// Command-line overrides of the file.
#[derive(Debug, Default)]
pub struct Overrides {
    /// Replaces `[smtp] listen`.
    pub listen: Vec<String>,
    /// Replaces the domains with these, each accept-all into the default Maildir.
    pub domains: Vec<String>,
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
}

/// Validated settings, ready to start the services.
#[derive(Debug)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listen: Vec<SocketAddr>,
    /// The SMTP server's settings.
    pub smtp: SmtpConfig,
    /// STARTTLS files, or `None` for the self-signed pair in the data directory.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Accepted domains and their recipient lists.
    pub domains: AcceptedDomains,
    /// The queue manager's settings, with each domain's route.
    pub delivery: DeliveryConfig,
    /// The greylist's settings, when `[greylist]` is present.
    pub greylist: Option<moat_greylist::GreylistSettings>,
    /// The DNSBL check of clients, when `[[smtp.dnsbl_site]]` lists any.
    pub dnsbl_check: Option<DnsblSettings>,
    /// The zones served over DNS beside the gateway, when `[dnsbl]` is present.
    pub dnsbl_server: Option<moat_dnsbl::Settings>,
    /// The resolver the checks share; `None` for /etc/resolv.conf.
    pub dns_resolver: Option<SocketAddr>,
    /// Sender authentication, when `[auth]` is present.
    pub auth: Option<moat_gateway::AuthSettings>,
    /// The verdict policy.
    pub verdict: VerdictPolicy,
    /// Content checks, when `[content]` is present.
    pub content: Option<moat_gateway::content::ContentSettings>,
    /// Where the metrics endpoint listens, when `[metrics]` is present.
    pub metrics_listen: Option<SocketAddr>,
    /// The statistical classifier's settings.
    pub classifier: moat_gateway::classifier::ClassifierSettings,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Syntax`] naming the file and line.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: FileConfig =
            toml::from_str(&text).map_err(|error| ConfigError::Syntax {
                path: path.to_path_buf(),
                detail: error.to_string().trim_end().to_string(),
            })?;
        config.base_dir = crate::dnsbl::config_dir(path);
        let base_dir = config.base_dir.clone();
        config.anchor_paths(&base_dir);
        Ok(config)
    }

    /// Takes every relative path the file names from the file's own directory, as `[dnsbl]`'s
    /// datasets are: the working directory of a service is rarely where its configuration is,
    /// and one rule for every path is what an operator can remember. Defaults that the file
    /// leaves out (`./moat-data`) stay relative to the working directory.
    fn anchor_paths(&mut self, base: &Path) {
        let anchor = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let anchor_route = |route: &mut String| {
            let Some((transport, rest)) = route.split_once(':') else {
                return;
            };
            if transport.eq_ignore_ascii_case("maildir")
                && !rest.is_empty()
                && Path::new(rest).is_relative()
            {
                *route = format!("{transport}:{}", base.join(rest).display());
            }
        };

        if let Some(data_dir) = &mut self.data_dir {
            anchor(data_dir);
        }
        if let Some(certificate) = &mut self.tls.certificate {
            anchor(certificate);
        }
        if let Some(private_key) = &mut self.tls.private_key {
            anchor(private_key);
        }
        for domain in &mut self.domain {
            if let Some(recipients) = &mut domain.recipients {
                anchor(recipients);
            }
            if let Some(route) = &mut domain.route {
                anchor_route(route);
            }
        }
        if let Some(route) = &mut self.delivery.fallback_route {
            anchor_route(route);
        }
        if let Some(content) = &mut self.content {
            if let Some(rules_file) = &mut content.rules_file {
                anchor(rules_file);
            }
            if let Some(signatures_dir) = &mut content.signatures_dir {
                anchor(signatures_dir);
            }
        }
    }

    /// Applies the overrides and checks every value.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the first bad key and what it accepts.
    pub fn validate(self, overrides: Overrides) -> Result<Settings, ConfigError> {
        let data_dir = overrides
            .data_dir
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let hostname = self.hostname.unwrap_or_else(system_hostname);
        let default_route = Route::Maildir(data_dir.join("mail"));

        let listen_texts = if overrides.listen.is_empty() {
            self.smtp
                .listen
                .clone()
                .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
        } else {
            overrides.listen
        };
        let listen = listen_texts
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| ConfigError::Value {
                    key: "smtp.listen".into(),
                    value: text.clone(),
                    expected: "an IP address and port, as 0.0.0.0:25 or [::]:25".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let smtp = smtp_config(&self.smtp, hostname.clone())?;
        let tls_files = match (self.tls.certificate, self.tls.private_key) {
            (Some(certificate), Some(private_key)) => Some((certificate, private_key)),
            (None, None) => None,
            (certificate, _) => {
                return Err(ConfigError::Value {
                    key: "tls".into(),
                    value: format!("{certificate:?}"),
                    expected: "both certificate and private_key, or neither".into(),
                });
            }
        };

        let sections = if overrides.domains.is_empty() {
            self.domain
        } else {
            overrides
                .domains
                .into_iter()
                .map(|name| DomainSection {
                    name,
                    route: None,
                    recipients: None,
                })
                .collect()
        };
        let (domains, routes) = domains(sections, &default_route)?;
        let delivery = delivery_config(&self.delivery, hostname.clone(), routes)?;
        let dnsbl_check = dnsbl_check(&self.smtp)?;
        let dns_resolver = dns_resolver(&self.smtp)?;
        let auth = match self.auth {
            Some(section) => Some(section.validate(dns_resolver, &hostname).map_err(|error| {
                ConfigError::Value {
                    key: "auth".into(),
                    value: String::new(),
                    expected: error.to_string(),
                }
            })?),
            None => None,
        };
        let verdict = verdict_policy(self.verdict)?;
        let content = match self.content {
            Some(section) => Some(section.validate().map_err(|error| ConfigError::Value {
                key: "content".into(),
                value: String::new(),
                expected: error.to_string(),
            })?),
            None => None,
        };
        let dnsbl_server = match &self.dnsbl {
            Some(section) => {
                Some(
                    section
                        .validate(&self.base_dir)
                        .map_err(|error| ConfigError::Value {
                            key: "dnsbl".into(),
                            value: String::new(),
                            expected: error.to_string(),
                        })?,
                )
            }
            None => None,
        };
        let greylist = match self.greylist {
            Some(section) => Some(section.validate(&data_dir).map_err(ConfigError::Greylist)?),
            None => None,
        };
        let metrics_listen = match &self.metrics {
            Some(section) => {
                Some(
                    section
                        .listen
                        .parse::<SocketAddr>()
                        .map_err(|_| ConfigError::Value {
                            key: "metrics.listen".into(),
                            value: section.listen.clone(),
                            expected: "an IP address and port, as 127.0.0.1:9187".into(),
                        })?,
                )
            }
            None => None,
        };
        let classifier = self
            .classifier
            .validate()
            .map_err(|error| ConfigError::Value {
                key: format!("classifier.{}", error.key),
                value: error.value,
                expected: error.expected.into(),
            })?;
        Ok(Settings {
            classifier,
            metrics_listen,
            content,
            dns_resolver,
            auth,
            verdict,
            greylist,
            dnsbl_check,
            dnsbl_server,
            data_dir,
            listen,
            smtp,
            tls_files,
            domains,
            delivery,
        })
    }
}

/// The SMTP server's settings from `[smtp]`.
fn smtp_config(section: &SmtpSection, hostname: String) -> Result<SmtpConfig, ConfigError> {
    let mut smtp = SmtpConfig::with_hostname(hostname);
    let positive = |key: &str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(ConfigError::Value {
            key: format!("smtp.{key}"),
            value: "0".into(),
            expected: "a number above 0".into(),
        }),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    smtp.max_message_size = positive(
        "max_message_size",
        section.max_message_size,
        smtp.max_message_size,
    )?;
    // Below the size limit, a message the limit allows could never fit even alone, and would be
    // told 452 (try later) until its sender gives up days later: refused here instead.
    smtp.max_content_in_memory = match section.max_content_in_memory {
        Some(budget) if budget < smtp.max_message_size => {
            return Err(ConfigError::Value {
                key: "smtp.max_content_in_memory".into(),
                value: budget.to_string(),
                expected: format!(
                    "a number of octets at least smtp.max_message_size ({})",
                    smtp.max_message_size
                ),
            });
        }
        Some(budget) => budget,
        // A size limit above the default budget raises the budget with it, for the same reason.
        None => smtp.max_content_in_memory.max(smtp.max_message_size),
    };
    smtp.max_recipients = positive(
        "max_recipients",
        section.max_recipients,
        smtp.max_recipients,
    )?;
    smtp.max_sessions = positive("max_sessions", section.max_sessions, smtp.max_sessions)?;
    smtp.max_sessions_per_ip = positive(
        "max_sessions_per_ip",
        section.max_sessions_per_ip,
        smtp.max_sessions_per_ip,
    )?;
    smtp.max_command_line = positive(
        "max_command_line",
        section.max_command_line,
        smtp.max_command_line,
    )?;
    smtp.max_text_line = section.max_text_line.unwrap_or(smtp.max_text_line);
    smtp.max_errors = positive(
        "max_errors",
        section.max_errors.map(|n| n as usize),
        smtp.max_errors as usize,
    )? as u32;

    let duration = |key: &str, value: &Option<String>, default: Duration| {
        value.as_deref().map_or(Ok(default), |text| {
            parse_duration(&format!("smtp.{key}"), text)
        })
    };
    smtp.command_timeout = duration(
        "command_timeout",
        &section.command_timeout,
        smtp.command_timeout,
    )?;
    smtp.data_timeout = duration("data_timeout", &section.data_timeout, smtp.data_timeout)?;
    smtp.pregreet_wait = duration("pregreet_wait", &section.pregreet_wait, smtp.pregreet_wait)?;
    smtp.pregreet_pass_ttl = duration(
        "pregreet_pass_ttl",
        &section.pregreet_pass_ttl,
        smtp.pregreet_pass_ttl,
    )?;

    smtp.bare_newline = match section.bare_newline.as_deref() {
        None | Some("reject") => BareNewline::Reject,
        Some("normalize") => BareNewline::Normalize,
        Some(other) => {
            return Err(ConfigError::Value {
                key: "smtp.bare_newline".into(),
                value: other.into(),
                expected: "\"reject\" or \"normalize\"".into(),
            });
        }
    };
    Ok(smtp)
}

/// The DNSBL check from `[smtp]`'s dnsbl keys; `None` when no site is listed.
fn dnsbl_check(section: &SmtpSection) -> Result<Option<DnsblSettings>, ConfigError> {
    if section.dnsbl_site.is_empty() && section.uribl_site.is_empty() {
        return Ok(None);
    }
    let sites = dnsbl_sites(&section.dnsbl_site)?;
    let uri_sites = dnsbl_sites(&section.uribl_site)?;
    let timeout = match &section.dnsbl_timeout {
        Some(text) => parse_duration("smtp.dnsbl_timeout", text)?,
        None => DEFAULT_DNSBL_TIMEOUT,
    };
    Ok(Some(DnsblSettings {
        sites,
        uri_sites,
        threshold: section.dnsbl_threshold.unwrap_or(DEFAULT_DNSBL_THRESHOLD),
        allowlist_threshold: section
            .dnsbl_allowlist_threshold
            .unwrap_or(DEFAULT_DNSBL_ALLOWLIST_THRESHOLD),
        timeout,
    }))
}

/// The resolver the checks share, from `smtp.dns_resolver`.
fn dns_resolver(section: &SmtpSection) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(text) = &section.dns_resolver else {
        return Ok(None);
    };
    text.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| ConfigError::Value {
            key: "smtp.dns_resolver".into(),
            value: text.clone(),
            expected: "a resolver's IP address and port, as 127.0.0.1:53".into(),
        })
}

/// The verdict policy from `[verdict]`.
fn verdict_policy(section: VerdictSection) -> Result<VerdictPolicy, ConfigError> {
    let defaults = Thresholds::default();
    let base = Thresholds {
        tag_at: section.tag_at.unwrap_or(defaults.tag_at),
        quarantine_at: section.quarantine_at.unwrap_or(defaults.quarantine_at),
        reject_at: section.reject_at.unwrap_or(defaults.reject_at),
        reject_viruses: section.reject_viruses.unwrap_or(defaults.reject_viruses),
    };
    check_thresholds("verdict", &base)?;

    let mut domains = HashMap::new();
    for domain in section.domain {
        let thresholds = Thresholds {
            tag_at: domain.tag_at.unwrap_or(base.tag_at),
            quarantine_at: domain.quarantine_at.unwrap_or(base.quarantine_at),
            reject_at: domain.reject_at.unwrap_or(base.reject_at),
            reject_viruses: domain.reject_viruses.unwrap_or(base.reject_viruses),
        };
        let name = domain
            .name
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        check_thresholds(&format!("verdict.domain {name}"), &thresholds)?;
        domains.insert(name, thresholds);
    }
    Ok(VerdictPolicy {
        defaults: base,
        domains,
        subject_tag: section
            .subject_tag
            .unwrap_or_else(|| DEFAULT_SUBJECT_TAG.to_string()),
    })
}

/// Thresholds must rise: tag, then quarantine, then reject.
fn check_thresholds(key: &str, thresholds: &Thresholds) -> Result<(), ConfigError> {
    if thresholds.tag_at <= thresholds.quarantine_at
        && thresholds.quarantine_at <= thresholds.reject_at
    {
        return Ok(());
    }
    Err(ConfigError::Value {
        key: key.into(),
        value: format!(
            "tag_at {} quarantine_at {} reject_at {}",
            thresholds.tag_at, thresholds.quarantine_at, thresholds.reject_at
        ),
        expected: "tag_at <= quarantine_at <= reject_at".into(),
    })
}

/// The lists of `[[smtp.dnsbl_site]]` or `[[smtp.uribl_site]]`.
fn dnsbl_sites(sections: &[DnsblSiteSection]) -> Result<Vec<DnsblSite>, ConfigError> {
    let mut sites = Vec::with_capacity(sections.len());
    for site in sections {
        let codes = site
            .codes
            .iter()
            .flatten()
            .map(|code| parse_code_range(code))
            .collect::<Result<Vec<_>, _>>()?;
        sites.push(DnsblSite {
            zone: site.zone.trim().trim_end_matches('.').to_ascii_lowercase(),
            weight: site.weight.unwrap_or(1),
            codes,
        });
    }
    Ok(sites)
}

/// Parses a DNSBL answer code or range: `127.0.0.2` or `127.0.0.2-127.0.0.11`.
fn parse_code_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), ConfigError> {
    let bad = || ConfigError::Value {
        key: "smtp.dnsbl_site.codes".into(),
        value: text.into(),
        expected: "an address or an inclusive range, as 127.0.0.2 or 127.0.0.2-127.0.0.11".into(),
    };
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: Ipv4Addr = low.trim().parse().map_err(|_| bad())?;
    let high: Ipv4Addr = high.trim().parse().map_err(|_| bad())?;
    if low > high {
        return Err(bad());
    }
    Ok((low, high))
}

/// Accepted domains with their recipient lists, and their routes.
fn domains(
    sections: Vec<DomainSection>,
    default_route: &Route,
) -> Result<(AcceptedDomains, HashMap<String, Route>), ConfigError> {
    let sections = if sections.is_empty() {
        vec![DomainSection {
            name: DEFAULT_DOMAIN.into(),
            route: None,
            recipients: None,
        }]
    } else {
        sections
    };

    let mut accepted = AcceptedDomains::new();
    let mut routes = HashMap::new();
    for section in sections {
        let name = section
            .name
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if name.is_empty() || name.contains(['@', ' ', '/']) {
            return Err(ConfigError::Value {
                key: "domain.name".into(),
                value: section.name,
                expected: "a domain name, as example.com".into(),
            });
        }
        if routes.contains_key(&name) {
            return Err(ConfigError::Value {
                key: "domain.name".into(),
                value: name,
                expected: "each domain once".into(),
            });
        }

        let route = match &section.route {
            Some(text) => text.parse::<Route>().map_err(|error| ConfigError::Value {
                key: format!("domain {name} route"),
                value: text.clone(),
                expected: error.to_string(),
            })?,
            None => default_route.clone(),
        };
        let recipients = match &section.recipients {
            Some(path) => RecipientList::load(path, &name).map_err(|error| ConfigError::Value {
                key: format!("domain {name} recipients"),
                value: path.display().to_string(),
                expected: format!("a readable file of local parts ({})", error.source),
            })?,
            None => RecipientList::AcceptAll,
        };
        accepted.insert(&name, recipients);
        routes.insert(name, route);
    }
    Ok((accepted, routes))
}

/// The queue manager's settings from `[delivery]`.
fn delivery_config(
    section: &DeliverySection,
    hostname: String,
    routes: HashMap<String, Route>,
) -> Result<DeliveryConfig, ConfigError> {
    let retry_schedule = match &section.retry_schedule {
        Some(texts) if texts.is_empty() => {
            return Err(ConfigError::Value {
                key: "delivery.retry_schedule".into(),
                value: "[]".into(),
                expected: "at least one duration, as [\"5m\", \"1h\"]".into(),
            });
        }
        Some(texts) => texts
            .iter()
            .map(|text| parse_duration("delivery.retry_schedule", text))
            .collect::<Result<Vec<_>, _>>()?,
        None => DEFAULT_RETRY_SCHEDULE.to_vec(),
    };
    let duration = |key: &str, value: &Option<String>, default: Duration| {
        value.as_deref().map_or(Ok(default), |text| {
            parse_duration(&format!("delivery.{key}"), text)
        })
    };
    let fallback_route = match &section.fallback_route {
        Some(text) => Some(text.parse::<Route>().map_err(|error| ConfigError::Value {
            key: "delivery.fallback_route".into(),
            value: text.clone(),
            expected: error.to_string(),
        })?),
        None => None,
    };

    Ok(DeliveryConfig {
        hostname,
        routes,
        fallback_route,
        concurrency: section.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
        retry_schedule,
        max_queue_lifetime: duration(
            "max_queue_lifetime",
            &section.max_queue_lifetime,
            DEFAULT_MAX_QUEUE_LIFETIME,
        )?,
        timeouts: Timeouts {
            connect: duration(
                "connect_timeout",
                &section.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            command: duration(
                "command_timeout",
                &section.command_timeout,
                DEFAULT_DOWNSTREAM_COMMAND_TIMEOUT,
            )?,
            data: duration(
                "command_timeout",
                &section.command_timeout,
                DEFAULT_DOWNSTREAM_COMMAND_TIMEOUT,
            )?,
        },
    })
}

/// Parses "30s", "5m", "1h30m", "5d".
fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|error| ConfigError::Value {
        key: key.into(),
        value: text.into(),
        expected: format!("a duration such as \"30s\", \"5m\", \"2h\" or \"5d\" ({error})"),
    })
}

/// The machine's host name, or `localhost` when it cannot be read.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_embedded_default() {
        let settings = FileConfig::default()
            .validate(Overrides::default())
            .expect("valid");
        assert_eq!(
            settings.listen,
            vec![DEFAULT_LISTEN.parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(settings.domains.check("anyone@localhost"), Ok(()));
        assert_eq!(
            settings.delivery.routes.get("localhost"),
            Some(&Route::Maildir(
                PathBuf::from(DEFAULT_DATA_DIR).join("mail")
            ))
        );
    }

    #[test]
    fn relative_paths_in_a_file_are_taken_from_its_directory() {
        let dir = std::env::temp_dir().join(format!("moat-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        let path = dir.join("moat.toml");
        std::fs::write(
            &path,
            "data_dir = \"data\"\n\
             [tls]\ncertificate = \"tls/cert.pem\"\nprivate_key = \"/etc/key.pem\"\n\
             [[domain]]\nname = \"example.com\"\nroute = \"maildir:mail\"\n\
             recipients = \"lists/example.com\"\n\
             [[domain]]\nname = \"example.org\"\nroute = \"lmtp:127.0.0.1:24\"\n",
        )
        .expect("write the file");

        let config = FileConfig::load(&path).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(config.data_dir, Some(dir.join("data")));
        assert_eq!(config.tls.certificate, Some(dir.join("tls/cert.pem")));
        assert_eq!(config.tls.private_key, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(
            config.domain[0].route.as_deref(),
            Some(format!("maildir:{}", dir.join("mail").display()).as_str())
        );
        assert_eq!(
            config.domain[0].recipients,
            Some(dir.join("lists/example.com"))
        );
        assert_eq!(config.domain[1].route.as_deref(), Some("lmtp:127.0.0.1:24"));
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("moat.example.toml");
        let settings = FileConfig::load(&path)
            .expect("parses")
            .validate(Overrides::default());
        let settings = settings.expect("validates");
        assert_eq!(
            settings.smtp.max_message_size,
            moat_gateway::DEFAULT_MAX_MESSAGE_SIZE
        );
        assert_eq!(
            settings.delivery.retry_schedule,
            DEFAULT_RETRY_SCHEDULE.to_vec()
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let error = toml::from_str::<FileConfig>("[smtp]\nmax_mesage_size = 10\n")
            .expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("max_mesage_size"), "{text}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_accepted() {
        let file: FileConfig =
            toml::from_str("[smtp]\nbare_newline = \"lenient\"\n").expect("parses");
        let error = file
            .validate(Overrides::default())
            .expect_err("bad value")
            .to_string();
        assert!(error.contains("smtp.bare_newline"), "{error}");
        assert!(error.contains("\"reject\" or \"normalize\""), "{error}");
    }

    #[test]
    fn a_content_budget_below_the_size_limit_is_refused() {
        let file: FileConfig =
            toml::from_str("[smtp]\nmax_message_size = 2000\nmax_content_in_memory = 1999\n")
                .expect("parses");
        let error = file
            .validate(Overrides::default())
            .expect_err("bad value")
            .to_string();
        assert!(error.contains("smtp.max_content_in_memory"), "{error}");
        assert!(error.contains("1999"), "{error}");
        assert!(
            error.contains("at least smtp.max_message_size (2000)"),
            "{error}"
        );
    }
}
