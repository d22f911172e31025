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

use std::fmt;
use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, lookup_host};
use tokio::time::timeout;
use tracing::{debug, trace};

use super::RecipientResult;
use crate::envelope::{BodyType, Envelope};

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

/// The step of the session during which something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Resolving the host and opening the TCP connection.
    Connect,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO, LHLO or HELO.
    Hello,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command, up to its 354 reply.
    Data,
    /// Writing the content and reading the final reply or replies.
    Content,
    /// RSET after a transaction that did not reach the content.
    Rset,
    /// QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Hello => "EHLO/LHLO",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content => "message content",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        })
    }
}

/// Why a session with a downstream host failed. The runner defers the message, or tries a
/// standby host; none of these is a verdict on the message itself.
///
/// The `error` fields are part of the message rather than a `source`, so that a log line of the
/// error alone names the cause.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name could not be resolved, or the address has no port.
    #[error("resolving downstream host failed: {host}: {error}")]
    Resolve {
        /// The host as configured.
        host: String,
        /// The resolver's error.
        error: io::Error,
    },
    /// No address of the host accepted the TCP connection.
    #[error("connecting to downstream host failed: {host}: {error}")]
    Connect {
        /// The host as configured.
        host: String,
        /// The error from the last address tried.
        error: io::Error,
    },
    /// A stage took longer than its [`Timeouts`] allow.
    #[error("downstream host timed out: {host} during {stage}")]
    Timeout {
        /// The host as configured.
        host: String,
        /// The stage that took too long.
        stage: Stage,
    },
    /// The host refused the session: a greeting other than 220, or EHLO/LHLO/HELO refused.
    #[error("downstream host refused the session: {host} at {stage}: {reply}")]
    Refused {
        /// The host as configured.
        host: String,
        /// [`Stage::Greeting`] or [`Stage::Hello`].
        stage: Stage,
        /// The host's reply.
        reply: String,
    },
    /// Reading or writing the socket failed.
    #[error("connection to downstream host lost: {host} during {stage}: {error}")]
    Io {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// The socket error.
        error: io::Error,
    },
    /// The host closed the connection while we waited for a reply.
    #[error("downstream host closed the connection: {host} during {stage}")]
    Closed {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
    },
    /// A reply line did not have the form of RFC 5321 section 4.2.
    #[error("malformed reply from downstream host: {host} during {stage}: {detail}")]
    MalformedReply {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// What was wrong, with the offending line.
        detail: String,
    },
    /// A well-formed reply that makes no sense at this point, such as 354 to RCPT.
    #[error("unexpected reply from downstream host: {host} during {stage}: {reply}")]
    UnexpectedReply {
        /// The host as configured.
        host: String,
        /// The stage that was under way.
        stage: Stage,
        /// The host's reply.
        reply: String,
    },
    /// `send` was called on a connection that an earlier error left in an unknown state.
    #[error("downstream connection unusable after an earlier error: {host}")]
    Unusable {
        /// The host as configured.
        host: String,
    },
}

/// One reply: its code and the text of each line, without the code and separator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// The first digit: 2 completion, 3 intermediate, 4 transient, 5 permanent.
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// The whole reply on one line, e.g. "250 2.1.5 Ok".
    ///
    /// Continuation lines are joined with a space; an enhanced status code repeated at the start
    /// of each line (RFC 2034 section 4) is kept only once.
    fn text(&self) -> String {
        let mut text = self.code.to_string();
        let first_status = self
            .lines
            .first()
            .and_then(|line| enhanced_status_prefix(line));
        for (index, line) in self.lines.iter().enumerate() {
            let mut line = line.as_str();
            if index > 0
                && let Some(status) = first_status
                && let Some(rest) = line.strip_prefix(status)
            {
                line = rest.trim_start();
            }
            if !line.is_empty() {
                text.push(' ');
                text.push_str(line);
            }
        }
        text
    }

    /// The recipient outcome this reply stands for, or `None` for a 1xx or 3xx reply.
    fn outcome(&self) -> Option<RecipientResult> {
        match self.class() {
            2 => Some(RecipientResult::Delivered { reply: self.text() }),
            4 => Some(RecipientResult::Deferred {
                reason: self.text(),
            }),
            5 => Some(RecipientResult::Failed {
                reason: self.text(),
            }),
            _ => None,
        }
    }
}

