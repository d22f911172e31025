//! The `[greylist]` configuration section: serde structs as written, validated into
//! [`GreylistSettings`] that cannot hold an invalid value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exemptions::{Cidr, Exemptions};
use crate::policy::{
    DEFAULT_AUTO_WHITELIST_CLIENTS, DEFAULT_DELAY, DEFAULT_MAX_AGE, DEFAULT_RETRY_WINDOW, Rules,
};
use crate::reply::FailureMode;
use crate::store::embedded::{DEFAULT_SYNC_INTERVAL, FILE_NAME};
use crate::triplet::{ClientGrouping, DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX};

/// How long a decision may take before the failure mode answers. Postfix waits 100 s for a
/// policy server by default (`smtpd_policy_service_timeout`); 2 s keeps an outage of the store
/// from holding SMTP sessions, and is far above a healthy store's milliseconds.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// The longest budget accepted: it must stay below Postfix's 100 s policy timeout.
pub const MAX_BUDGET: Duration = Duration::from_secs(60);

/// How often expired records are removed.
pub const DEFAULT_EXPIRE_INTERVAL: Duration = Duration::from_secs(3600);

/// Connections each MySQL shard's pool keeps at most, per primary or replica.
pub const DEFAULT_MYSQL_CONNECTIONS: usize = 16;

/// A `[greylist]` value Moat cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key has a value outside what is accepted.
    #[error("greylist.{key} = {value:?}: expected {expected}")]
    Value {
        /// The key within `[greylist]`.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

fn bad(key: &str, value: impl ToString, expected: &str) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    }
}

/// `[greylist]` as written; every key optional. See moat.example.toml for each.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistSection {
    /// Least time before a retry passes ("5m").
    pub delay: Option<String>,
    /// Most time after the first attempt for a retry to pass ("2d").
    pub retry_window: Option<String>,
    /// How long passed triplets and whitelisted clients stay known unseen ("35d").
    pub max_age: Option<String>,
    /// Passes after which a client network is whitelisted; 0 turns it off.
    pub auto_whitelist_clients: Option<u32>,
    /// IPv4 grouping prefix length.
    pub ipv4_prefix: Option<u8>,
    /// IPv6 grouping prefix length.
    pub ipv6_prefix: Option<u8>,
    /// Domains whose forward-confirmed clients form one pool; "*" for all.
    pub pool_domains: Option<Vec<String>>,
    /// Client networks never greylisted.
    pub exempt_clients: Option<Vec<String>>,
    /// Sender domains never greylisted.
    pub exempt_sender_domains: Option<Vec<String>>,
    /// Recipient domains never greylisted.
    pub exempt_recipient_domains: Option<Vec<String>>,
    /// Provider domains exempt when SPF passed.
    pub spf_pass_domains: Option<Vec<String>>,
    /// Greylist only mail scored above this.
    pub only_above_score: Option<f32>,
    /// Greylist only clients without forward-confirmed reverse DNS.
    pub only_without_fcrdns: Option<bool>,
    /// Time a decision may take ("2s").
    pub budget: Option<String>,
    /// "accept" or "tempfail" when the store fails.
    pub failure_mode: Option<String>,
    /// How often expired records are removed ("1h").
    pub expire_interval: Option<String>,
    /// The host name in the X-Greylist header.
    pub hostname: Option<String>,
    /// Where `moat greylist policy` listens when `--listen` is not given.
    pub policy_listen: Option<String>,
    /// "embedded" (the default) or "mysql".
    pub store: Option<String>,
    /// Embedded store: longest time between durable commits ("1s").
    pub sync_interval: Option<String>,
    /// MySQL shards, `[[greylist.shard]]`.
    #[serde(default)]
    pub shard: Vec<ShardSection>,
}

/// `[[greylist.shard]]`: one MySQL shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSection {
    /// A stable name: keys are placed by it, so renaming a shard moves its keys.
    pub name: String,
    /// The primary, as `mysql://user:password@host:port/database`.
    pub primary: String,
    /// Read replicas of the primary, same form.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Pool size per server.
    pub max_connections: Option<usize>,
}

