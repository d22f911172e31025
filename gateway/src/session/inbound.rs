//! The connection as the session sees it: buffered reads with timeouts and batched replies.
//!
//! Replies are collected and written only when the session must wait for the client, which is
//! what RFC 2920 section 3.2 asks of a server that offers PIPELINING: one write answers a whole
//! pipelined batch of commands.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::framing::{BareKind, BareNewline, DataFramer, DataViolation, command_line_end};
use crate::budget::{BudgetExhausted, Reservation};
use crate::reply::Reply;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How long a closing session waits for the client to finish sending and close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The most a closing session reads and drops before it stops waiting for the client.
const CLOSE_DRAIN_LIMIT: usize = 1024 * 1024;

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The client closed the connection.
    #[error("client closed the connection")]
    Closed,
    /// Nothing arrived within the timeout.
    #[error("client sent nothing for {0:?}")]
    Timeout(Duration),
    /// A command line was longer than the limit; it was read to its end and dropped.
    #[error("command line longer than the limit")]
    LineTooLong,
    /// A bare LF or CR under the reject policy.
    #[error("bare {} received", .0.as_str())]
    Bare(BareKind),
    /// The server is shutting down and the client was between two commands.
    #[error("server shutting down")]
    ShuttingDown,
    /// The socket failed.
    #[error("reading from the client failed: {0}")]
    Io(#[from] io::Error),
}

/// How DATA content ended, once its end mark was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// The content is in the buffer given, covered by the reservation.
    Kept,
    /// The content budget was spent: the content was read to its end and dropped.
    OverBudget(BudgetExhausted),
}

