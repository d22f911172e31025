//! Our SMTP and LMTP client: one plain-text session with one downstream host, reused per message.
//!
//! We do not use the mail-send crate: in LMTP mode it reads a single reply after DATA, where
//! RFC 2033 section 4.2 gives one reply per accepted recipient, and it does not report the
//! outcome of each RCPT. Both matter here, because the queue must know exactly which recipients
//! a storage host took.
//!
//! A [`Connection`] reads the greeting, says EHLO (or LHLO), and then runs any number of
//! transactions with [`Connection::send`]. With PIPELINING (RFC 2920) MAIL, every RCPT and DATA
//! go out in one write. The content is dot-stuffed (RFC 5321 section 4.5.2) into one buffer and
//! written at once. No STARTTLS: downstream storage sits on a private network in this version.
//!
//! # Errors and reuse
//!
//! A reply, even a refusal, becomes a [`RecipientResult`]. A lost connection, a timeout or a
//! reply that breaks the protocol becomes a [`TransportError`], after which the connection is
//! unusable ([`Connection::is_usable`]) and must be dropped. One exception avoids duplicate
//! deliveries: when an LMTP host has already given final replies for some recipients before the
//! session failed, `send` returns those replies and defers the rest, and only marks the
//! connection unusable.
//!
//! # Layout
//!
//! This file holds the session: opening it, the greeting and EHLO, sending, quitting, and the
//! reading and writing of single commands and replies. Beside it:
//!
//! * `transaction`: one mail transaction, from MAIL FROM to the final replies;
//! * `reply`: the reply codec (reply lines, enhanced status codes, EHLO extensions);
//! * `content`: the content as it goes on the wire, dot-stuffed with CRLF line endings;
//! * `error`: [`Stage`] and [`TransportError`].

mod content;
mod error;
mod reply;
mod transaction;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, lookup_host};
use tokio::time::timeout;
use tracing::{debug, trace};

use crate::envelope::Envelope;
use crate::transport::RecipientResult;

pub use error::{Stage, TransportError};
pub(crate) use reply::enhanced_status_prefix;
use reply::{Extensions, Reply, parse_reply_line};

/// Time allowed to open the TCP connection: a host on the private network answers at once or
/// is down, and the runner should move to a standby host quickly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for the greeting and for each command's reply: RFC 5321 section 4.5.3.2 asks a
/// client to wait five minutes for the greeting, MAIL and RCPT.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Time allowed to write the content and get the final replies: RFC 5321 section 4.5.3.2.6
/// asks ten minutes for the reply after the final dot, which may follow a slow mailbox write.
pub const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long `quit` waits for the reply to QUIT, which only lets the host close cleanly.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest reply line we accept. RFC 5321 section 4.5.3.1.5 sets 512 octets, but real
/// servers exceed it; the cap only stops a broken peer from growing our buffer without end.
const MAX_REPLY_LINE: usize = 4_096;

/// The most lines one reply may have; an EHLO reply has one per extension, a few dozen at most.
const MAX_REPLY_LINES: usize = 128;

/// The content buffer is kept between messages up to this size and shrunk beyond it, so a rare
/// large message does not pin its memory for the life of the connection.
const KEEP_BUFFER_CAPACITY: usize = 1 << 20;

/// Which dialect the downstream host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP (RFC 5321): EHLO, and one reply after the final dot for all recipients.
    Smtp,
    /// LMTP (RFC 2033): LHLO, and one reply after the final dot per accepted recipient.
    Lmtp,
}

/// How long each stage of a session may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection, name resolution included.
    pub connect: Duration,
    /// The greeting, and the reply to each of EHLO/LHLO, HELO, MAIL, RCPT, DATA, RSET and QUIT.
    pub command: Duration,
    /// Writing the content and reading the reply (or, for LMTP, each reply) after the final dot.
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            command: DEFAULT_COMMAND_TIMEOUT,
            data: DEFAULT_DATA_TIMEOUT,
        }
    }
}

/// One open session with one downstream host.
#[derive(Debug)]
pub struct Connection {
    host: String,
    protocol: Protocol,
    timeouts: Timeouts,
    stream: BufReader<TcpStream>,
    extensions: Extensions,
    /// The reply line being read, kept to avoid an allocation per line.
    line: Vec<u8>,
    /// Commands or content being written, kept between messages up to KEEP_BUFFER_CAPACITY.
    out: Vec<u8>,
    usable: bool,
}

