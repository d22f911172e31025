//! One mail transaction on an open [`Connection`]: MAIL FROM, RCPT TO, DATA, the content and
//! the final replies, each reply mapped to the recipients it decides for.

use super::content::dot_stuff;
use super::reply::Reply;
use super::{Connection, Protocol, Stage, TransportError};
use crate::envelope::{BodyType, Envelope};
use crate::transport::RecipientResult;

impl Connection {
    /// Runs MAIL, RCPT, DATA and the content, and maps every reply to the recipients.
    pub(super) async fn transaction(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Vec<RecipientResult>, TransportError> {
        // The content is encoded first because its exact size goes into MAIL FROM.
        let mut content = std::mem::take(&mut self.out);
        content.clear();
        let size = dot_stuff(message, &mut content);
        let mail = self.mail_command(envelope, size);

        let exchange = if self.extensions.pipelining {
            self.pipelined_envelope(&mail, &envelope.recipients).await
        } else {
            self.stepwise_envelope(&mail, &envelope.recipients).await
        };
        let result = match exchange {
            Ok(replies) => self.finish(envelope, replies, &content).await,
            Err(error) => Err(error),
        };
        self.out = content;
        result
    }

    /// Builds `MAIL FROM:<reverse-path>` with the parameters the host understands.
    fn mail_command(&self, envelope: &Envelope, size: usize) -> String {
        let mut mail = format!("MAIL FROM:<{}>", path(&envelope.reverse_path));
        if self.extensions.size {
            mail.push_str(&format!(" SIZE={size}"));
        }
        // BINARYMIME content goes out as 8BITMIME: without CHUNKING there is no other way.
        let eight_bit = matches!(envelope.body, BodyType::EightBitMime | BodyType::BinaryMime);
        if eight_bit && self.extensions.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if envelope.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail
    }

    /// Sends MAIL, every RCPT and DATA in one write, then reads their replies in order
    /// (RFC 2920 section 3.1).
    async fn pipelined_envelope(
        &mut self,
        mail: &str,
        recipients: &[String],
    ) -> Result<EnvelopeReplies, TransportError> {
        let mut batch = String::with_capacity(mail.len() + 2 + recipients.len() * 40 + 6);
        batch.push_str(mail);
        batch.push_str("\r\n");
        for recipient in recipients {
            batch.push_str(&format!("RCPT TO:<{}>\r\n", path(recipient)));
        }
        batch.push_str("DATA\r\n");
        self.write(batch.as_bytes(), Stage::Mail, self.timeouts.command)
            .await?;

        let mail = self.read_reply(Stage::Mail, self.timeouts.command).await?;
        let mut rcpt = Vec::with_capacity(recipients.len());
        for _ in recipients {
            rcpt.push(self.read_reply(Stage::Rcpt, self.timeouts.command).await?);
        }
        let data = Some(self.read_reply(Stage::Data, self.timeouts.command).await?);
        Ok(EnvelopeReplies { mail, rcpt, data })
    }

    /// Sends MAIL, each RCPT and DATA one at a time, stopping early when there is no point going
    /// on: MAIL refused, or no recipient accepted.
    async fn stepwise_envelope(
        &mut self,
        mail: &str,
        recipients: &[String],
    ) -> Result<EnvelopeReplies, TransportError> {
        let mail = self.command(mail, Stage::Mail).await?;
        if mail.class() != 2 {
            return Ok(EnvelopeReplies {
                mail,
                rcpt: Vec::new(),
                data: None,
            });
        }

        let mut rcpt = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            rcpt.push(
                self.command(&format!("RCPT TO:<{}>", path(recipient)), Stage::Rcpt)
                    .await?,
            );
        }
        let data = if rcpt.iter().any(|reply| reply.class() == 2) {
            Some(self.command("DATA", Stage::Data).await?)
        } else {
            None
        };
        Ok(EnvelopeReplies { mail, rcpt, data })
    }

