//! RCPT TO: adds a forward-path if it is one of ours, within the recipient limit, and if the
//! greylist lets it through.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

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

    /// Answers a RCPT line the parser could not read. The parser takes no address literal
    /// (`user@[192.0.2.1]`), which is valid syntax (RFC 5321 section 4.1.3) naming a host that
    /// is not one of our domains: such a path is refused as relaying, as Postfix does, and
    /// anything else as bad syntax.
    pub(super) fn unparsed_rcpt(&self, line: &[u8]) -> Refusal {
        if self.transaction.is_none() {
            return Refusal::BadSequence("need MAIL command");
        }
        match address_literal_path(line) {
            Some(path) => Refusal::RelayDenied(path),
            None => Refusal::BadForwardPath,
        }
    }
}

/// `RCPT TO:<@relay,@[192.0.2.1]:user@example.com>` without its source route, which RFC 5321
/// section 4.1.1.3 says to accept and ignore, as Postfix does. The parser already drops a route
/// of domain names, but refuses one that holds an address literal; `None` when the line has no
/// source route.
pub(super) fn without_source_route(line: &[u8]) -> Option<Vec<u8>> {
    const VERB: &[u8] = b"RCPT TO:";
    if line.len() < VERB.len() || !line[..VERB.len()].eq_ignore_ascii_case(VERB) {
        return None;
    }
    let open = VERB.len() + line[VERB.len()..].iter().position(|&b| b == b'<')?;
    if line.get(open + 1) != Some(&b'@') {
        return None;
    }

    // The route ends at the first colon outside an address literal's brackets.
    let mut in_literal = false;
    let mut end = None;
    for (index, &octet) in line.iter().enumerate().skip(open + 1) {
        match octet {
            b'[' => in_literal = true,
            b']' => in_literal = false,
            b':' if !in_literal => {
                end = Some(index);
                break;
            }
            b'>' | b' ' | b'\r' | b'\n' => return None,
            _ => {}
        }
    }

    let mut stripped = line[..=open].to_vec();
    stripped.extend_from_slice(&line[end? + 1..]);
    Some(stripped)
}

/// The forward-path of `RCPT TO:<local@[literal]>` when the literal is a well-formed IPv4 or
/// IPv6 address literal (RFC 5321 section 4.1.3).
fn address_literal_path(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let path = &line[line.find('<')? + 1..line.rfind('>')?];
    let (local, domain) = path.rsplit_once('@')?;
    if local.is_empty() || local.chars().any(char::is_control) {
        return None;
    }
    let literal = domain.strip_prefix('[')?.strip_suffix(']')?;
    let well_formed = match literal.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => literal[5..].parse::<Ipv6Addr>().is_ok(),
        _ => literal.parse::<Ipv4Addr>().is_ok(),
    };
    well_formed.then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::{address_literal_path, without_source_route};

    #[test]
    fn drops_source_routes_even_with_address_literals() {
        for (line, stripped) in [
            (
                "RCPT TO:<@[192.0.2.1]:u@localhost>\r\n",
                Some("RCPT TO:<u@localhost>\r\n"),
            ),
            (
                "rcpt to:<@a.example,@[IPv6:2001:db8::1]:u@localhost> NOTIFY=NEVER\r\n",
                Some("rcpt to:<u@localhost> NOTIFY=NEVER\r\n"),
            ),
            ("RCPT TO:<u@localhost>\r\n", None),
            ("RCPT TO:<@[192.0.2.1]>\r\n", None),
            ("MAIL FROM:<@a.example:u@localhost>\r\n", None),
        ] {
            let got = without_source_route(line.as_bytes());
            assert_eq!(got.as_deref(), stripped.map(str::as_bytes), "{line}");
        }
    }

    #[test]
    fn reads_well_formed_address_literals_only() {
        for (line, path) in [
            ("RCPT TO:<a@[192.0.2.1]>\r\n", Some("a@[192.0.2.1]")),
            (
                "RCPT TO:<a@[IPv6:2001:db8::1]>\r\n",
                Some("a@[IPv6:2001:db8::1]"),
            ),
            (
                "rcpt to:<a@[ipv6:::1]> NOTIFY=NEVER\r\n",
                Some("a@[ipv6:::1]"),
            ),
            ("RCPT TO:<a@[192.0.2.300]>\r\n", None),
            ("RCPT TO:<a@[2001:db8::1]>\r\n", None),
            ("RCPT TO:<@[192.0.2.1]>\r\n", None),
            ("RCPT TO:<a@example.com>\r\n", None),
            ("RCPT TO:a@[192.0.2.1]\r\n", None),
        ] {
            assert_eq!(
                address_literal_path(line.as_bytes()).as_deref(),
                path,
                "{line}"
            );
        }
    }
}
