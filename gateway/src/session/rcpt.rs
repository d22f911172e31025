//! RCPT TO: adds a forward-path if it is one of ours, within the recipient limit.

use std::borrow::Cow;

use smtp_proto::RcptTo;

use super::Session;
use crate::reply::{Refusal, Reply};

impl Session {
    /// Answers RCPT TO; `line` is the raw command, to tell `<postmaster>` from `<>`.
    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>, line: &[u8]) -> Result<Reply, Refusal> {
        let Some(transaction) = &self.transaction else {
            return Err(Refusal::BadSequence("need MAIL command"));
        };
        if transaction.chunks.is_some() {
            return Err(Refusal::BadSequence("RCPT not allowed during BDAT"));
        }
        if transaction.recipients.len() >= self.shared.smtp.max_recipients {
            return Err(Refusal::TooManyRecipients);
        }
        // RFC 5321 section 4.1.2: no control characters, even quoted.
        if to.address.chars().any(char::is_control) {
            return Err(Refusal::BadForwardPath);
        }
        if !transaction.smtputf8 && !to.address.is_ascii() {
            return Err(Refusal::Utf8WithoutSmtputf8);
        }

        // The parser gives an empty address for both `<>` and `<postmaster>`; RFC 5321 section
        // 4.5.1 requires the second to be accepted without a domain.
        let address = if to.address.is_empty() {
            let is_postmaster = line
                .windows(12)
                .any(|w| w.eq_ignore_ascii_case(b"<postmaster>"));
            match (is_postmaster, self.shared.domains.postmaster_domain()) {
                (true, Some(domain)) => format!("postmaster@{domain}"),
                _ => return Err(Refusal::BadForwardPath),
            }
        } else {
            to.address.into_owned()
        };

        self.shared.domains.check(&address)?;
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(address);
        }
        Ok(Reply::new(250, "2.1.5", "Ok"))
    }
}