/// Validated greylisting settings.
#[derive(Debug, Clone)]
pub struct GreylistSettings {
    /// The timing of the rule.
    pub rules: Rules,
    /// How clients group into networks and pools.
    pub grouping: ClientGrouping,
    /// Exemptions and gating.
    pub exemptions: Exemptions,
    /// Time a decision may take.
    pub budget: Duration,
    /// What a failed or slow store answers.
    pub failure_mode: FailureMode,
    /// How often expiry runs.
    pub expire_interval: Duration,
    /// The host name in the X-Greylist header.
    pub hostname: String,
    /// The policy service's address from the file, if any.
    pub policy_listen: Option<SocketAddr>,
    /// The store.
    pub backend: Backend,
}

/// The store chosen.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One redb file.
    Embedded {
        /// The file.
        path: PathBuf,
        /// Longest time between durable commits.
        sync_interval: Duration,
    },
    /// MySQL shards.
    Mysql(Vec<ShardSettings>),
}

/// One validated MySQL shard.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// The shard's name.
    pub name: String,
    /// The primary's URL.
    pub primary: String,
    /// The replicas' URLs.
    pub replicas: Vec<String>,
    /// Pool size per server.
    pub max_connections: usize,
}

impl GreylistSection {
    /// Checks every value; the embedded store's file goes into `data_dir`.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the first bad key, its value and what is accepted.
    pub fn validate(self, data_dir: &Path) -> Result<GreylistSettings, ConfigError> {
        let rules = self.rules()?;
        let grouping = self.grouping()?;
        let exemptions = self.exemptions()?;

        let budget = duration("budget", self.budget.as_deref(), DEFAULT_BUDGET)?;
        if budget.is_zero() || budget > MAX_BUDGET {
            return Err(bad(
                "budget",
                humantime::format_duration(budget),
                "from 1ms to 60s",
            ));
        }
        let failure_mode = match self.failure_mode.as_deref() {
            None | Some("accept") => FailureMode::Accept,
            Some("tempfail") => FailureMode::TempFail,
            Some(other) => return Err(bad("failure_mode", other, "\"accept\" or \"tempfail\"")),
        };
        let expire_interval = duration(
            "expire_interval",
            self.expire_interval.as_deref(),
            DEFAULT_EXPIRE_INTERVAL,
        )?;
        if expire_interval < Duration::from_secs(1) {
            return Err(bad(
                "expire_interval",
                humantime::format_duration(expire_interval),
                "1s or more",
            ));
        }
        let policy_listen = match &self.policy_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                bad(
                    "policy_listen",
                    text,
                    "an address and port, as 127.0.0.1:10023",
                )
            })?),
        };
        let hostname = self.hostname.clone().unwrap_or_else(system_hostname);
        let backend = self.backend(data_dir)?;

        Ok(GreylistSettings {
            rules,
            grouping,
            exemptions,
            budget,
            failure_mode,
            expire_interval,
            hostname,
            policy_listen,
            backend,
        })
    }

    fn rules(&self) -> Result<Rules, ConfigError> {
        let delay = duration("delay", self.delay.as_deref(), DEFAULT_DELAY)?.as_secs();
        let retry_window = duration(
            "retry_window",
            self.retry_window.as_deref(),
            DEFAULT_RETRY_WINDOW,
        )?
        .as_secs();
        let max_age = duration("max_age", self.max_age.as_deref(), DEFAULT_MAX_AGE)?.as_secs();
        if delay == 0 {
            return Err(bad(
                "delay",
                self.delay.as_deref().unwrap_or(""),
                "1s or more",
            ));
        }
        // The window must leave room for a retry after the delay.
        if retry_window <= delay {
            let value = self.retry_window.as_deref().unwrap_or("2d");
            return Err(bad("retry_window", value, "longer than delay"));
        }
        if max_age < retry_window {
            let value = self.max_age.as_deref().unwrap_or("35d");
            return Err(bad("max_age", value, "at least retry_window"));
        }
        let auto_whitelist_after = self
            .auto_whitelist_clients
            .unwrap_or(DEFAULT_AUTO_WHITELIST_CLIENTS);
        Ok(Rules {
            delay,
            retry_window,
            max_age,
            auto_whitelist_after,
        })
    }

    fn grouping(&self) -> Result<ClientGrouping, ConfigError> {
        let ipv4_prefix = self.ipv4_prefix.unwrap_or(DEFAULT_IPV4_PREFIX);
        if ipv4_prefix > 32 {
            return Err(bad("ipv4_prefix", ipv4_prefix, "0 to 32"));
        }
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
        if ipv6_prefix > 128 {
            return Err(bad("ipv6_prefix", ipv6_prefix, "0 to 128"));
        }
        let pool_domains = domains("pool_domains", self.pool_domains.as_deref(), true)?;
        Ok(ClientGrouping {
            ipv4_prefix,
            ipv6_prefix,
            pool_domains,
        })
    }

    fn exemptions(&self) -> Result<Exemptions, ConfigError> {
        let clients = self
            .exempt_clients
            .iter()
            .flatten()
            .map(|text| {
                text.parse::<Cidr>().map_err(|_| {
                    bad(
                        "exempt_clients",
                        text,
                        "addresses or networks as 192.0.2.0/24",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(score) = self.only_above_score
            && !score.is_finite()
        {
            return Err(bad("only_above_score", score, "a finite number"));
        }
        Ok(Exemptions {
            clients,
            sender_domains: domains(
                "exempt_sender_domains",
                self.exempt_sender_domains.as_deref(),
                false,
            )?,
            recipient_domains: domains(
                "exempt_recipient_domains",
                self.exempt_recipient_domains.as_deref(),
                false,
            )?,
            spf_pass_domains: domains("spf_pass_domains", self.spf_pass_domains.as_deref(), false)?,
            only_above_score: self.only_above_score,
            only_without_fcrdns: self.only_without_fcrdns.unwrap_or(false),
        })
    }

    fn backend(&self, data_dir: &Path) -> Result<Backend, ConfigError> {
        match self.store.as_deref() {
            None | Some("embedded") => {
                if !self.shard.is_empty() {
                    return Err(bad(
                        "shard",
                        "[[greylist.shard]]",
                        "shards only with store = \"mysql\"",
                    ));
                }
                let sync_interval = duration(
                    "sync_interval",
                    self.sync_interval.as_deref(),
                    DEFAULT_SYNC_INTERVAL,
                )?;
                Ok(Backend::Embedded {
                    path: data_dir.join(FILE_NAME),
                    sync_interval,
                })
            }
            Some("mysql") => self.shards().map(Backend::Mysql),
            Some(other) => Err(bad("store", other, "\"embedded\" or \"mysql\"")),
        }
    }

    fn shards(&self) -> Result<Vec<ShardSettings>, ConfigError> {
        if self.shard.is_empty() {
            return Err(bad(
                "shard",
                "(none)",
                "at least one [[greylist.shard]] with store = \"mysql\"",
            ));
        }
        let mut shards: Vec<ShardSettings> = Vec::new();
        for shard in &self.shard {
            if shard.name.is_empty() || shards.iter().any(|s| s.name == shard.name) {
                return Err(bad(
                    "shard.name",
                    &shard.name,
                    "a distinct, non-empty name per shard",
                ));
            }
            for url in std::iter::once(&shard.primary).chain(&shard.replicas) {
                if mysql_async::Opts::from_url(url).is_err() {
                    return Err(bad(
                        "shard.primary",
                        url,
                        "mysql://user:password@host:port/database",
                    ));
                }
            }
            let max_connections = shard.max_connections.unwrap_or(DEFAULT_MYSQL_CONNECTIONS);
            if max_connections == 0 {
                return Err(bad("shard.max_connections", 0, "1 or more"));
            }
            shards.push(ShardSettings {
                name: shard.name.clone(),
                primary: shard.primary.clone(),
                replicas: shard.replicas.clone(),
                max_connections,
            });
        }
        Ok(shards)
    }
}

fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|_| bad(key, text, "a duration such as \"300s\", \"5m\" or \"2d\"")),
    }
}

fn domains(
    key: &str,
    list: Option<&[String]>,
    allow_star: bool,
) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for domain in list.unwrap_or_default() {
        let normal = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = normal.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if !(valid || (allow_star && normal == "*")) {
            return Err(bad(key, domain, "domain names, as example.com"));
        }
        out.push(normal);
    }
    Ok(out)
}

