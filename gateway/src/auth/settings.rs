//! `[auth]`: the settings of sender authentication, as written and as validated.
//!
//! The section is parsed with serde into [`AuthSection`], every key optional, then validated
//! into [`AuthSettings`]. The resolver is not a key of its own: every DNS check of the gateway
//! goes through `[smtp] dns_resolver`, which the caller passes in.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::{AuthError, bad_value};

/// Default time one check (SPF of an identity, DKIM, ARC or DMARC) may take before its result
/// is `temperror`. RFC 7208 section 4.6.4 asks that an overall SPF limit allow at least 20
/// seconds; the client waits at most this long at MAIL FROM, well inside the 5 minutes RFC 5321
/// section 4.5.3.2 gives it.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(20);

/// Default time one DNS query may take. Short, so that a dead name server of one domain costs
/// a `temperror` for that domain quickly instead of eating the whole check's time.
pub const DEFAULT_AUTH_DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest `timeout` accepted: sessions wait for the checks, so they must stay short.
const MAX_AUTH_TIMEOUT: Duration = Duration::from_secs(120);

/// What a DMARC failure leads to, for one policy of the author's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcEnforcement {
    /// Refuse the message at the end of DATA (550 5.7.1).
    Reject,
    /// Accept it, marked for quarantine (the spam folder, or held).
    Quarantine,
    /// Accept it; the failure only shows in Authentication-Results and the score.
    Tag,
}

/// `[auth]` as written: every key optional; the section's presence turns the checks on.
///
/// ```toml
/// [auth]
/// timeout = "20s"                 # time one check may take; then its result is temperror
/// dns_timeout = "3s"              # time one DNS query may take
/// dmarc_reject = "reject"         # a DMARC failure under p=reject: "reject" (550 5.7.1),
///                                 # "quarantine" or "tag" (only Authentication-Results)
/// dmarc_quarantine = "quarantine" # a DMARC failure under p=quarantine: "quarantine" or "tag"
/// authserv_id = "mx.example.com"  # the name in Authentication-Results; default: hostname
/// ```
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Time one check may take ("20s").
    pub timeout: Option<String>,
    /// Time one DNS query may take ("3s").
    pub dns_timeout: Option<String>,
    /// What a DMARC failure under `p=reject` leads to: "reject", "quarantine" or "tag".
    pub dmarc_reject: Option<String>,
    /// What a DMARC failure under `p=quarantine` leads to: "quarantine" or "tag".
    pub dmarc_quarantine: Option<String>,
    /// The authserv-id of the Authentication-Results header; the server's hostname by default.
    pub authserv_id: Option<String>,
}

/// The validated settings of sender authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The caching resolver every check asks; `None` uses /etc/resolv.conf.
    pub resolver: Option<SocketAddr>,
    /// Time one check may take.
    pub timeout: Duration,
    /// Time one DNS query may take.
    pub dns_timeout: Duration,
    /// What a DMARC failure under `p=reject` leads to.
    pub dmarc_reject: DmarcEnforcement,
    /// What a DMARC failure under `p=quarantine` leads to (never [`DmarcEnforcement::Reject`]).
    pub dmarc_quarantine: DmarcEnforcement,
    /// The name this server gives itself in Authentication-Results (RFC 8601 section 2.5).
    pub authserv_id: String,
}

impl AuthSettings {
    /// The defaults, with `authserv_id` (the server's hostname) and the resolver at `resolver`.
    pub fn new(authserv_id: impl Into<String>, resolver: Option<SocketAddr>) -> AuthSettings {
        AuthSettings {
            resolver,
            timeout: DEFAULT_AUTH_TIMEOUT,
            dns_timeout: DEFAULT_AUTH_DNS_TIMEOUT,
            dmarc_reject: DmarcEnforcement::Reject,
            dmarc_quarantine: DmarcEnforcement::Quarantine,
            authserv_id: authserv_id.into(),
        }
    }

    /// Checks what the types cannot: sensible times and an authserv-id that needs no quoting.
    ///
    /// # Errors
    /// [`AuthError::Value`] naming the first bad setting.
    pub(super) fn check(&self) -> Result<(), AuthError> {
        if self.timeout.is_zero() || self.timeout > MAX_AUTH_TIMEOUT {
            return Err(bad_value(
                "timeout",
                humantime::format_duration(self.timeout),
                "from 1ms to 2m",
            ));
        }
        if self.dns_timeout.is_zero() || self.dns_timeout > self.timeout {
            return Err(bad_value(
                "dns_timeout",
                humantime::format_duration(self.dns_timeout),
                "from 1ms to the value of timeout",
            ));
        }
        if self.dmarc_quarantine == DmarcEnforcement::Reject {
            return Err(bad_value(
                "dmarc_quarantine",
                "reject",
                "\"quarantine\" or \"tag\"",
            ));
        }
        if !is_authserv_id(&self.authserv_id) {
            return Err(bad_value(
                "authserv_id",
                &self.authserv_id,
                "a host name, as mx.example.com",
            ));
        }
        Ok(())
    }
}

