//! MAIL FROM: opens a transaction with its reverse-path and parameters.

use std::borrow::Cow;
use std::time::Instant;

use moat_delivery::BodyType;
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8, MailFrom};

use super::{Session, Transaction};
use crate::reply::{Refusal, Reply};

impl Session {
    /// Answers MAIL FROM.
    pub(super) async fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> Result<Reply, Refusal> {
        if self.helo.is_none() {
            return Err(Refusal::BadSequence("send HELO or EHLO first"));
        }
        if self.transaction.is_some() {
            return Err(Refusal::BadSequence("nested MAIL command"));
        }

        // RFC 5321 section 4.1.2: no control characters, even quoted.
        if from.address.chars().any(char::is_control) {
            return Err(Refusal::BadReversePath);
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Err(Refusal::Utf8WithoutSmtputf8);
        }
        if let Some(parameter) = unoffered_mail_parameter(&from) {
            return Err(Refusal::UnsupportedParameter(parameter.into()));
        }
        // BINARYMIME is not offered (RFC 3030 section 3): content must stay line-based so the
        // relay can send it with DATA.
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return Err(Refusal::UnsupportedParameter("BODY=BINARYMIME".into()));
        }
        let limit = self.shared.smtp.max_message_size;
        if from.size > limit {
            return Err(Refusal::DeclaredSizeTooBig(limit));
        }

        // RFC 1870 section 6: a declared size that fits the limit but not the storage free now
        // gets 452 at once, before the client sends the message. Only a check, not a hold:
        // octets are reserved as they arrive, so a client that declares a size and then stalls
        // (NOOP after NOOP) ties up none of the budget other sessions need.
        let mut probe = self.shared.content_budget.reservation();
        if let Err(exhausted) = probe.cover(from.size) {
            self.log_over_budget(&exhausted, "mail");
            return Err(Refusal::InsufficientStorage);
        }
        drop(probe);
        let reservation = self.shared.content_budget.reservation();

        let body = if from.flags & MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        // SPF is judged now (RFC 7208 section 2.4), while the client waits for one reply; its
        // result only scores, at the end of DATA.
        let spf = match (&self.shared.checks.auth, &self.helo) {
            (Some(auth), Some(helo)) => Some(
                auth.check_spf(self.client.ip(), &helo.name, &from.address)
                    .await,
            ),
            _ => None,
        };

        self.transaction = Some(Transaction {
            reverse_path: from.address.into_owned(),
            smtputf8,
            body,
            recipients: Vec::new(),
            added_headers: Vec::new(),
            spf,
            verdict: None,
            started: Instant::now(),
            chunks: None,
            reservation,
        });
        Ok(Reply::new(250, "2.1.0", "Ok"))
    }
}

/// The first MAIL parameter of an extension this server does not offer (DSN, AUTH,
/// REQUIRETLS, FUTURERELEASE, DELIVERBY, MT-PRIORITY, ...): RFC 5321 section 4.1.1.11 says 555,
/// and accepting REQUIRETLS (RFC 8689) would promise a protection Moat does not give.
fn unoffered_mail_parameter(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    use smtp_proto::{
        MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS,
    };

    if from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) != 0 {
        return Some("RET");
    }
    if from.env_id.is_some() {
        return Some("ENVID");
    }
    if from.flags & MAIL_REQUIRETLS != 0 {
        return Some("REQUIRETLS");
    }
    if from.auth.is_some() {
        return Some("AUTH");
    }
    if from.hold_for != 0 || from.hold_until != 0 {
        return Some("HOLDFOR/HOLDUNTIL");
    }
    if from.by != 0 || from.flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN) != 0 {
        return Some("BY");
    }
    if from.mt_priority != 0 {
        return Some("MT-PRIORITY");
    }
    if from.flags & MAIL_CONPERM != 0 {
        return Some("CONPERM");
    }
    if from.trans_id.is_some() || from.solicit.is_some() || from.mtrk.is_some() {
        return Some("an unoffered extension");
    }
    None
}
