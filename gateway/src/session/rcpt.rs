//! RCPT TO: adds a forward-path if it is one of ours, within the recipient limit, and if the
//! greylist lets it through.

use std::borrow::Cow;

use moat_greylist::TripletRequest;
use smtp_proto::RcptTo;

use super::Session;
use crate::reply::{Refusal, Reply};

impl Session {
    /// Answers RCPT TO; `line` is the raw command, to tell `<postmaster>` from `<>`.
    pub(super) async fn rcpt(
        &mut self,
        to: RcptTo<Cow<'_, str>>,
        line: &[u8],
    ) -> Result<Reply, Refusal> {
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
        // DSN is not offered, so its parameters get 555 (RFC 5321 section 4.1.1.11).
        if to.orcpt.is_some() || to.flags != 0 || to.rrvs != 0 {
            return Err(Refusal::UnsupportedParameter("NOTIFY/ORCPT/RRVS".into()));
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
        // The queue routes by domain, so the domain is kept as the configuration names it:
        // without the root's trailing dot.
        let address = match address.rsplit_once('@') {
            Some((local, domain)) if domain.ends_with('.') => {
                format!("{local}@{}", domain.trim_end_matches('.'))
            }
            _ => address,
        };
        // A recipient given twice gets one copy, as Postfix does.
        let duplicate = self.transaction.as_ref().is_some_and(|transaction| {
            transaction
                .recipients
                .iter()
                .any(|known| known.eq_ignore_ascii_case(&address))
        });
        if duplicate {
            return Ok(Reply::new(250, "2.1.5", "Ok (duplicate recipient)"));
        }
        let allowlisted = self.dnsbl().await?;
        let header = self.greylist(&address, allowlisted).await?;

        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(address);
            if let Some(header) = header.filter(|h| !transaction.added_headers.contains(h)) {
                transaction.added_headers.push(header);
            }
        }
        Ok(Reply::new(250, "2.1.5", "Ok"))
    }

    /// Refuses a client the DNSBLs list; returns whether the DNSWLs allowlist it.
    async fn dnsbl(&mut self) -> Result<bool, Refusal> {
        let Some(check) = self.shared.checks.dnsbl.clone() else {
            return Ok(false);
        };
        let client = self.client.ip();
        let Some(score) = self.dnsbl_score().await else {
            return Ok(false);
        };
        if check.blocks(score) {
            return Err(Refusal::DnsblListed {
                client,
                zones: score.listed_by.join(", "),
            });
        }
        Ok(check.allowlists(score))
    }

    /// Asks the greylist, if it is on, about this recipient's triplet.
    ///
    /// Returns the X-Greylist header to add when a retry passed, or the refusal when the
    /// triplet must wait.
    async fn greylist(
        &self,
        recipient: &str,
        allowlisted: bool,
    ) -> Result<Option<String>, Refusal> {
        let (Some(greylist), Some(transaction)) = (&self.shared.checks.greylist, &self.transaction)
        else {
            return Ok(None);
        };
        let mut request = TripletRequest::new(
            self.client.ip(),
            transaction.reverse_path.as_str(),
            recipient,
        );
        request.dnswl_listed = allowlisted;
        let decision = greylist.check(&request).await;
        tracing::debug!(recipient, outcome = %decision.outcome(), "greylist decision");

        if let Some(reply) = decision.smtp_reply() {
            return Err(Refusal::Greylisted(reply));
        }
        Ok(decision.header(greylist.hostname()))
    }
}
