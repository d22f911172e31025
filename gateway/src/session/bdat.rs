//! BDAT (RFC 3030 CHUNKING): collects counted chunks, then checks and spools the message.

use moat_delivery::QueueId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::framing::{DataViolation, check_chunked};
use super::inbound::{Inbound, ReadError};
use super::{Next, Session};
use crate::reply::{Refusal, Reply};

/// A message being assembled from BDAT chunks.
#[derive(Debug)]
pub(crate) struct Chunks {
    queue_id: QueueId,
    /// The Received header, then the chunks so far.
    message: Vec<u8>,
    header_length: usize,
    /// Set once the message has failed (over the size limit, or over the content budget):
    /// later chunks are read and dropped, and each gets this refusal until LAST or RSET.
    failure: Option<Refusal>,
}

impl Session {
    /// Answers one BDAT chunk. The chunk is always read, even when refused, because its bytes
    /// would otherwise be taken as commands.
    pub(super) async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
        size: usize,
        last: bool,
    ) -> Next {
        let timeout = self.shared.smtp.data_timeout;
        let refusal = match &self.transaction {
            None => Some(Refusal::BadSequence("need MAIL command")),
            Some(transaction) if transaction.recipients.is_empty() => {
                Some(Refusal::NoValidRecipients)
            }
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            if let Err(error) = inbound.chunk(size, None, timeout).await {
                return self.chunk_lost(inbound, error);
            }
            return self.refuse(inbound, refusal);
        }

        // Read the chunk into the message, unless the message has already failed.
        let limit = self.shared.smtp.max_message_size;
        let header = match &self.transaction {
            Some(transaction) if transaction.chunks.is_none() => {
                let queue_id = QueueId::generate();
                Some((queue_id, self.trace_header(transaction, queue_id)))
            }
            _ => None,
        };
        let Some(transaction) = self.transaction.as_mut() else {
            return Next::Continue;
        };
        let chunks = transaction.chunks.get_or_insert_with(|| {
            let (queue_id, message) = header.unwrap_or_else(|| (QueueId::generate(), Vec::new()));
            let header_length = message.len();
            Chunks {
                queue_id,
                message,
                header_length,
                failure: None,
            }
        });
        let body_length = chunks.message.len() - chunks.header_length;
        let wanted = body_length.saturating_add(size);
        if chunks.failure.is_none() && wanted > limit {
            chunks.failure = Some(Refusal::MessageTooBig(limit));
        }

        // The chunk's octets are reserved before it is read, as its size is known; a message
        // the budget cannot hold is dropped at once, its octets given back.
        let mut over_budget = None;
        if chunks.failure.is_none()
            && let Err(exhausted) = transaction.reservation.cover(wanted)
        {
            chunks.failure = Some(Refusal::InsufficientStorage);
            chunks.message = Vec::new();
            chunks.header_length = 0;
            transaction.reservation.release();
            over_budget = Some(exhausted);
        }
        let failure = chunks.failure.clone();
        let keep = failure.is_none().then_some(&mut chunks.message);
        if let Err(error) = inbound.chunk(size, keep, timeout).await {
            return self.chunk_lost(inbound, error);
        }
        if let Some(exhausted) = over_budget {
            self.log_over_budget(&exhausted, "bdat");
        }

        if !last {
            if let Some(refusal) = failure {
                return self.refuse(inbound, refusal);
            }
            inbound.reply(&Reply::new(250, "2.0.0", format!("{size} octets received")));
            return Next::Continue;
        }
        self.last_chunk(inbound).await
    }

    /// Checks the assembled message after `BDAT n LAST` and spools it.
    async fn last_chunk<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
    ) -> Next {
        let Some(mut transaction) = self.transaction.take() else {
            return Next::Continue;
        };
        let Some(chunks) = transaction.chunks.take() else {
            return Next::Continue;
        };
        let config = &self.shared.smtp;
        let Chunks {
            queue_id,
            mut message,
            header_length,
            failure,
        } = chunks;
        let size = message.len() - header_length;

        // Chunks are counted, so their framing is sound; but the content still goes on to
        // servers that read lines, so it gets the same line-ending policy as DATA.
        let checked = match failure {
            Some(refusal) => Err(refusal),
            None => check_chunked(
                &message[header_length..],
                config.bare_newline,
                config.max_text_line,
            )
            .map_err(|violation| match violation {
                DataViolation::TooBig => Refusal::MessageTooBig(config.max_message_size),
                DataViolation::LineTooLong => Refusal::ContentLineTooLong(config.max_text_line),
                DataViolation::Bare(kind) => Refusal::BareNewline(kind.as_str()),
            }),
        };
        let refusal = match checked {
            Ok(None) => None,
            // Normalizing adds a CR to each bare LF, so the longer content is covered too.
            Ok(Some(normalized)) => match transaction.reservation.cover(normalized.len()) {
                Ok(()) => {
                    message.truncate(header_length);
                    message.extend_from_slice(&normalized);
                    None
                }
                Err(exhausted) => {
                    self.log_over_budget(&exhausted, "bdat");
                    Some(Refusal::InsufficientStorage)
                }
            },
            Err(refusal) => Some(refusal),
        };

        if let Some(refusal) = refusal {
            self.log_transaction(&transaction, Some(queue_id), size, refusal.name());
            return self.refuse(inbound, refusal);
        }
        self.enqueue(inbound, transaction, queue_id, message, header_length)
            .await
    }

    /// Ends the session when a chunk could not be read.
    fn chunk_lost<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
        error: ReadError,
    ) -> Next {
        if matches!(error, ReadError::Timeout(_)) {
            return self.refuse(inbound, Refusal::DataTimeout);
        }
        tracing::debug!(%error, "client lost during BDAT");
        self.abandon("client_gone");
        Next::Close
    }
}