/// Returns the enhanced status code (`x.y.z`, RFC 3463) that starts `text`, if any.
pub(crate) fn enhanced_status_prefix(text: &str) -> Option<&str> {
    let end = text.find(' ').unwrap_or(text.len());
    let candidate = text.get(..end)?;
    let mut parts = candidate.split('.');
    let valid = matches!(parts.next(), Some("2" | "4" | "5"))
        && parts
            .next()
            .is_some_and(|p| (1..=3).contains(&p.len()) && is_digits(p))
        && parts
            .next()
            .is_some_and(|p| (1..=3).contains(&p.len()) && is_digits(p))
        && parts.next().is_none();
    valid.then_some(candidate)
}

fn is_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

/// One parsed reply line: `Reply-code [("-" / SP) textstring]`, RFC 5321 section 4.2.
#[derive(Debug, PartialEq, Eq)]
struct ReplyLine {
    code: u16,
    last: bool,
    text: String,
}

/// Parses one reply line, CRLF (or a bare LF, which some servers send) included.
fn parse_reply_line(line: &[u8]) -> Result<ReplyLine, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let shown = || String::from_utf8_lossy(line).into_owned();

    // RFC 5321 section 4.2: the first digit is 2 to 5, the second 0 to 5.
    let Some(([first, second, third], rest)) = line.split_first_chunk::<3>() else {
        return Err(format!("reply line too short: {:?}", shown()));
    };
    let valid_code =
        matches!(first, b'2'..=b'5') && matches!(second, b'0'..=b'5') && third.is_ascii_digit();
    if !valid_code {
        return Err(format!("reply line without a reply code: {:?}", shown()));
    }
    let code =
        u16::from(first - b'0') * 100 + u16::from(second - b'0') * 10 + u16::from(third - b'0');

    let (last, text) = match rest.split_first() {
        None => (true, &[][..]),
        Some((b' ', text)) => (true, text),
        Some((b'-', text)) => (false, text),
        Some(_) => {
            return Err(format!(
                "reply code not followed by space or '-': {:?}",
                shown()
            ));
        }
    };
    // Control characters would reach logs and bounces; nothing in a reply needs them.
    let text = String::from_utf8_lossy(text)
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    Ok(ReplyLine { code, last, text })
}

/// The service extensions (RFC 5321 section 4.1.1.1) the downstream host advertised, of those
/// the client uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Extensions {
    pipelining: bool,
    size: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
}

impl Extensions {
    /// Reads the keywords from the lines after the first of an EHLO or LHLO reply.
    fn from_hello(reply: &Reply) -> Extensions {
        let mut extensions = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let keyword = line.split_ascii_whitespace().next().unwrap_or_default();
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => extensions.pipelining = true,
                "SIZE" => extensions.size = true,
                "8BITMIME" => extensions.eight_bit_mime = true,
                "SMTPUTF8" => extensions.smtputf8 = true,
                _ => {}
            }
        }
        extensions
    }
}

