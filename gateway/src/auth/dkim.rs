//! DKIM (RFC 6376): each DKIM-Signature of the message verified against its domain's key.
//!
//! A message names the domains whose keys are looked up, so the number of signatures checked
//! is capped; the rest are left unverified, as section 6.1 allows a verifier to do. The whole
//! verification runs within the check's time; signatures it did not reach are `temperror`.

use std::time::Duration;

use mail_auth::dkim::DkimError;
use mail_auth::{AuthenticatedMessage, DkimOutput, DnsError, Error, MessageAuthenticator};

use super::reason::{TIMED_OUT, reason};

/// Most DKIM signatures verified per message. Legitimate mail carries one to three (author,
/// mailing list, sending provider); each more costs a DNS lookup that the sender chose.
const MAX_DKIM_SIGNATURES: usize = 10;

/// The result of one signature, as RFC 8601 section 2.7.1 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimResult {
    /// The message carries no signature.
    None,
    /// The signature verified.
    Pass,
    /// The signature or the body hash did not verify.
    Fail,
    /// The signature could not be processed (syntax, expired).
    Neutral,
    /// The key could not be fetched for now.
    TempError,
    /// The key is missing, revoked or unusable.
    PermError,
}

impl DkimResult {
    /// The result as Authentication-Results writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimResult::None => "none",
            DkimResult::Pass => "pass",
            DkimResult::Fail => "fail",
            DkimResult::Neutral => "neutral",
            DkimResult::TempError => "temperror",
            DkimResult::PermError => "permerror",
        }
    }
}

/// One signature's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    /// Whether it verified.
    pub result: DkimResult,
    /// The signing domain (`d=`); empty when the signature could not be parsed.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// Why it did not pass.
    pub reason: Option<&'static str>,
    /// The first eight base64 characters of the signature (`header.b`, RFC 6008), which tell
    /// apart two signatures of one domain and selector.
    pub signature_prefix: String,
}

/// Leaves at most [`MAX_DKIM_SIGNATURES`] signatures to verify, the topmost first.
pub(super) fn limit_signatures(message: &mut AuthenticatedMessage<'_>) {
    let found = message.dkim_headers.len();
    if found > MAX_DKIM_SIGNATURES {
        tracing::warn!(
            found,
            verified = MAX_DKIM_SIGNATURES,
            "message has too many DKIM signatures; the rest are not verified"
        );
        message.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
    }
}

/// Verifies every signature within `timeout`; mail-auth's outputs feed DMARC.
pub(super) async fn verify<'x>(
    authenticator: &MessageAuthenticator,
    message: &'x AuthenticatedMessage<'x>,
    timeout: Duration,
) -> Vec<DkimOutput<'x>> {
    match tokio::time::timeout(timeout, authenticator.verify_dkim(message)).await {
        Ok(outputs) => outputs,
        Err(_) => {
            tracing::warn!(
                signatures = message.dkim_headers.len(),
                ?timeout,
                "DKIM verification timed out; its results are temperror"
            );
            message
                .dkim_headers
                .iter()
                .map(|header| {
                    DkimOutput::temp_err(Error::Dns(DnsError::Resolver(TIMED_OUT.into())))
                        .with_signature(&header.header)
                })
                .collect()
        }
    }
}

/// The report's view of mail-auth's outputs.
pub(super) fn checks(outputs: &[DkimOutput<'_>]) -> Vec<DkimCheck> {
    outputs.iter().map(check).collect()
}

fn check(output: &DkimOutput<'_>) -> DkimCheck {
    let (result, reason) = result(output.result());
    let (domain, selector, signature_prefix) = match output.signature() {
        Some(signature) => (
            signature.d.to_ascii_lowercase(),
            signature.s.clone(),
            base64_prefix(&signature.b),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    DkimCheck {
        result,
        domain,
        selector,
        reason,
        signature_prefix,
    }
}

/// Maps mail-auth's result. A body hash mismatch is `fail`, not mail-auth's `neutral`: RFC
/// 6376 section 6.1.3 makes it a PERMFAIL of a signature that was otherwise acceptable, which
/// is what RFC 8601 section 2.7.1 calls `fail`.
fn result(result: &mail_auth::DkimResult) -> (DkimResult, Option<&'static str>) {
    use mail_auth::DkimResult as Theirs;
    match result {
        Theirs::Pass => (DkimResult::Pass, None),
        Theirs::None => (DkimResult::None, None),
        Theirs::Neutral(error @ Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            (DkimResult::Fail, Some(reason(error)))
        }
        Theirs::Neutral(error) => (DkimResult::Neutral, Some(reason(error))),
        Theirs::Fail(error) => (DkimResult::Fail, Some(reason(error))),
        Theirs::PermError(error) => (DkimResult::PermError, Some(reason(error))),
        Theirs::TempError(error) => (DkimResult::TempError, Some(reason(error))),
    }
}

/// The base64 form of the first six bytes: eight characters, no padding.
fn base64_prefix(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks(3)
        .take(2)
        .filter(|chunk| chunk.len() == 3)
        .flat_map(|chunk| {
            let group = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
            [18, 12, 6, 0].map(|shift| char::from(ALPHABET[(group >> shift & 0x3f) as usize]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_hash_mismatch_is_a_fail() {
        let mismatch = mail_auth::DkimResult::Neutral(Error::Dkim(DkimError::FailedBodyHashMatch));
        assert_eq!(
            result(&mismatch),
            (DkimResult::Fail, Some("body hash did not verify"))
        );
        let expired = mail_auth::DkimResult::Neutral(Error::Dkim(DkimError::SignatureExpired));
        assert_eq!(
            result(&expired),
            (DkimResult::Neutral, Some("signature expired"))
        );
    }

    #[test]
    fn a_missing_key_is_a_permerror_and_a_dns_failure_a_temperror() {
        let missing = mail_auth::DkimResult::PermError(Error::Dns(DnsError::RecordNotFound(
            mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
        )));
        assert_eq!(result(&missing).0, DkimResult::PermError);
        let failed = mail_auth::DkimResult::TempError(Error::Dns(DnsError::Resolver("".into())));
        assert_eq!(result(&failed).0, DkimResult::TempError);
    }

    #[test]
    fn the_signature_prefix_is_its_first_eight_base64_characters() {
        // "Man" and "Man" again: the RFC 4648 example, twice.
        assert_eq!(base64_prefix(b"ManMan and more"), "TWFuTWFu");
        assert_eq!(base64_prefix(&[0xff; 6]), "////////");
        assert_eq!(base64_prefix(b"abc"), "YWJj");
        assert_eq!(base64_prefix(b""), "");
    }
}