/// A client connection: the stream, bytes read but not yet used, and replies not yet sent.
pub struct Inbound<S> {
    stream: S,
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    write_timeout: Duration,
    /// Becomes true when the server shuts down; a wait for the next command then ends.
    closing: Option<watch::Receiver<bool>>,
    /// A message spans several commands (BDAT chunks): a shutdown waits for its last one.
    mid_message: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inbound<S> {
    /// Wraps a stream; `write_timeout` bounds each write to a client that does not read.
    pub fn new(stream: S, write_timeout: Duration) -> Self {
        Inbound {
            stream,
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            output: Vec::with_capacity(1024),
            write_timeout,
            closing: None,
            mid_message: false,
        }
    }

    /// Ends the wait for a command with [`ReadError::ShuttingDown`] once `closing` turns true.
    /// Content being read (DATA, BDAT) is never cut short: that transaction may still finish.
    pub fn close_when(&mut self, closing: watch::Receiver<bool>) {
        self.closing = Some(closing);
    }

    /// Says whether a message is partly received across commands (BDAT chunks before the
    /// LAST one): a shutdown then lets the client send the rest, as it lets DATA finish.
    pub fn set_mid_message(&mut self, mid_message: bool) {
        self.mid_message = mid_message;
    }

    /// Gives the stream back, for the TLS handshake after STARTTLS.
    ///
    /// Unread input is dropped on purpose: plain-text commands pipelined after STARTTLS must
    /// never be taken as sent over TLS (CVE-2011-0411).
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Whether the client has sent bytes the session has not used yet.
    pub fn has_unread_input(&self) -> bool {
        self.start < self.input.len()
    }

    /// Queues a reply; it goes out before the next wait for input, or at [`Self::flush`].
    pub fn reply(&mut self, reply: &Reply) {
        self.output.extend_from_slice(&reply.to_wire());
    }

    /// Sends queued replies.
    ///
    /// # Errors
    /// Fails when the client does not take the bytes within the write timeout or the socket
    /// fails.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client not reading",
                ));
            }
        }
        self.output.clear();
        Ok(())
    }

    /// Waits for more bytes from the client, sending queued replies first.
    async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await?;

        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.input.drain(..self.start);
            self.start = 0;
        }

        self.input.reserve(READ_CHUNK);
        let count = match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input)).await
        {
            Ok(Ok(count)) => count,
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => return Err(ReadError::Timeout(timeout)),
        };
        if count == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Sends queued replies, closes the sending side, and reads what the client still sends
    /// for a moment, so the last reply is not lost to a TCP reset (which a close with unread
    /// input causes). Over TLS the shutdown also sends close_notify.
    pub async fn close(&mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.stream.shutdown()).await;
        let drain = async {
            let mut discard = [0u8; 4096];
            let mut total = 0;
            while total < CLOSE_DRAIN_LIMIT {
                match self.stream.read(&mut discard).await {
                    Ok(0) | Err(_) => break,
                    Ok(count) => total += count,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }

    /// Waits up to `wait` for the client to send anything, without consuming it.
    ///
    /// Returns true if bytes arrived: the pre-greet test (a client must wait for the banner).
    pub async fn talks_within(&mut self, wait: Duration) -> Result<bool, ReadError> {
        match self.fill(wait).await {
            Ok(()) => Ok(true),
            Err(ReadError::Timeout(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Reads one command line, returned with a CRLF ending whatever the client sent.
    ///
    /// # Errors
    /// [`ReadError::LineTooLong`] after a line of more than `max` octets (read to its end, so the
    /// session can go on), [`ReadError::Bare`] for a bare LF under the reject policy or a bare
    /// CR under either, and the connection errors.
    pub async fn command_line(
        &mut self,
        max: usize,
        timeout: Duration,
        policy: BareNewline,
    ) -> Result<Vec<u8>, ReadError> {
        // The whole line must arrive within the timeout, not each byte of it: a client that
        // trickles a byte a minute would otherwise hold the session for ever.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut discarding = false;
        loop {
            let pending = &self.input[self.start..];
            if let Some((length, bare)) = command_line_end(pending) {
                self.start += length;
                if discarding || length > max {
                    return Err(ReadError::LineTooLong);
                }
                if bare && policy == BareNewline::Reject {
                    return Err(ReadError::Bare(BareKind::Lf));
                }
                let line_end = if bare { length - 1 } else { length - 2 };
                // A CR inside a command is refused under either policy: Postfix's normalize
                // covers LF only, and a CR that one parser ignores and another takes as a line
                // end is exactly how commands get smuggled.
                if pending[..line_end].contains(&b'\r') {
                    return Err(ReadError::Bare(BareKind::Cr));
                }
                let mut line = pending[..line_end].to_vec();
                line.extend_from_slice(b"\r\n");
                return Ok(line);
            }
            if pending.len() > max {
                // Drop what cannot be a command, but keep a trailing CR that may start CRLF.
                discarding = true;
                self.start = self.input.len() - 1;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ReadError::Timeout(timeout));
            }
            self.fill_unless_closing(remaining).await?;
        }
    }

    /// [`Inbound::fill`], unless the server shuts down first.
    async fn fill_unless_closing(&mut self, timeout: Duration) -> Result<(), ReadError> {
        let Some(mut closing) = self.closing.clone().filter(|_| !self.mid_message) else {
            return self.fill(timeout).await;
        };
        if *closing.borrow() {
            return Err(ReadError::ShuttingDown);
        }
        // Replies are flushed before the wait, so that a shutdown cannot interrupt a write
        // half done and leave the reply stream garbled.
        self.flush().await?;
        tokio::select! {
            filled = self.fill(timeout) => filled,
            _ = closing.wait_for(|closing| *closing) => Err(ReadError::ShuttingDown),
        }
    }

    /// Reads DATA content up to and including CRLF.CRLF, through `framer` into `content`,
    /// growing `reservation` to cover what `content` holds beyond its length on entry.
    ///
    /// When the reservation cannot grow, `content` is emptied, the reservation given back, and
    /// the rest of the message read to its end and dropped: the client must see the refusal
    /// only after its final dot (RFC 5321 section 4.1.1.4), and the session can go on.
    ///
    /// Returns early, without the end mark, when the framer finds a bare newline under the
    /// reject policy; the caller replies and closes.
    ///
    /// # Errors
    /// The connection errors, and a timeout between two reads of content.
    pub async fn data(
        &mut self,
        framer: &mut DataFramer,
        content: &mut Vec<u8>,
        reservation: &mut Reservation,
        timeout: Duration,
    ) -> Result<DataEnd, ReadError> {
        let already = content.len();
        let mut end = DataEnd::Kept;
        let mut dropped = Vec::new();
        loop {
            let kept = match end {
                DataEnd::Kept => &mut *content,
                DataEnd::OverBudget(_) => &mut dropped,
            };
            let fed = framer.feed(&self.input[self.start..], kept);
            self.start += fed.consumed;
            dropped.clear();

            // Checked after each read rather than before, so a message is never refused for
            // commands pipelined behind it; it may go over by one read (READ_CHUNK) at most.
            if let DataEnd::Kept = end
                && let Err(exhausted) = reservation.cover(content.len() - already)
            {
                *content = Vec::new();
                reservation.release();
                end = DataEnd::OverBudget(exhausted);
            }

            if fed.finished {
                return Ok(end);
            }
            if let Some(DataViolation::Bare(kind)) = framer.violation() {
                return Err(ReadError::Bare(kind));
            }
            self.fill(timeout).await?;
        }
    }

    /// Reads exactly `length` octets of a BDAT chunk (RFC 3030), appending them to `content`
    /// when given, or dropping them when the transaction has already failed.
    ///
    /// # Errors
    /// The connection errors, and a timeout between two reads.
    pub async fn chunk(
        &mut self,
        mut length: usize,
        mut content: Option<&mut Vec<u8>>,
        timeout: Duration,
    ) -> Result<(), ReadError> {
        loop {
            let available = (self.input.len() - self.start).min(length);
            if let Some(content) = content.as_deref_mut() {
                content.extend_from_slice(&self.input[self.start..self.start + available]);
            }
            self.start += available;
            length -= available;
            if length == 0 {
                return Ok(());
            }
            self.fill(timeout).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn reads_pipelined_commands_one_at_a_time() {
        let (mut client, server) = duplex(1024);
        client
            .write_all(b"NOOP\r\nRSET\r\n")
            .await
            .expect("write to duplex");
        let mut inbound = Inbound::new(server, WAIT);
        let first = inbound
            .command_line(512, WAIT, BareNewline::Reject)
            .await
            .expect("first");
        assert_eq!(first, b"NOOP\r\n");
        assert!(inbound.has_unread_input());
        let second = inbound
            .command_line(512, WAIT, BareNewline::Reject)
            .await
            .expect("second");
        assert_eq!(second, b"RSET\r\n");
    }

    #[tokio::test]
    async fn a_long_line_is_dropped_and_the_next_one_read() {
        let (mut client, server) = duplex(8192);
        let mut long = vec![b'x'; 3000];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        client.write_all(&long).await.expect("write to duplex");
        let mut inbound = Inbound::new(server, WAIT);
        let first = inbound.command_line(512, WAIT, BareNewline::Reject).await;
        assert!(matches!(first, Err(ReadError::LineTooLong)));
        let second = inbound
            .command_line(512, WAIT, BareNewline::Reject)
            .await
            .expect("next");
        assert_eq!(second, b"NOOP\r\n");
    }

    #[tokio::test]
    async fn a_bare_lf_command_is_normalized_or_refused() {
        let (mut client, server) = duplex(1024);
        client
            .write_all(b"NOOP\nNOOP\n")
            .await
            .expect("write to duplex");
        let mut inbound = Inbound::new(server, WAIT);
        let line = inbound
            .command_line(512, WAIT, BareNewline::Normalize)
            .await
            .expect("line");
        assert_eq!(line, b"NOOP\r\n");
        let refused = inbound.command_line(512, WAIT, BareNewline::Reject).await;
        assert!(matches!(refused, Err(ReadError::Bare(BareKind::Lf))));
    }

    #[tokio::test]
    async fn a_bare_cr_in_a_command_is_refused_under_either_policy() {
        let (mut client, server) = duplex(1024);
        client
            .write_all(b"RCPT TO:<a@example.com>\rDATA\r\n")
            .await
            .expect("write to duplex");
        let mut inbound = Inbound::new(server, WAIT);
        let refused = inbound
            .command_line(512, WAIT, BareNewline::Normalize)
            .await;
        assert!(matches!(refused, Err(ReadError::Bare(BareKind::Cr))));
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (_client, server) = duplex(1024);
        let mut inbound = Inbound::new(server, WAIT);
        let result = inbound
            .command_line(512, Duration::from_millis(20), BareNewline::Reject)
            .await;
        assert!(matches!(result, Err(ReadError::Timeout(_))));
    }
}