/// Appends `message` to `out` as DATA content: dot-stuffed, CRLF line endings, final dot.
///
/// Returns the size of the content before dot-stuffing, which is what SIZE counts (RFC 1870).
///
/// A bare CR or LF is written as CRLF and counts as a line end for dot-stuffing. RFC 5321
/// section 2.3.8 forbids sending them bare, and a server that reads a bare LF as a line end
/// would otherwise see a "<LF>.<CRLF>" in the content as the end of data (SMTP smuggling).
fn dot_stuff(message: &[u8], out: &mut Vec<u8>) -> usize {
    out.reserve(message.len() + message.len() / 64 + 8);
    let start = out.len();
    let mut stuffed = 0;
    let mut rest = message;

    while !rest.is_empty() {
        // rest is at the start of a line here.
        if rest.first() == Some(&b'.') {
            out.push(b'.');
            stuffed += 1;
        }
        let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            // The last line lacks its CRLF: RFC 5321 section 4.1.1.4 needs one before the dot.
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
            break;
        };
        let (line, ending) = rest.split_at(end);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        let ending_len = if ending.starts_with(b"\r\n") { 2 } else { 1 };
        rest = ending.get(ending_len..).unwrap_or_default();
    }

    let size = out.len() - start - stuffed;
    out.extend_from_slice(b".\r\n");
    size
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

    /// Runs MAIL, RCPT, DATA and the content, and maps every reply to the recipients.
    async fn transaction(
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
        let mut mail = format!("MAIL FROM:<{}>", envelope.reverse_path);
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
            batch.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
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
                self.command(&format!("RCPT TO:<{recipient}>"), Stage::Rcpt)
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

/// The replies to MAIL, to each RCPT and to DATA; `data` is `None` if DATA was not sent.
struct EnvelopeReplies {
    mail: Reply,
    rcpt: Vec<Reply>,
    data: Option<Reply>,
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        command: Duration::from_secs(5),
        data: Duration::from_secs(5),
    };

    const EHLO_PIPELINING: &[&str] = &[
        "S: 220 lmtp.example.com ESMTP",
        "C: EHLO mx.example.com",
        "S: 250-lmtp.example.com",
        "S: 250-PIPELINING",
        "S: 250-SIZE 10240000",
        "S: 250-8BITMIME",
        "S: 250 SMTPUTF8",
    ];

    /// Plays the server's side of a transcript on 127.0.0.1: `S:` lines are sent, `C:` lines
    /// must arrive in that order. The task ends with an error naming the first difference.
    async fn server(script: Vec<&'static str>) -> (String, JoinHandle<Result<(), String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut stream = BufReader::new(stream);
            for step in script {
                if let Some(reply) = step.strip_prefix("S: ") {
                    let line = format!("{reply}\r\n");
                    stream
                        .get_mut()
                        .write_all(line.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                } else if let Some(expected) = step.strip_prefix("C: ") {
                    let mut line = Vec::new();
                    stream
                        .read_until(b'\n', &mut line)
                        .await
                        .map_err(|e| e.to_string())?;
                    let line = String::from_utf8_lossy(&line);
                    if line != format!("{expected}\r\n") {
                        return Err(format!("expected {expected:?}, got {line:?}"));
                    }
                } else {
                    return Err(format!("bad script step {step:?}"));
                }
            }
            Ok(())
        });
        (address, task)
    }

    fn with_ehlo(rest: &[&'static str]) -> Vec<&'static str> {
        EHLO_PIPELINING.iter().chain(rest).copied().collect()
    }

    fn envelope(recipients: &[&str]) -> Envelope {
        Envelope {
            reverse_path: "alice@example.org".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            smtputf8: false,
            body: BodyType::EightBitMime,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            helo: "client.example.org".into(),
            received_at: 1_700_000_000,
        }
    }

    const MESSAGE: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

    fn delivered(reply: &str) -> RecipientResult {
        RecipientResult::Delivered {
            reply: reply.into(),
        }
    }

    async fn finished(task: JoinHandle<Result<(), String>>) {
        task.await
            .expect("server task")
            .expect("transcript followed");
    }

    #[tokio::test]
    async fn pipelines_mail_rcpt_and_data_then_quits() {
        // No server line between MAIL, RCPT and DATA: a client that waited for each reply
        // would hang here and time out.
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            "S: 354 End data with <CR><LF>.<CR><LF>",
            "C: Subject: test",
            "C: ",
            "C: hello",
            "C: .",
            "S: 250 2.0.0 Ok: queued as 12345",
            "C: QUIT",
            "S: 221 2.0.0 Bye",
        ]))
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        assert_eq!(connection.host(), host);
        let results = connection
            .send(&envelope(&["bob@example.com"]), MESSAGE)
            .await
            .expect("send");
        assert_eq!(results, [delivered("250 2.0.0 Ok: queued as 12345")]);
        assert!(connection.is_usable());
        connection.quit().await;
        finished(task).await;
    }

    #[tokio::test]
    async fn dot_stuffs_lines_that_begin_with_a_dot() {
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=31 BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            "S: 354 go ahead",
            "C: Subject: dots",
            "C: ",
            "C: ..foo",
            "C: ..",
            "C: end",
            "C: .",
            "S: 250 2.0.0 Ok",
        ]))
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        // The last line lacks its CRLF: the client must add one before the final dot.
        let message = b"Subject: dots\r\n\r\n.foo\r\n.\r\nend";
        let results = connection
            .send(&envelope(&["bob@example.com"]), message)
            .await
            .expect("send");
        assert_eq!(results, [delivered("250 2.0.0 Ok")]);
        finished(task).await;
    }

    #[test]
    fn writes_bare_line_ends_as_crlf_and_stuffs_after_them() {
        let mut out = Vec::new();
        let size = dot_stuff(b"a\n.b\r.c\r\n", &mut out);
        assert_eq!(out, b"a\r\n..b\r\n..c\r\n.\r\n");
        assert_eq!(size, 11);

        let mut out = Vec::new();
        assert_eq!(dot_stuff(b"", &mut out), 0);
        assert_eq!(out, b".\r\n");
    }

    #[tokio::test]
    async fn lmtp_gives_each_accepted_recipient_its_own_final_reply() {
        let (host, task) = server(vec![
            "S: 220 lmtp.example.com LMTP",
            "C: LHLO mx.example.com",
            "S: 250-lmtp.example.com",
            "S: 250-PIPELINING",
            "S: 250 8BITMIME",
            "C: MAIL FROM:<alice@example.org> BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: RCPT TO:<carol@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            "S: 250 2.1.5 Ok",
            "S: 354 go ahead",
            "C: Subject: test",
            "C: ",
            "C: hello",
            "C: .",
            "S: 250 2.0.0 <bob@example.com> Saved",
            "S: 452 4.2.2 <carol@example.com> Mailbox full",
        ])
        .await;

        let mut connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let envelope = envelope(&["bob@example.com", "carol@example.com"]);
        let results = connection.send(&envelope, MESSAGE).await.expect("send");
        assert_eq!(
            results,
            [
                delivered("250 2.0.0 <bob@example.com> Saved"),
                RecipientResult::Deferred {
                    reason: "452 4.2.2 <carol@example.com> Mailbox full".into()
                },
            ]
        );
        assert!(connection.is_usable());
        finished(task).await;
    }

    #[tokio::test]
    async fn keeps_lmtp_replies_already_given_when_the_session_drops() {
        let (host, task) = server(vec![
            "S: 220 lmtp.example.com LMTP",
            "C: LHLO mx.example.com",
            "S: 250 lmtp.example.com",
            "C: MAIL FROM:<alice@example.org>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<bob@example.com>",
            "S: 250 2.1.5 Ok",
            "C: RCPT TO:<carol@example.com>",
            "S: 250 2.1.5 Ok",
            "C: DATA",
            "S: 354 go ahead",
            "C: Subject: test",
            "C: ",
            "C: hello",
            "C: .",
            "S: 250 2.0.0 Saved",
            // The server ends here and the connection closes before carol's reply.
        ])
        .await;

        let mut connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let envelope = envelope(&["bob@example.com", "carol@example.com"]);
        let results = connection
            .send(&envelope, MESSAGE)
            .await
            .expect("partial results");
        assert_eq!(results[0], delivered("250 2.0.0 Saved"));
        let RecipientResult::Deferred { reason } = &results[1] else {
            panic!("the second recipient should be deferred: {results:?}");
        };
        assert!(
            reason.starts_with("4.4.2 lmtp session failed after the final dot: "),
            "{reason}"
        );
        assert!(!connection.is_usable());
        finished(task).await;
    }

    #[tokio::test]
    async fn reports_a_refused_rcpt_among_accepted_ones() {
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: RCPT TO:<nobody@example.com>",
            "C: RCPT TO:<carol@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            "S: 550-5.1.1 <nobody@example.com>: Recipient address rejected:",
            "S: 550 5.1.1 User unknown in local recipient table",
            "S: 250 2.1.5 Ok",
            "S: 354 go ahead",
            "C: Subject: test",
            "C: ",
            "C: hello",
            "C: .",
            "S: 250 2.0.0 Ok",
        ]))
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let envelope = envelope(&["bob@example.com", "nobody@example.com", "carol@example.com"]);
        let results = connection.send(&envelope, MESSAGE).await.expect("send");
        assert_eq!(
            results,
            [
                delivered("250 2.0.0 Ok"),
                RecipientResult::Failed {
                    reason: "550 5.1.1 <nobody@example.com>: Recipient address rejected: \
                             User unknown in local recipient table"
                        .into()
                },
                delivered("250 2.0.0 Ok"),
            ]
        );
        finished(task).await;
    }

    #[tokio::test]
    async fn a_refused_mail_from_applies_to_every_recipient_and_the_session_goes_on() {
        // Without PIPELINING: the client stops at the refused MAIL and sends no RCPT.
        let (host, task) = server(vec![
            "S: 220 mx.example.net ESMTP",
            "C: EHLO mx.example.com",
            "S: 250 mx.example.net",
            "C: MAIL FROM:<alice@example.org>",
            "S: 550 5.7.1 Sender rejected",
            "C: MAIL FROM:<alice@example.org>",
            "S: 250 2.1.0 Ok",
            "C: RCPT TO:<bob@example.com>",
            "S: 451 4.3.0 Try later",
            "C: RSET",
            "S: 250 2.0.0 Ok",
        ])
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let both = envelope(&["bob@example.com", "carol@example.com"]);
        let refused = RecipientResult::Failed {
            reason: "550 5.7.1 Sender rejected".into(),
        };
        let results = connection.send(&both, MESSAGE).await.expect("send");
        assert_eq!(results, [refused.clone(), refused]);

        // No recipient accepted: RSET instead of DATA, and the connection stays usable.
        let results = connection
            .send(&envelope(&["bob@example.com"]), MESSAGE)
            .await;
        assert_eq!(
            results.expect("second send"),
            [RecipientResult::Deferred {
                reason: "451 4.3.0 Try later".into()
            }]
        );
        assert!(connection.is_usable());
        finished(task).await;
    }

    #[tokio::test]
    async fn a_refused_data_applies_to_the_accepted_recipients_only() {
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: RCPT TO:<nobody@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 250 2.1.5 Ok",
            "S: 550 5.1.1 User unknown",
            "S: 451 4.3.0 Queue file write error",
            "C: RSET",
            "S: 250 2.0.0 Ok",
        ]))
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let envelope = envelope(&["bob@example.com", "nobody@example.com"]);
        let results = connection.send(&envelope, MESSAGE).await.expect("send");
        assert_eq!(
            results,
            [
                RecipientResult::Deferred {
                    reason: "451 4.3.0 Queue file write error".into()
                },
                RecipientResult::Failed {
                    reason: "550 5.1.1 User unknown".into()
                },
            ]
        );
        assert!(connection.is_usable());
        finished(task).await;
    }

    #[tokio::test]
    async fn ends_a_data_accepted_without_recipients_with_a_lone_dot() {
        // RFC 2920 section 3.1: a pipelining server may accept DATA after refusing every RCPT.
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
            "C: RCPT TO:<nobody@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
            "S: 550 5.1.1 User unknown",
            "S: 354 go ahead",
            "C: .",
            "S: 554 5.5.1 No valid recipients",
            "C: RSET",
            "S: 250 2.0.0 Ok",
        ]))
        .await;

        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let results = connection
            .send(&envelope(&["nobody@example.com"]), MESSAGE)
            .await
            .expect("send");
        assert_eq!(
            results,
            [RecipientResult::Failed {
                reason: "550 5.1.1 User unknown".into()
            }]
        );
        assert!(connection.is_usable());
        finished(task).await;
    }

    #[tokio::test]
    async fn connects_to_a_bracketed_ipv6_address() {
        // Skipped where the test host has no IPv6 loopback.
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            return;
        };
        let port = listener.local_addr().expect("local address").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.write_all(b"220 ready\r\n").await.expect("greet");
            let mut stream = BufReader::new(stream);
            let mut line = Vec::new();
            stream.read_until(b'\n', &mut line).await.expect("lhlo");
            stream
                .get_mut()
                .write_all(b"250 ok\r\n")
                .await
                .expect("reply");
            line
        });
        let host = format!("[::1]:{port}");
        let connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        assert_eq!(connection.host(), host);
        assert_eq!(server.await.expect("server"), b"LHLO mx.example.com\r\n");
    }

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

    #[tokio::test]
    async fn fails_smtputf8_recipients_when_the_host_lacks_it() {
        let (host, task) = server(vec![
            "S: 220 mx.example.net ESMTP",
            "C: EHLO mx.example.com",
            "S: 250-mx.example.net",
            "S: 250 PIPELINING",
        ])
        .await;
        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let mut envelope = envelope(&["jörg@example.com"]);
        envelope.smtputf8 = true;
        let results = connection.send(&envelope, MESSAGE).await.expect("send");
        assert_eq!(
            results,
            [RecipientResult::Failed {
                reason: "5.6.7 downstream lacks SMTPUTF8".into()
            }]
        );
        finished(task).await;
    }

    #[tokio::test]
    async fn refuses_a_greeting_other_than_220() {
        let (host, task) = server(vec!["S: 554 5.3.2 No service"]).await;
        let error = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect_err("refused");
        assert!(
            matches!(&error, TransportError::Refused { stage: Stage::Greeting, reply, .. }
                if reply == "554 5.3.2 No service"),
            "{error}"
        );
        finished(task).await;
    }

    #[tokio::test]
    async fn reports_a_refused_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("local address").to_string();
        drop(listener);
        let error = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect_err("nobody listens");
        assert!(matches!(error, TransportError::Connect { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("connecting to downstream host failed: 127.0.0.1:")
        );
    }

    #[tokio::test]
    async fn times_out_on_a_host_that_never_greets() {
        // The kernel completes the handshake from the backlog; nobody ever calls accept.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("local address").to_string();
        let timeouts = Timeouts {
            command: Duration::from_millis(200),
            ..TIMEOUTS
        };
        let error = Connection::open(&host, Protocol::Smtp, "mx.example.com", &timeouts)
            .await
            .expect_err("silent host");
        assert!(
            matches!(
                error,
                TransportError::Timeout {
                    stage: Stage::Greeting,
                    ..
                }
            ),
            "{error}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn a_connection_lost_mid_transaction_is_an_error_and_poisons_the_connection() {
        let (host, task) = server(with_ehlo(&[
            "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
            "C: RCPT TO:<bob@example.com>",
            "C: DATA",
            "S: 250 2.1.0 Ok",
        ]))
        .await;
        let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
            .await
            .expect("open");
        let envelope = envelope(&["bob@example.com"]);
        let error = connection
            .send(&envelope, MESSAGE)
            .await
            .expect_err("dropped");
        assert!(
            matches!(
                error,
                TransportError::Closed {
                    stage: Stage::Rcpt,
                    ..
                }
            ),
            "{error}"
        );
        assert!(!connection.is_usable());
        let again = connection
            .send(&envelope, MESSAGE)
            .await
            .expect_err("unusable");
        assert!(matches!(again, TransportError::Unusable { .. }), "{again}");
        finished(task).await;
    }

    #[test]
    fn parses_reply_lines() {
        let line = parse_reply_line(b"250-PIPELINING\r\n").expect("valid");
        assert_eq!(
            line,
            ReplyLine {
                code: 250,
                last: false,
                text: "PIPELINING".into()
            }
        );
        let line = parse_reply_line(b"250\r\n").expect("valid");
        assert_eq!(
            line,
            ReplyLine {
                code: 250,
                last: true,
                text: String::new()
            }
        );
        assert!(parse_reply_line(b"25\r\n").is_err());
        assert!(parse_reply_line(b"hello\r\n").is_err());
        assert!(parse_reply_line(b"250x\r\n").is_err());
        assert!(parse_reply_line(b"650 nope\r\n").is_err());
    }

    #[test]
    fn joins_multiline_replies_and_drops_repeated_status_codes() {
        let reply = Reply {
            code: 550,
            lines: vec!["5.1.1 first".into(), "5.1.1 second".into()],
        };
        assert_eq!(reply.text(), "550 5.1.1 first second");
        let reply = Reply {
            code: 250,
            lines: vec!["host".into(), "PIPELINING".into()],
        };
        assert_eq!(reply.text(), "250 host PIPELINING");
    }
}