impl Connection {
    /// Connects to `host` (`HOST:PORT`, or `[IPV6]:PORT`), reads the greeting and says EHLO
    /// (SMTP, falling back to HELO on a 5xx reply) or LHLO (LMTP) with `helo_name`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Resolve`] or [`TransportError::Connect`] if no connection could be
    /// made, [`TransportError::Refused`] if the greeting is not 220 or the hello is refused, and
    /// the other variants for timeouts, lost connections and malformed replies.
    pub async fn open(
        host: &str,
        protocol: Protocol,
        helo_name: &str,
        timeouts: &Timeouts,
    ) -> Result<Connection, TransportError> {
        let tcp = match timeout(timeouts.connect, connect(host)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(TransportError::Timeout {
                    host: host.into(),
                    stage: Stage::Connect,
                });
            }
        };
        // Commands are written whole, so Nagle's algorithm would only add a delayed-ACK stall
        // to every exchange that is not pipelined.
        if let Err(error) = tcp.set_nodelay(true) {
            return Err(TransportError::Io {
                host: host.into(),
                stage: Stage::Connect,
                error,
            });
        }

        let mut connection = Connection {
            host: host.into(),
            protocol,
            timeouts: *timeouts,
            stream: BufReader::new(tcp),
            extensions: Extensions::default(),
            line: Vec::new(),
            out: Vec::new(),
            usable: true,
        };
        connection.greet(helo_name).await?;
        debug!(host, ?protocol, extensions = ?connection.extensions, "downstream session opened");
        Ok(connection)
    }

    /// The host this connection was opened to, as it was given to [`Connection::open`].
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the connection can carry another transaction; false after any
    /// [`TransportError`] and after an LMTP session failed part-way through the final replies.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// Sends one message to the envelope's recipients and returns one result per recipient, in
    /// the envelope's order.
    ///
    /// A refused MAIL FROM applies to every recipient. If the envelope needs SMTPUTF8 and the
    /// host did not advertise it, no transaction is started and every recipient fails with
    /// "5.6.7 downstream lacks SMTPUTF8" (RFC 6531 section 3.2). `message` is the content with
    /// CRLF line endings; it is dot-stuffed here.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] if the connection failed, timed out or broke the protocol before
    /// any recipient got a final answer; the connection is then unusable. The message was not
    /// delivered to anyone, except in the unknowable case of a connection lost after the final
    /// dot but before the reply (RFC 1047), where retrying may duplicate it.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Vec<RecipientResult>, TransportError> {
        if !self.usable {
            return Err(TransportError::Unusable {
                host: self.host.clone(),
            });
        }
        if envelope.smtputf8 && !self.extensions.smtputf8 {
            let reason = "5.6.7 downstream lacks SMTPUTF8".to_string();
            return Ok(vec![
                RecipientResult::Failed { reason };
                envelope.recipients.len()
            ]);
        }
        if envelope.recipients.is_empty() {
            return Ok(Vec::new());
        }

        let outcome = self.transaction(envelope, message).await;
        if outcome.is_err() {
            self.usable = false;
        }
        if self.out.capacity() > KEEP_BUFFER_CAPACITY {
            self.out = Vec::new();
        }
        outcome
    }

    /// Says QUIT, waits briefly for the reply and closes the connection. Errors are ignored:
    /// the connection is being given up either way.
    pub async fn quit(mut self) {
        if self.usable {
            // Nothing depends on the reply, so a hung host must not hold us for the full
            // command timeout.
            let limit = self.timeouts.command.min(QUIT_TIMEOUT);
            if self.write(b"QUIT\r\n", Stage::Quit, limit).await.is_ok() {
                let _ = self.read_reply(Stage::Quit, limit).await;
            }
        }
        let _ = self.stream.get_mut().shutdown().await;
        debug!(host = %self.host, "downstream session closed");
    }

    /// Reads the greeting and introduces ourselves.
    async fn greet(&mut self, helo_name: &str) -> Result<(), TransportError> {
        let greeting = self
            .read_reply(Stage::Greeting, self.timeouts.command)
            .await?;
        if greeting.code != 220 {
            return Err(self.refused(Stage::Greeting, &greeting));
        }

        let verb = match self.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        let reply = self
            .command(&format!("{verb} {helo_name}"), Stage::Hello)
            .await?;
        if reply.class() == 2 {
            self.extensions = Extensions::from_hello(&reply);
            return Ok(());
        }

        // RFC 5321 section 3.2: an old server refuses EHLO with 5xx and may still take HELO.
        // LMTP has no such fallback (RFC 2033 section 4.1).
        if self.protocol == Protocol::Lmtp || reply.class() != 5 {
            return Err(self.refused(Stage::Hello, &reply));
        }
        let reply = self
            .command(&format!("HELO {helo_name}"), Stage::Hello)
            .await?;
        if reply.class() != 2 {
            return Err(self.refused(Stage::Hello, &reply));
        }
        Ok(())
    }
    fn refused(&self, stage: Stage, reply: &Reply) -> TransportError {
        TransportError::Refused {
            host: self.host.clone(),
            stage,
            reply: reply.text(),
        }
    }

    /// Writes one command line and reads its reply, within the command timeout.
    async fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, TransportError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes, stage, self.timeouts.command).await?;
        self.read_reply(stage, self.timeouts.command).await
    }

    /// Writes `bytes` whole within `limit`.
    async fn write(
        &mut self,
        bytes: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), TransportError> {
        match timeout(limit, self.stream.get_mut().write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(TransportError::Io {
                host: self.host.clone(),
                stage,
                error,
            }),
            Err(_) => Err(TransportError::Timeout {
                host: self.host.clone(),
                stage,
            }),
        }
    }

    /// Reads one whole reply, all its lines, within `limit`.
    async fn read_reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, TransportError> {
        let reply = match timeout(limit, self.read_reply_lines(stage)).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(TransportError::Timeout {
                    host: self.host.clone(),
                    stage,
                });
            }
        };
        trace!(host = %self.host, %stage, reply = %reply.text(), "downstream reply");
        Ok(reply)
    }

    async fn read_reply_lines(&mut self, stage: Stage) -> Result<Reply, TransportError> {
        let mut reply = Reply {
            code: 0,
            lines: Vec::new(),
        };
        loop {
            self.read_line(stage).await?;
            let line =
                parse_reply_line(&self.line).map_err(|detail| self.malformed(stage, detail))?;
            if reply.lines.is_empty() {
                reply.code = line.code;
            } else if line.code != reply.code {
                let detail = format!("reply code changed from {} to {}", reply.code, line.code);
                return Err(self.malformed(stage, detail));
            }
            reply.lines.push(line.text);
            if line.last {
                return Ok(reply);
            }
            if reply.lines.len() >= MAX_REPLY_LINES {
                let detail = format!("reply longer than {MAX_REPLY_LINES} lines");
                return Err(self.malformed(stage, detail));
            }
        }
    }

    /// Reads one line, LF included, into `self.line`.
    async fn read_line(&mut self, stage: Stage) -> Result<(), TransportError> {
        self.line.clear();
        let mut limited = (&mut self.stream).take(MAX_REPLY_LINE as u64);
        let read = limited.read_until(b'\n', &mut self.line).await;
        match read {
            Err(error) => Err(TransportError::Io {
                host: self.host.clone(),
                stage,
                error,
            }),
            Ok(_) if self.line.ends_with(b"\n") => Ok(()),
            Ok(length) if length >= MAX_REPLY_LINE => {
                let detail = format!("reply line longer than {MAX_REPLY_LINE} bytes");
                Err(self.malformed(stage, detail))
            }
            // End of stream, with or without a partial line.
            Ok(_) => Err(TransportError::Closed {
                host: self.host.clone(),
                stage,
            }),
        }
    }

    fn malformed(&self, stage: Stage, detail: String) -> TransportError {
        TransportError::MalformedReply {
            host: self.host.clone(),
            stage,
            detail,
        }
    }
}

/// Resolves `host` and connects to the first of its addresses that accepts.
async fn connect(host: &str) -> Result<TcpStream, TransportError> {
    let addresses = match lookup_host(host).await {
        Ok(addresses) => addresses,
        Err(error) => {
            return Err(TransportError::Resolve {
                host: host.into(),
                error,
            });
        }
    };
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(TransportError::Connect {
        host: host.into(),
        error: last_error,
    })
}

// Shared with the integration tests, which drive the client through the same transcripts.
#[cfg(test)]
#[path = "../../../tests/support/transcript_server.rs"]
mod transcript_server;

#[cfg(test)]
mod tests {
    use super::transcript_server::{finished, server};
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        command: Duration::from_secs(5),
        data: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn falls_back_to_helo_when_ehlo_is_refused() {
        let (host, task) = server(vec![
            "S: 220 old.example.net SMTP",
            "C: EHLO mx.example.com",
            "S: 502 5.5.1 Command not implemented",
            "C: HELO mx.example.com",
            "S: 250 old.example.net",
        ])
        .await;
        let connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        assert_eq!(connection.extensions, Extensions::default());
        finished(task).await;
    }
}
