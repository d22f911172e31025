//! DATA: reads the content up to CRLF.CRLF, checks it, and spools it.

use moat_delivery::QueueId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::framing::{DataFramer, DataViolation};
use super::inbound::{DataEnd, Inbound, ReadError};
use super::{Next, Session};
use crate::reply::{Refusal, Reply};

impl Session {
    /// Answers DATA, reads the message, and answers again at its end.
    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
    ) -> Next {
        match &self.transaction {
            None => return self.refuse(inbound, Refusal::BadSequence("need MAIL command")),
            Some(transaction) if transaction.chunks.is_some() => {
                return self.refuse(inbound, Refusal::BadSequence("DATA not allowed after BDAT"));
            }
            Some(transaction) if transaction.recipients.is_empty() => {
                return self.refuse(inbound, Refusal::NoValidRecipients);
            }
            Some(_) => {}
        }
        let Some(mut transaction) = self.transaction.take() else {
            return Next::Continue;
        };

        // RFC 2034 section 3: enhanced status codes are for 2xx, 4xx and 5xx replies only.
        inbound.reply(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        let queue_id = QueueId::generate();
        let mut message = self.trace_header(&transaction, queue_id);
        let header_length = message.len();
        let config = &self.shared.smtp;
        let mut framer = DataFramer::new(
            config.bare_newline,
            config.max_message_size,
            config.max_text_line,
        );

        let read = inbound
            .data(
                &mut framer,
                &mut message,
                &mut transaction.reservation,
                config.data_timeout,
            )
            .await;
        let size = framer.size();
        // A permanent refusal of the message itself goes before the temporary one of the
        // budget: retrying a message that is too big would only fail again.
        let refusal = match read {
            Ok(end) => match (framer.violation(), end) {
                (None, DataEnd::Kept) => None,
                (None, DataEnd::OverBudget(exhausted)) => {
                    self.log_over_budget(&exhausted, "data");
                    Some(Refusal::InsufficientStorage)
                }
                (Some(DataViolation::TooBig), _) => {
                    Some(Refusal::MessageTooBig(config.max_message_size))
                }
                (Some(DataViolation::LineTooLong), _) => {
                    Some(Refusal::ContentLineTooLong(config.max_text_line))
                }
                (Some(DataViolation::Bare(kind)), _) => Some(Refusal::BareNewline(kind.as_str())),
            },
            Err(ReadError::Bare(kind)) => Some(Refusal::BareNewline(kind.as_str())),
            Err(ReadError::Timeout(_)) => Some(Refusal::DataTimeout),
            Err(error) => {
                tracing::debug!(%error, "client lost during DATA");
                self.log_transaction(&transaction, Some(queue_id), size, "client_gone");
                return Next::Close;
            }
        };

        if let Some(refusal) = refusal {
            self.log_transaction(&transaction, Some(queue_id), size, refusal.name());
            return self.refuse(inbound, refusal);
        }
        self.enqueue(inbound, transaction, queue_id, message, header_length)
            .await
    }
}
