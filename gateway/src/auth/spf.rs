//! SPF (RFC 7208) at MAIL FROM: the client's address checked against the policies of the
//! HELO name and of the reverse-path's domain.
//!
//! Both identities are checked at once. With the null reverse-path, the MAIL FROM identity is
//! `postmaster@` the HELO name (RFC 7208 section 2.4), so one check serves both. A check that
//! runs out of time is `temperror`, as a DNS failure would be (section 4.6.4 allows a limit).

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfOutput};

use super::settings::AuthSettings;

/// The result of one SPF check, named as RFC 7208 section 2.6 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    /// No record, or no domain to check (an address literal as HELO name).
    None,
    /// The domain makes no assertion about the client (`?all`).
    Neutral,
    /// The client is authorised.
    Pass,
    /// The client is not authorised (`-all`).
    Fail,
    /// The client is probably not authorised (`~all`).
    SoftFail,
    /// A DNS failure or time-out; a later attempt may succeed.
    TempError,
    /// The domain's record cannot be interpreted.
    PermError,
}

impl SpfResult {
    /// The result as Authentication-Results writes it (RFC 8601 section 2.7.2).
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl From<mail_auth::SpfResult> for SpfResult {
    fn from(result: mail_auth::SpfResult) -> Self {
        match result {
            mail_auth::SpfResult::Pass => SpfResult::Pass,
            mail_auth::SpfResult::Fail => SpfResult::Fail,
            mail_auth::SpfResult::SoftFail => SpfResult::SoftFail,
            mail_auth::SpfResult::Neutral => SpfResult::Neutral,
            mail_auth::SpfResult::TempError => SpfResult::TempError,
            mail_auth::SpfResult::PermError => SpfResult::PermError,
            mail_auth::SpfResult::None => SpfResult::None,
        }
    }
}

/// One identity's check: the domain whose policy was asked, and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    /// What the policy says about the client.
    pub result: SpfResult,
    /// The domain whose policy was evaluated; empty when there was none to ask.
    pub domain: String,
}

impl SpfCheck {
    fn from_output(output: &SpfOutput) -> SpfCheck {
        SpfCheck {
            result: output.result().into(),
            domain: output.domain().to_string(),
        }
    }
}

/// SPF at MAIL FROM: the envelope as the client gave it and what each identity's policy says.
/// It goes back into [`SenderAuth::check_message`](super::SenderAuth::check_message) at the
/// end of DATA, where DMARC weighs the MAIL FROM result.
#[derive(Debug, Clone)]
pub struct SpfReport {
    /// The client's address.
    pub client_ip: IpAddr,
    /// The name the client gave in HELO or EHLO.
    pub helo_name: String,
    /// The reverse-path's address, empty for the null reverse-path.
    pub reverse_path: String,
    /// The MAIL FROM identity: the reverse-path's domain, or the HELO name for the null
    /// reverse-path.
    pub mail_from: SpfCheck,
    /// The HELO identity (RFC 7208 section 2.3).
    pub helo: SpfCheck,
    /// mail-auth's own result for the MAIL FROM identity, which its DMARC evaluation takes.
    pub(super) output: SpfOutput,
}

/// Checks both identities, each within `settings.timeout`.
pub(super) async fn check(
    authenticator: &MessageAuthenticator,
    settings: &AuthSettings,
    client_ip: IpAddr,
    helo_name: &str,
    reverse_path: &str,
) -> SpfReport {
    let host = settings.authserv_id.as_str();
    let helo_check = async {
        let Some(domain) = helo_domain(helo_name) else {
            return SpfOutput::new(String::new()).with_result(mail_auth::SpfResult::None);
        };
        let check = authenticator.verify_spf(SpfParameters::verify_ehlo(client_ip, domain, host));
        bounded(settings.timeout, domain, check).await
    };

    let (helo, output) = if reverse_path.is_empty() {
        let helo = helo_check.await;
        (helo.clone(), helo)
    } else {
        let domain = reverse_path
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain);
        let mail_from_check = bounded(
            settings.timeout,
            domain,
            authenticator.verify_spf(SpfParameters::verify_mail_from(
                client_ip,
                helo_name,
                host,
                reverse_path,
            )),
        );
        tokio::join!(helo_check, mail_from_check)
    };

    let report = SpfReport {
        client_ip,
        helo_name: helo_name.to_string(),
        reverse_path: reverse_path.to_string(),
        mail_from: SpfCheck::from_output(&output),
        helo: SpfCheck::from_output(&helo),
        output,
    };
    tracing::debug!(
        client = %client_ip,
        mail_from = report.mail_from.result.as_str(),
        mail_from_domain = %report.mail_from.domain,
        helo = report.helo.result.as_str(),
        helo_domain = %report.helo.domain,
        "SPF checked"
    );
    report
}

/// The domain of the HELO identity; `None` for an address literal, or a bare address as some
/// clients send, which name no domain to ask (RFC 7208 section 2.3).
fn helo_domain(helo_name: &str) -> Option<&str> {
    let name = helo_name.trim().trim_end_matches('.');
    let literal = name.starts_with('[') || name.parse::<IpAddr>().is_ok();
    (!literal && !name.is_empty()).then_some(name)
}

/// Runs one check within `timeout`; one that runs out is `temperror` for `domain`.
async fn bounded(
    timeout: Duration,
    domain: &str,
    check: impl Future<Output = SpfOutput>,
) -> SpfOutput {
    match tokio::time::timeout(timeout, check).await {
        Ok(output) => output,
        Err(_) => {
            tracing::warn!(
                domain,
                ?timeout,
                "SPF check timed out; its result is temperror"
            );
            SpfOutput::new(domain.to_ascii_lowercase()).with_result(mail_auth::SpfResult::TempError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_written_as_rfc_8601_registers_them() {
        let written: Vec<&str> = [
            SpfResult::None,
            SpfResult::Neutral,
            SpfResult::Pass,
            SpfResult::Fail,
            SpfResult::SoftFail,
            SpfResult::TempError,
            SpfResult::PermError,
        ]
        .into_iter()
        .map(SpfResult::as_str)
        .collect();
        assert_eq!(
            written,
            [
                "none",
                "neutral",
                "pass",
                "fail",
                "softfail",
                "temperror",
                "permerror"
            ]
        );
    }

    #[test]
    fn an_address_literal_names_no_helo_domain() {
        assert_eq!(helo_domain("mail.example.com"), Some("mail.example.com"));
        assert_eq!(helo_domain("Mail.Example.COM."), Some("Mail.Example.COM"));
        assert_eq!(helo_domain("[192.0.2.1]"), None);
        assert_eq!(helo_domain("[IPv6:2001:db8::1]"), None);
        assert_eq!(helo_domain("192.0.2.1"), None);
        assert_eq!(helo_domain(" "), None);
    }

    #[tokio::test]
    async fn a_check_that_runs_out_of_time_is_a_temperror_for_its_domain() {
        let never = std::future::pending::<SpfOutput>();
        let output = bounded(Duration::from_millis(10), "Example.COM", never).await;
        assert_eq!(output.result(), mail_auth::SpfResult::TempError);
        assert_eq!(output.domain(), "example.com");
    }
}