impl AuthSection {
    /// Validates the section; `dns_resolver` is `[smtp] dns_resolver` and `hostname` the
    /// server's name, the default authserv-id.
    ///
    /// # Errors
    /// [`AuthError::Value`] naming the first bad key, its value and what is accepted.
    pub fn validate(
        self,
        dns_resolver: Option<SocketAddr>,
        hostname: &str,
    ) -> Result<AuthSettings, AuthError> {
        let mut settings = AuthSettings::new(
            self.authserv_id.as_deref().unwrap_or(hostname).trim(),
            dns_resolver,
        );
        if let Some(text) = &self.timeout {
            settings.timeout = duration("timeout", text)?;
        }
        if let Some(text) = &self.dns_timeout {
            settings.dns_timeout = duration("dns_timeout", text)?;
        }
        if let Some(text) = &self.dmarc_reject {
            settings.dmarc_reject = enforcement("dmarc_reject", text)?;
        }
        if let Some(text) = &self.dmarc_quarantine {
            settings.dmarc_quarantine = enforcement("dmarc_quarantine", text)?;
        }
        settings.check()?;
        Ok(settings)
    }
}

fn duration(key: &'static str, text: &str) -> Result<Duration, AuthError> {
    humantime::parse_duration(text.trim())
        .map_err(|_| bad_value(key, text, "a duration such as \"500ms\", \"3s\" or \"1m\""))
}

fn enforcement(key: &'static str, text: &str) -> Result<DmarcEnforcement, AuthError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "reject" => Ok(DmarcEnforcement::Reject),
        "quarantine" => Ok(DmarcEnforcement::Quarantine),
        "tag" => Ok(DmarcEnforcement::Tag),
        _ => Err(bad_value(
            key,
            text,
            "\"reject\", \"quarantine\" or \"tag\"",
        )),
    }
}

/// Whether `id` can stand unquoted as an authserv-id: a host name of letters, digits, hyphens
/// and dots (RFC 8601 section 2.5 recommends the host name of the server).
fn is_authserv_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_like: &[(&str, &str)]) -> AuthSection {
        let mut section = AuthSection::default();
        for (key, value) in toml_like {
            let value = Some((*value).to_string());
            match *key {
                "timeout" => section.timeout = value,
                "dns_timeout" => section.dns_timeout = value,
                "dmarc_reject" => section.dmarc_reject = value,
                "dmarc_quarantine" => section.dmarc_quarantine = value,
                "authserv_id" => section.authserv_id = value,
                other => panic!("no key {other}"),
            }
        }
        section
    }

    #[test]
    fn an_empty_section_gives_the_defaults_and_the_hostname() {
        let settings = AuthSection::default()
            .validate(None, "mx.example.net")
            .expect("valid");
        assert_eq!(settings, AuthSettings::new("mx.example.net", None));
        assert_eq!(settings.dmarc_reject, DmarcEnforcement::Reject);
    }

    #[test]
    fn keys_override_the_defaults() {
        let resolver: SocketAddr = "127.0.0.1:5353".parse().expect("address");
        let settings = section(&[
            ("timeout", "5s"),
            ("dns_timeout", "500ms"),
            ("dmarc_reject", "Quarantine"),
            ("dmarc_quarantine", "tag"),
            ("authserv_id", "mx1.example.com"),
        ])
        .validate(Some(resolver), "ignored.example.net")
        .expect("valid");
        assert_eq!(settings.resolver, Some(resolver));
        assert_eq!(settings.timeout, Duration::from_secs(5));
        assert_eq!(settings.dns_timeout, Duration::from_millis(500));
        assert_eq!(settings.dmarc_reject, DmarcEnforcement::Quarantine);
        assert_eq!(settings.dmarc_quarantine, DmarcEnforcement::Tag);
        assert_eq!(settings.authserv_id, "mx1.example.com");
    }

    #[test]
    fn a_bad_value_names_the_key_the_value_and_what_is_accepted() {
        let error = section(&[("dmarc_reject", "bounce")])
            .validate(None, "mx.example.net")
            .expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "auth.dmarc_reject = \"bounce\": expected \"reject\", \"quarantine\" or \"tag\""
        );
    }

    #[test]
    fn refuses_times_that_could_hang_a_session_or_never_run() {
        for (key, value) in [
            ("timeout", "0s"),
            ("timeout", "10m"),
            ("timeout", "soon"),
            ("dns_timeout", "30s"),
        ] {
            let result = section(&[(key, value)]).validate(None, "mx.example.net");
            assert!(result.is_err(), "{key} = {value} was accepted");
        }
    }

    #[test]
    fn a_quarantine_policy_is_never_raised_to_a_rejection() {
        let result = section(&[("dmarc_quarantine", "reject")]).validate(None, "mx.example.net");
        assert!(result.is_err());
    }

    #[test]
    fn the_authserv_id_must_be_a_host_name() {
        for id in ["mx.example.com", "localhost", "mx-1.example"] {
            assert!(is_authserv_id(id), "{id}");
        }
        for id in ["", "mx example.com", "mx;evil", "a..b", "\"quoted\""] {
            let result = section(&[("authserv_id", id)]).validate(None, "mx.example.net");
            assert!(result.is_err(), "{id:?} was accepted");
        }
    }
}
