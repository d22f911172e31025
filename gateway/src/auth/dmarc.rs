//! DMARC (RFC 7489, and the DNS tree walk of its successor RFC 9989): whether the author's
//! domain in From is authenticated by an aligned SPF or DKIM pass, and what its policy asks
//! when it is not.
//!
//! The policy record is the author domain's own, else that of its organisational domain,
//! found by walking up the DNS tree (`_dmarc.news.example.com`, then `_dmarc.example.com`);
//! a subdomain then gets the `sp=` policy. mail-auth does the walk and the alignment.

use std::time::Duration;

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimOutput, MessageAuthenticator};

use super::reason::{TIMED_OUT, reason};
use super::spf::SpfReport;

/// The DMARC result (RFC 7489 section 11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcResult {
    /// No policy record, or no single author domain to evaluate.
    None,
    /// An aligned identifier passed SPF or DKIM.
    Pass,
    /// A policy record exists and no aligned identifier passed.
    Fail,
    /// A DNS failure or time-out; a later attempt may succeed.
    TempError,
    /// The policy record cannot be used.
    PermError,
}

impl DmarcResult {
    /// The result as Authentication-Results writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcResult::None => "none",
            DmarcResult::Pass => "pass",
            DmarcResult::Fail => "fail",
            DmarcResult::TempError => "temperror",
            DmarcResult::PermError => "permerror",
        }
    }
}

/// What the author's domain asks receivers to do with mail that fails (`p=`, or `sp=` for a
/// subdomain), after any `t=y` testing mode lowered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// Deliver as usual (`p=none`), or no record.
    None,
    /// Treat as suspicious.
    Quarantine,
    /// Refuse.
    Reject,
}

impl DmarcPolicy {
    /// The policy as a DMARC record writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The evaluation of the author's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    /// Whether the author's domain is authenticated.
    pub result: DmarcResult,
    /// The policy that applies to it.
    pub policy: DmarcPolicy,
    /// The author's domain: the domain of the From address; empty when there is none.
    pub domain: String,
    /// Whether the MAIL FROM identity passed SPF and aligns with the author's domain.
    pub spf_aligned: bool,
    /// Whether a DKIM signature passed and aligns with the author's domain, in the record's
    /// mode; without a record, only a signature of exactly the author's domain counts.
    pub dkim_aligned: bool,
    /// Why it did not pass.
    pub reason: Option<&'static str>,
}

impl DmarcCheck {
    /// Nothing to evaluate: a message that could not be parsed.
    pub(super) fn none() -> DmarcCheck {
        DmarcCheck {
            result: DmarcResult::None,
            policy: DmarcPolicy::None,
            domain: String::new(),
            spf_aligned: false,
            dkim_aligned: false,
            reason: None,
        }
    }
}

/// Evaluates the author's domain within `timeout`, from the DKIM outputs and the SPF result
/// of MAIL FROM.
pub(super) async fn evaluate(
    authenticator: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    dkim: &[DkimOutput<'_>],
    spf: &SpfReport,
    timeout: Duration,
) -> DmarcCheck {
    let author_domain = author_domain(message);
    let parameters = DmarcParameters::new(message, dkim, spf.output.domain(), &spf.output);
    let output = match tokio::time::timeout(timeout, authenticator.verify_dmarc(parameters)).await {
        Ok(output) => output,
        Err(_) => {
            tracing::warn!(domain = %author_domain, ?timeout, "DMARC evaluation timed out; its result is temperror");
            return DmarcCheck {
                result: DmarcResult::TempError,
                domain: author_domain,
                reason: Some(TIMED_OUT),
                ..DmarcCheck::none()
            };
        }
    };

    use mail_auth::DmarcResult as Theirs;
    let (result, reason) = match output.result() {
        Theirs::Pass => (DmarcResult::Pass, None),
        Theirs::None => (DmarcResult::None, None),
        Theirs::Fail(error) => (DmarcResult::Fail, Some(reason(&error))),
        Theirs::TempError(error) => (DmarcResult::TempError, Some(reason(&error))),
        Theirs::PermError(error) => (DmarcResult::PermError, Some(reason(&error))),
    };
    let has_record = output.dmarc_record().is_some();
    let policy = match output.policy() {
        _ if !has_record => DmarcPolicy::None,
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    };
    let dkim_aligned = if has_record {
        *output.dkim_result() == Theirs::Pass
    } else {
        passes_for_exactly(dkim, &author_domain)
    };
    DmarcCheck {
        result,
        policy,
        domain: if output.domain().is_empty() {
            author_domain
        } else {
            output.domain().to_ascii_lowercase()
        },
        spf_aligned: *output.spf_result() == Theirs::Pass,
        dkim_aligned,
        reason,
    }
}

/// The domain of the first From address, lowercased; empty when there is none.
fn author_domain(message: &AuthenticatedMessage<'_>) -> String {
    message
        .from
        .iter()
        .find_map(|address| address.rsplit_once('@'))
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a DKIM signature of exactly `domain` passed (strict alignment without a record).
fn passes_for_exactly(dkim: &[DkimOutput<'_>], domain: &str) -> bool {
    !domain.is_empty()
        && dkim.iter().any(|output| {
            *output.result() == mail_auth::DkimResult::Pass
                && output
                    .signature()
                    .is_some_and(|signature| signature.d.eq_ignore_ascii_case(domain))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_author_domain_is_the_from_domain_lowercased() {
        let raw = b"From: Joe <Joe@News.Example.COM>\r\nTo: a@example.net\r\n\r\nhi\r\n";
        let message = AuthenticatedMessage::parse(raw).expect("parsed");
        assert_eq!(author_domain(&message), "news.example.com");
    }

    #[test]
    fn a_message_without_from_has_no_author_domain() {
        let raw = b"To: a@example.net\r\nSubject: no author\r\n\r\nhi\r\n";
        let message = AuthenticatedMessage::parse(raw).expect("parsed");
        assert_eq!(author_domain(&message), "");
    }

    #[test]
    fn without_a_record_only_an_exact_dkim_domain_is_aligned() {
        let mut signature = mail_auth::dkim::Signature {
            d: "Example.com".into(),
            ..Default::default()
        };
        let pass = [DkimOutput::pass().with_signature(&signature)];
        assert!(passes_for_exactly(&pass, "example.com"));
        assert!(!passes_for_exactly(&pass, "news.example.com"));
        assert!(!passes_for_exactly(&pass, ""));

        signature.d = "example.com".into();
        let fail = [DkimOutput::fail(mail_auth::Error::NotAligned).with_signature(&signature)];
        assert!(!passes_for_exactly(&fail, "example.com"));
    }
}
