//! ARC (RFC 8617): the chain of ARC sets that forwarders added, verified as a whole.
//!
//! A passing chain only proves who handled the message on the way; it overrides nothing by
//! itself, since anyone can seal. It is reported so that a later policy can trust the chains
//! of known forwarders (mailing lists, forwarding services) when DMARC fails.

use std::time::Duration;

use mail_auth::{AuthenticatedMessage, MessageAuthenticator};

use super::reason::{TIMED_OUT, reason};

/// The chain's result. RFC 8617 section 4.4 registers none, pass and fail; a DNS failure is
/// kept apart here so that it is not held against the message, and is written `fail` with a
/// comment in Authentication-Results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcResult {
    /// No ARC set in the message.
    None,
    /// Every seal and the latest message signature verified.
    Pass,
    /// The chain is broken, forged or altered since the latest seal.
    Fail,
    /// A key could not be fetched for now.
    TempError,
}

impl ArcResult {
    /// The result as Authentication-Results writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ArcResult::None => "none",
            ArcResult::Pass => "pass",
            ArcResult::Fail | ArcResult::TempError => "fail",
        }
    }
}

/// The verification of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcCheck {
    /// Whether it verified.
    pub result: ArcResult,
    /// How many ARC sets the message carries (the highest instance).
    pub instances: u32,
    /// The domain that added the latest set (`d=` of the highest ARC-Seal).
    pub sealer: Option<String>,
    /// Why it did not pass.
    pub reason: Option<&'static str>,
}

impl ArcCheck {
    /// No chain: a message without ARC sets, or one that could not be parsed.
    pub(super) fn none() -> ArcCheck {
        ArcCheck {
            result: ArcResult::None,
            instances: 0,
            sealer: None,
            reason: None,
        }
    }
}

/// Verifies the chain within `timeout`.
pub(super) async fn verify(
    authenticator: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    timeout: Duration,
) -> ArcCheck {
    let latest = message.as_headers.iter().max_by_key(|seal| seal.header.i);
    let mut check = ArcCheck {
        instances: latest.map_or(0, |seal| seal.header.i),
        sealer: latest.map(|seal| seal.header.d.to_ascii_lowercase()),
        ..ArcCheck::none()
    };

    let output = match tokio::time::timeout(timeout, authenticator.verify_arc(message)).await {
        Ok(output) => output,
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "ARC verification timed out; its result is temperror"
            );
            check.result = ArcResult::TempError;
            check.reason = Some(TIMED_OUT);
            return check;
        }
    };
    use mail_auth::DkimResult as Theirs;
    (check.result, check.reason) = match output.result() {
        Theirs::Pass => (ArcResult::Pass, None),
        Theirs::None => (ArcResult::None, None),
        Theirs::TempError(error) => (ArcResult::TempError, Some(reason(error))),
        Theirs::Fail(error) | Theirs::Neutral(error) | Theirs::PermError(error) => {
            (ArcResult::Fail, Some(reason(error)))
        }
    };
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_failure_is_written_as_the_registered_fail() {
        assert_eq!(ArcResult::TempError.as_str(), "fail");
        assert_eq!(ArcResult::Pass.as_str(), "pass");
        assert_eq!(ArcResult::None.as_str(), "none");
    }

    #[tokio::test]
    async fn a_message_without_arc_sets_has_no_chain() {
        // No lookup is made: the address only has to be one nobody answers on.
        let resolver = crate::auth::caching_resolver(
            Some("127.0.0.1:9".parse().expect("address")),
            Duration::from_millis(100),
        );
        let authenticator = mail_auth::MessageAuthenticator(resolver.expect("resolver"));
        let raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let message = AuthenticatedMessage::parse(raw).expect("parsed");
        let check = verify(&authenticator, &message, Duration::from_secs(1)).await;
        assert_eq!(check, ArcCheck::none());
    }
}