    /// Turns the envelope replies into results, sending the content when DATA was accepted.
    async fn finish(
        &mut self,
        envelope: &Envelope,
        replies: EnvelopeReplies,
        content: &[u8],
    ) -> Result<Vec<RecipientResult>, TransportError> {
        let data_accepted = replies.data.as_ref().is_some_and(|reply| reply.code == 354);

        // A refused MAIL FROM decides for every recipient.
        if replies.mail.class() != 2 {
            let outcome = self.outcome(&replies.mail, Stage::Mail)?;
            if data_accepted {
                self.abandon_data().await;
            }
            return Ok(vec![outcome; envelope.recipients.len()]);
        }

        // Each RCPT reply decides for its recipient; None marks the accepted ones for now.
        let mut results: Vec<Option<RecipientResult>> = Vec::with_capacity(replies.rcpt.len());
        for reply in &replies.rcpt {
            let outcome = self.outcome(reply, Stage::Rcpt)?;
            let accepted = matches!(outcome, RecipientResult::Delivered { .. });
            results.push(if accepted { None } else { Some(outcome) });
        }
        let accepted: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].is_none())
            .collect();

        match replies.data {
            Some(data) if !accepted.is_empty() && data.code == 354 => {
                self.write(content, Stage::Content, self.timeouts.data)
                    .await?;
                self.final_replies(&accepted, &mut results).await?;
            }
            Some(data) if !accepted.is_empty() => {
                // DATA refused: that reply decides for every accepted recipient.
                if !matches!(data.class(), 4 | 5) {
                    let reply = data.text();
                    return Err(TransportError::UnexpectedReply {
                        host: self.host.clone(),
                        stage: Stage::Data,
                        reply,
                    });
                }
                let outcome = self.outcome(&data, Stage::Data)?;
                for &index in &accepted {
                    results[index] = Some(outcome.clone());
                }
                self.reset().await;
            }
            // No recipient accepted (DATA is always sent when one was).
            _ => {
                if data_accepted {
                    self.abandon_data().await;
                }
                self.reset().await;
            }
        }

        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| RecipientResult::Deferred {
                    reason: "4.4.0 no reply from downstream host".into(),
                })
            })
            .collect())
    }

    /// Reads the reply (SMTP) or replies (LMTP) after the final dot into `results`.
    async fn final_replies(
        &mut self,
        accepted: &[usize],
        results: &mut [Option<RecipientResult>],
    ) -> Result<(), TransportError> {
        if self.protocol == Protocol::Smtp {
            let reply = self.read_reply(Stage::Content, self.timeouts.data).await?;
            let outcome = self.outcome(&reply, Stage::Content)?;
            for &index in accepted {
                results[index] = Some(outcome.clone());
            }
            return Ok(());
        }

        // LMTP: one reply per accepted recipient, in RCPT order (RFC 2033 section 4.2).
        for (position, &index) in accepted.iter().enumerate() {
            let reply = self.read_reply(Stage::Content, self.timeouts.data).await;
            let error = match reply.and_then(|reply| self.outcome(&reply, Stage::Content)) {
                Ok(outcome) => {
                    results[index] = Some(outcome);
                    continue;
                }
                Err(error) => error,
            };
            // Nothing final yet: the caller may safely retry the whole message.
            if position == 0 {
                return Err(error);
            }
            // Some recipients have their message already; retrying them would deliver it twice,
            // so keep their replies and defer only the rest.
            self.usable = false;
            let reason = format!("4.4.2 lmtp session failed after the final dot: {error}");
            for &rest in &accepted[position..] {
                results[rest] = Some(RecipientResult::Deferred {
                    reason: reason.clone(),
                });
            }
            return Ok(());
        }
        Ok(())
    }

    /// Ends a DATA the host accepted although we have nothing to send (RFC 2920 section 3.1:
    /// a client must then send the lone dot).
    async fn abandon_data(&mut self) {
        let sent = self
            .write(b".\r\n", Stage::Content, self.timeouts.data)
            .await;
        // An LMTP host answers per accepted recipient, and we cannot know how many it believes
        // it has; the session's state is unknown, so it must not be reused.
        if sent.is_err() || self.protocol == Protocol::Lmtp {
            self.usable = false;
            return;
        }
        if self
            .read_reply(Stage::Content, self.timeouts.data)
            .await
            .is_err()
        {
            self.usable = false;
        }
    }

    /// Sends RSET so the connection can carry the next transaction. The results are settled
    /// already; a failure here only makes the connection unusable.
    async fn reset(&mut self) {
        if !self.usable {
            return;
        }
        match self.command("RSET", Stage::Rset).await {
            Ok(reply) if reply.class() == 2 => {}
            _ => self.usable = false,
        }
    }

    /// The recipient outcome of `reply`, or an error if the reply cannot be one at `stage`.
    fn outcome(&self, reply: &Reply, stage: Stage) -> Result<RecipientResult, TransportError> {
        reply
            .outcome()
            .ok_or_else(|| TransportError::UnexpectedReply {
                host: self.host.clone(),
                stage,
                reply: reply.text(),
            })
    }
}

/// The replies to MAIL, to each RCPT and to DATA; `data` is `None` if DATA was not sent.
struct EnvelopeReplies {
    mail: Reply,
    rcpt: Vec<Reply>,
    data: Option<Reply>,
}

/// An address as it goes inside `<...>`: a local part that is not a dot-atom is written as a
/// quoted string (RFC 5321 section 4.1.2), so a local part the gateway took quoted, such as
/// `"x> NOTIFY=NEVER"`, can never turn into parameters of the downstream command.
fn path(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_string();
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c == '.' || atext(c));
    if dot_atom {
        return address.to_string();
    }
    let mut quoted = String::with_capacity(local.len() + domain.len() + 4);
    quoted.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push_str("\"@");
    quoted.push_str(domain);
    quoted
}

#[cfg(test)]
mod path_tests {
    use super::path;

    #[test]
    fn quotes_local_parts_that_are_not_dot_atoms() {
        assert_eq!(path("bob@example.com"), "bob@example.com");
        assert_eq!(path(""), "");
        assert_eq!(path("john doe@example.com"), "\"john doe\"@example.com");
        assert_eq!(
            path("bob> NOTIFY=NEVER ORCPT=rfc822;x@example.com"),
            "\"bob> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com"
        );
        assert_eq!(path("a\"b@example.com"), "\"a\\\"b\"@example.com");
    }
}
