//! Why a check did not pass, in one short fixed phrase per cause: the comments of
//! Authentication-Results and the `reason` fields of the report.
//!
//! Fixed phrases rather than mail-auth's messages, so a header never carries text from a DNS
//! record or a message, and the wording stays stable for tests and log searches.

use mail_auth::arc::ArcError;
use mail_auth::common::crypto::CryptoError;
use mail_auth::dkim::DkimError;
use mail_auth::{DnsError, Error};

/// What stopped the check that ran out of time.
pub(super) const TIMED_OUT: &str = "dns timeout";

/// The phrase for one of mail-auth's errors.
pub(super) fn reason(error: &Error) -> &'static str {
    match error {
        Error::Dns(DnsError::Resolver(_)) => "dns error",
        Error::Dns(DnsError::RecordNotFound(_)) => "no key for signature",
        Error::Dns(DnsError::InvalidRecordType) | Error::ParseError => "bad key record",
        Error::Base64 => "bad base64",
        Error::MissingParameters => "signature lacks required tags",
        Error::NoHeadersFound => "no headers found",
        Error::NotAligned => "not aligned",
        Error::Io(_) => "i/o error",
        Error::Crypto(CryptoError::FailedVerification | CryptoError::Library(_)) => {
            "signature did not verify"
        }
        Error::Crypto(CryptoError::IncompatibleAlgorithms) => "key and signature algorithms differ",
        Error::Dkim(error) => dkim_reason(error),
        Error::Arc(error) => arc_reason(error),
        Error::Dkim2(_) => "dkim2 error",
    }
}

fn dkim_reason(error: &DkimError) -> &'static str {
    match error {
        DkimError::UnsupportedVersion => "unsupported version",
        DkimError::UnsupportedAlgorithm => "unsupported algorithm",
        DkimError::UnsupportedCanonicalization => "unsupported canonicalization",
        DkimError::UnsupportedKeyType => "unsupported key type",
        DkimError::FailedBodyHashMatch => "body hash did not verify",
        DkimError::FailedAuidMatch => "identity does not match domain",
        DkimError::RevokedPublicKey => "key revoked",
        DkimError::SignatureExpired => "signature expired",
        DkimError::SignatureLength => "body length tag refused",
    }
}

fn arc_reason(error: &ArcError) -> &'static str {
    match error {
        ArcError::ChainTooLong => "chain too long",
        ArcError::InvalidInstance(_) => "bad instance number",
        ArcError::InvalidCV => "bad chain validation tag",
        ArcError::HasHeaderTag => "seal has a header list",
        ArcError::BrokenChain => "broken chain",
        ArcError::FailedBodyHashMatch => "body hash did not verify",
        ArcError::SignatureExpired => "signature expired",
        ArcError::SignatureLength => "body length tag refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_short_lowercase_and_safe_in_a_header_comment() {
        let errors = [
            Error::Dns(DnsError::Resolver("SERVFAIL (x)".into())),
            Error::Dkim(DkimError::FailedBodyHashMatch),
            Error::Arc(ArcError::InvalidInstance(7)),
            Error::Crypto(CryptoError::Library("(nested) text".into())),
            Error::Io("\r\nInjected: header".into()),
        ];
        for error in &errors {
            let phrase = reason(error);
            assert!(phrase.len() < 40, "{phrase}");
            assert!(
                phrase
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b" /".contains(&b)),
                "{phrase}"
            );
        }
    }
}