/// The machine's host name, for the X-Greylist header.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GreylistSettings, ConfigError> {
        let section: GreylistSection = toml::from_str(text).expect("valid TOML");
        section.validate(Path::new("/var/lib/moat"))
    }

    #[test]
    fn empty_section_gives_postgrey_defaults_and_the_embedded_store() {
        let settings = parse("").expect("valid");
        assert_eq!(settings.rules, Rules::default());
        assert_eq!(settings.grouping, ClientGrouping::default());
        assert_eq!(settings.budget, DEFAULT_BUDGET);
        assert_eq!(settings.failure_mode, FailureMode::Accept);
        let Backend::Embedded { path, .. } = settings.backend else {
            panic!("embedded by default");
        };
        assert_eq!(path, Path::new("/var/lib/moat/greylist.redb"));
    }

    #[test]
    fn reads_every_key() {
        let settings = parse(
            r#"
            delay = "60s"
            retry_window = "1d"
            max_age = "10d"
            auto_whitelist_clients = 0
            ipv4_prefix = 32
            ipv6_prefix = 48
            pool_domains = ["Mail.Example.com."]
            exempt_clients = ["192.0.2.0/24", "2001:db8::1"]
            exempt_sender_domains = ["partner.example"]
            exempt_recipient_domains = ["abuse.example"]
            spf_pass_domains = ["bigmail.example"]
            only_above_score = 3.5
            only_without_fcrdns = true
            budget = "500ms"
            failure_mode = "tempfail"
            expire_interval = "10m"
            hostname = "mx.example"
            policy_listen = "127.0.0.1:10023"
            "#,
        )
        .expect("valid");
        assert_eq!(settings.rules.delay, 60);
        assert_eq!(settings.rules.auto_whitelist_after, 0);
        assert_eq!(settings.grouping.pool_domains, ["mail.example.com"]);
        assert_eq!(settings.exemptions.clients.len(), 2);
        assert_eq!(settings.budget, Duration::from_millis(500));
        assert_eq!(settings.failure_mode, FailureMode::TempFail);
        assert_eq!(settings.hostname, "mx.example");
    }

    #[test]
    fn refuses_unknown_keys() {
        assert!(toml::from_str::<GreylistSection>("delai = \"5m\"").is_err());
    }

    #[test]
    fn names_the_key_value_and_what_is_accepted() {
        let error = parse("delay = \"soon\"").expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "greylist.delay = \"soon\": expected a duration such as \"300s\", \"5m\" or \"2d\""
        );
        let error = parse("failure_mode = \"panic\"").expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("greylist.failure_mode = \"panic\"")
        );
    }

    #[test]
    fn refuses_a_retry_window_no_longer_than_the_delay() {
        assert!(parse("delay = \"1h\"\nretry_window = \"1h\"").is_err());
    }

    #[test]
    fn refuses_budgets_postfix_would_not_wait_for() {
        assert!(parse("budget = \"2m\"").is_err());
        assert!(parse("budget = \"0s\"").is_err());
    }

    #[test]
    fn mysql_needs_distinct_named_shards_with_urls() {
        assert!(parse("store = \"mysql\"").is_err());
        let two = r#"
            store = "mysql"
            [[shard]]
            name = "a"
            primary = "mysql://moat@127.0.0.1:3306/moat"
            replicas = ["mysql://moat@127.0.0.1:3307/moat"]
            [[shard]]
            name = "a"
            primary = "mysql://moat@127.0.0.1:3308/moat"
        "#;
        assert!(parse(two).is_err());
        let ok = two.replacen("name = \"a\"", "name = \"b\"", 1);
        let Backend::Mysql(shards) = parse(&ok).expect("valid").backend else {
            panic!("mysql");
        };
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].replicas.len(), 1);
    }
}
