//! The Authentication-Results header field (RFC 8601) that records the checks on every
//! accepted message.
//!
//! One result per line, folded with CRLF and a tab (shown as spaces here), the field's final
//! CRLF left to the caller:
//!
//! ```text
//! Authentication-Results: mx.example.net;
//!     spf=pass smtp.mailfrom=joe@example.com;
//!     spf=none smtp.helo=mail.example.com;
//!     dkim=pass header.d=example.com header.s=sel header.b=kaBNgc0t;
//!     arc=none;
//!     dmarc=pass (p=reject dis=none) header.from=example.com
//! ```
//!
//! Values from the envelope and the message are written as tokens or addresses when they are
//! such, else as quoted strings; comments hold only fixed phrases and checked names, so
//! nothing a sender wrote can end the field or add one.

use std::fmt::Write as _;

use super::arc::{ArcCheck, ArcResult};
use super::dkim::DkimCheck;
use super::dmarc::{DmarcCheck, DmarcResult};
use super::spf::SpfReport;
use super::verdict::DmarcAction;

/// The separator between results: the `;`, then a fold onto a new line.
const FOLD: &str = ";\r\n\t";

/// Everything one header records.
pub(super) struct Results<'a> {
    /// Our authserv-id, checked to be a host name.
    pub authserv_id: &'a str,
    pub spf: &'a SpfReport,
    pub dkim: &'a [DkimCheck],
    pub arc: &'a ArcCheck,
    pub dmarc: &'a DmarcCheck,
    /// What the gateway does about a DMARC failure (the `dis=` comment).
    pub action: Option<DmarcAction>,
}

impl Results<'_> {
    /// The whole field, `Authentication-Results: ` included, without the final CRLF.
    pub(super) fn header(&self) -> String {
        let mut field = String::with_capacity(512);
        field.push_str("Authentication-Results: ");
        field.push_str(self.authserv_id);
        self.spf(&mut field);
        self.dkim(&mut field);
        self.arc(&mut field);
        self.dmarc(&mut field);
        field
    }

    /// The MAIL FROM identity, then the HELO identity when it was a separate check (RFC 8601
    /// section 2.7.2). With the null reverse-path, the HELO check was the only one.
    fn spf(&self, field: &mut String) {
        let spf = self.spf;
        if !spf.reverse_path.is_empty() {
            field.push_str(FOLD);
            let _ = write!(
                field,
                "spf={} smtp.mailfrom=",
                spf.mail_from.result.as_str()
            );
            push_value(field, &spf.reverse_path);
        }
        if spf.reverse_path.is_empty() || !spf.helo.domain.is_empty() {
            field.push_str(FOLD);
            let _ = write!(field, "spf={} smtp.helo=", spf.helo.result.as_str());
            push_value(field, &spf.helo_name);
        }
    }

    /// One result per signature (RFC 8601 section 2.7.1), or `dkim=none`.
    fn dkim(&self, field: &mut String) {
        if self.dkim.is_empty() {
            field.push_str(FOLD);
            field.push_str("dkim=none");
        }
        for check in self.dkim {
            field.push_str(FOLD);
            field.push_str("dkim=");
            field.push_str(check.result.as_str());
            push_comment(field, check.reason.unwrap_or(""));
            if !check.domain.is_empty() {
                field.push_str(" header.d=");
                push_value(field, &check.domain);
                field.push_str(" header.s=");
                push_value(field, &check.selector);
            }
            if !check.signature_prefix.is_empty() {
                field.push_str(" header.b=");
                push_value(field, &check.signature_prefix);
            }
        }
    }

    /// The chain (RFC 8617 section 10.1 registers `smtp.remote-ip`).
    fn arc(&self, field: &mut String) {
        let arc = self.arc;
        field.push_str(FOLD);
        field.push_str("arc=");
        field.push_str(arc.result.as_str());
        let comment = match (arc.result, arc.reason) {
            (ArcResult::None, _) => return,
            (ArcResult::TempError, reason) => {
                format!("temporary error: {}", reason.unwrap_or("dns error"))
            }
            (_, Some(reason)) => format!("i={} {reason}", arc.instances),
            (_, None) => match &arc.sealer {
                Some(sealer) if is_domain(sealer) => format!("i={} d={sealer}", arc.instances),
                _ => format!("i={}", arc.instances),
            },
        };
        push_comment(field, &comment);
        field.push_str(" smtp.remote-ip=");
        field.push_str(&self.spf.client_ip.to_string());
    }

    /// The author's domain, with the policy and what was done as a comment, in the
    /// `(p=reject dis=none)` form other receivers use.
    fn dmarc(&self, field: &mut String) {
        let dmarc = self.dmarc;
        field.push_str(FOLD);
        field.push_str("dmarc=");
        field.push_str(dmarc.result.as_str());
        if matches!(dmarc.result, DmarcResult::Pass | DmarcResult::Fail) {
            let disposition = match self.action {
                Some(DmarcAction::Reject) => "reject",
                Some(DmarcAction::Quarantine) => "quarantine",
                None => "none",
            };
            push_comment(
                field,
                &format!("p={} dis={disposition}", dmarc.policy.as_str()),
            );
        } else {
            push_comment(field, dmarc.reason.unwrap_or(""));
        }
        if !dmarc.domain.is_empty() {
            field.push_str(" header.from=");
            push_value(field, &dmarc.domain);
        }
    }
}

/// Writes a pvalue (RFC 8601 section 2.2): as it is when it is an RFC 2045 token or a plain
/// address, else as a quoted string without line breaks or control characters.
fn push_value(field: &mut String, value: &str) {
    if is_token(value) || is_plain_address(value) {
        field.push_str(value);
        return;
    }
    field.push('"');
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            field.push('\\');
        }
        field.push(c);
    }
    field.push('"');
}

/// Writes ` (comment)`; characters that could end the comment or the field are dropped.
fn push_comment(field: &mut String, comment: &str) {
    if comment.is_empty() {
        return;
    }
    field.push_str(" (");
    field.extend(
        comment
            .chars()
            .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | '\\')),
    );
    field.push(')');
}

/// An RFC 2045 token: printable ASCII without spaces or tspecials.
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// `local-part@domain` with a dot-atom local part and a host-name domain.
fn is_plain_address(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext))
        && is_domain(domain)
}

/// A host name: letter-digit-hyphen labels (underscores allowed, as DKIM selectors use them).
fn is_domain(value: &str) -> bool {
    !value.is_empty()
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dkim::DkimResult;
    use crate::auth::dmarc::DmarcPolicy;
    use crate::auth::spf::{SpfCheck, SpfResult};

    fn spf(reverse_path: &str, helo_name: &str, helo_domain: &str) -> SpfReport {
        let domain = reverse_path
            .rsplit_once('@')
            .map_or(helo_domain, |(_, d)| d);
        SpfReport {
            client_ip: "192.0.2.1".parse().expect("address"),
            helo_name: helo_name.into(),
            reverse_path: reverse_path.into(),
            mail_from: SpfCheck {
                result: SpfResult::Pass,
                domain: domain.into(),
            },
            helo: SpfCheck {
                result: SpfResult::None,
                domain: helo_domain.into(),
            },
            output: mail_auth::SpfOutput::new(domain.into()),
        }
    }

    fn dmarc(result: DmarcResult, policy: DmarcPolicy) -> DmarcCheck {
        DmarcCheck {
            result,
            policy,
            domain: "example.com".into(),
            ..DmarcCheck::none()
        }
    }

    #[test]
    fn writes_every_method_on_its_own_folded_line() {
        let spf = spf("joe@example.com", "mail.example.com", "mail.example.com");
        let dkim = [DkimCheck {
            result: DkimResult::Pass,
            domain: "example.com".into(),
            selector: "sel".into(),
            reason: None,
            signature_prefix: "kaBNgc0t".into(),
        }];
        let header = Results {
            authserv_id: "mx.example.net",
            spf: &spf,
            dkim: &dkim,
            arc: &ArcCheck::none(),
            dmarc: &dmarc(DmarcResult::Pass, DmarcPolicy::Reject),
            action: None,
        }
        .header();
        assert_eq!(
            header,
            "Authentication-Results: mx.example.net;\r\n\
             \tspf=pass smtp.mailfrom=joe@example.com;\r\n\
             \tspf=none smtp.helo=mail.example.com;\r\n\
             \tdkim=pass header.d=example.com header.s=sel header.b=kaBNgc0t;\r\n\
             \tarc=none;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=example.com"
        );
    }

    #[test]
    fn the_null_reverse_path_reports_the_helo_identity_only() {
        let spf = spf("", "[192.0.2.1]", "");
        let header = Results {
            authserv_id: "mx.example.net",
            spf: &spf,
            dkim: &[],
            arc: &ArcCheck::none(),
            dmarc: &DmarcCheck::none(),
            action: None,
        }
        .header();
        assert_eq!(
            header,
            "Authentication-Results: mx.example.net;\r\n\
             \tspf=none smtp.helo=\"[192.0.2.1]\";\r\n\
             \tdkim=none;\r\n\
             \tarc=none;\r\n\
             \tdmarc=none"
        );
    }

    #[test]
    fn a_rejection_and_a_failed_chain_show_what_was_done_and_why() {
        let spf = spf("joe@example.com", "mail.example.com", "");
        let arc = ArcCheck {
            result: ArcResult::Fail,
            instances: 2,
            sealer: Some("list.example.org".into()),
            reason: Some("broken chain"),
        };
        let dkim = [DkimCheck {
            result: DkimResult::Fail,
            domain: "example.com".into(),
            selector: "sel".into(),
            reason: Some("body hash did not verify"),
            signature_prefix: String::new(),
        }];
        let header = Results {
            authserv_id: "mx.example.net",
            spf: &spf,
            dkim: &dkim,
            arc: &arc,
            dmarc: &dmarc(DmarcResult::Fail, DmarcPolicy::Reject),
            action: Some(DmarcAction::Reject),
        }
        .header();
        assert!(
            header.contains(
                "\tdkim=fail (body hash did not verify) header.d=example.com header.s=sel;"
            )
        );
        assert!(header.contains("\tarc=fail (i=2 broken chain) smtp.remote-ip=192.0.2.1;"));
        assert!(header.ends_with("\tdmarc=fail (p=reject dis=reject) header.from=example.com"));
    }

    #[test]
    fn a_hostile_reverse_path_cannot_break_out_of_its_value() {
        let spf = spf("\"x;\r\nX-Injected: yes\"@example.com", "evil (helo\\", "");
        let header = Results {
            authserv_id: "mx.example.net",
            spf: &spf,
            dkim: &[],
            arc: &ArcCheck::none(),
            dmarc: &DmarcCheck::none(),
            action: None,
        }
        .header();
        assert!(!header.contains("\r\nX-Injected"), "{header}");
        assert!(
            header.contains("smtp.mailfrom=\"\\\"x;X-Injected: yes\\\"@example.com\""),
            "{header}"
        );
        // Every line break is a fold: CRLF then a tab.
        for (index, _) in header.match_indices('\n') {
            assert_eq!(&header[index - 1..index + 2], "\r\n\t");
        }
    }

    #[test]
    fn values_are_tokens_addresses_or_quoted_strings() {
        let written = |value: &str| {
            let mut field = String::new();
            push_value(&mut field, value);
            field
        };
        assert_eq!(written("example.com"), "example.com");
        assert_eq!(
            written("first.last+tag@example.com"),
            "first.last+tag@example.com"
        );
        assert_eq!(
            written("two words@example.com"),
            "\"two words@example.com\""
        );
        assert_eq!(written("a\"b"), "\"a\\\"b\"");
        // A signature prefix may hold "/" or "+", and "/" is an RFC 2045 tspecial.
        assert_eq!(written("ab+cd/ef"), "\"ab+cd/ef\"");
        assert_eq!(written(""), "\"\"");
    }
}
