//! One SMTP session: reads commands, dispatches each to its stage, and answers.
//!
//! The session is generic over its stream, so the same code serves plain TCP, TLS after
//! STARTTLS, and in-memory transcripts in tests. Each command's stage lives in its own file:
//! `hello` (EHLO/HELO), `mail`, `rcpt`, `data`, `bdat`; the rest are one-liners here.

mod bdat;
mod data;
pub mod framing;
mod hello;
pub mod inbound;
mod judge;
mod mail;
mod rcpt;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use moat_delivery::{BodyType, Envelope, HeldVerdict, QueueId};
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Shared;
use crate::auth::SpfReport;
use crate::budget::{BudgetExhausted, Reservation};
use crate::checks::DnsblScore;
use crate::received::{TlsInfo, Trace};
use crate::reply::{Refusal, Reply};
use crate::verdict::{Action, Verdict};
use inbound::{Inbound, ReadError};

/// What the connection should do after the session returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on reading commands.
    Continue,
    /// Send what is queued and close.
    Close,
    /// Start the TLS handshake, then run the session again over TLS.
    StartTls,
}

/// The client's greeting.
#[derive(Debug, Clone)]
pub(crate) struct Helo {
    name: String,
    extended: bool,
}

/// A mail transaction between MAIL and the end of DATA or the last BDAT chunk.
#[derive(Debug)]
pub(crate) struct Transaction {
    reverse_path: String,
    smtputf8: bool,
    body: BodyType,
    recipients: Vec<String>,
    /// Header fields the checks asked for (X-Greylist), added below the Received header.
    added_headers: Vec<String>,
    /// SPF's answer for the reverse-path, from MAIL FROM, for DMARC at the end of DATA.
    spf: Option<SpfReport>,
    /// The verdict, once the message is judged; its score and checks go into the log line.
    verdict: Option<Verdict>,
    started: Instant,
    /// The message being assembled from BDAT chunks, once the first chunk has arrived.
    chunks: Option<bdat::Chunks>,
    /// The transaction's share of the gateway's content budget: the SIZE declared at MAIL,
    /// then as much as the content received. Dropped with the transaction, whatever ends it.
    reservation: Reservation,
}

/// The DNSBL verdict on the client, looked up once per session from its start.
enum DnsblState {
    /// No DNSBL check is configured.
    Off,
    /// Lookups running since the connection arrived.
    Pending(tokio::task::JoinHandle<DnsblScore>),
    /// The lists' answer.
    Done(DnsblScore),
}

/// The state of one client's session.
pub struct Session {
    shared: Arc<Shared>,
    client: SocketAddr,
    dnsbl: DnsblState,
    helo: Option<Helo>,
    tls: Option<TlsInfo>,
    errors: u32,
    transaction: Option<Transaction>,
}

impl Session {
    /// A new session for the client at `client`.
    ///
    /// The DNSBL lookups start now, so they run while the client waits for the greeting.
    pub fn new(shared: Arc<Shared>, client: SocketAddr) -> Self {
        let dnsbl = match &shared.checks.dnsbl {
            Some(check) => {
                let check = Arc::clone(check);
                DnsblState::Pending(tokio::spawn(async move { check.score(client.ip()).await }))
            }
            None => DnsblState::Off,
        };
        Session {
            shared,
            client,
            dnsbl,
            helo: None,
            tls: None,
            errors: 0,
            transaction: None,
        }
    }

    /// The DNSBL score of the client, waiting for the lookups if they are still running.
    async fn dnsbl_score(&mut self) -> Option<&DnsblScore> {
        if let DnsblState::Pending(lookups) = &mut self.dnsbl {
            let score = lookups.await.unwrap_or_else(|error| {
                tracing::error!(%error, "DNSBL lookups failed; the client gets no score");
                DnsblScore::default()
            });
            self.dnsbl = DnsblState::Done(score);
        }
        match &self.dnsbl {
            DnsblState::Done(score) => Some(score),
            _ => None,
        }
    }

    /// Records the TLS layer and forgets what the client said before it (RFC 3207 section 4.2).
    pub fn start_tls(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.helo = None;
        self.transaction = None;
    }

    /// Reads and answers commands until the session ends or asks for TLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
    ) -> Next {
        loop {
            let config = &self.shared.smtp;
            inbound.set_mid_message(
                self.transaction
                    .as_ref()
                    .is_some_and(|transaction| transaction.chunks.is_some()),
            );
            let line = inbound
                .command_line(
                    config.max_command_line,
                    config.command_timeout,
                    config.bare_newline,
                )
                .await;
            let next = match line {
                Ok(line) => self.command(&line, inbound).await,
                Err(error) => self.read_failed(error, inbound),
            };
            if next != Next::Continue {
                return next;
            }
        }
    }

    /// Answers a failed read: a refusal where the client can still hear one.
    fn read_failed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        error: ReadError,
        inbound: &mut Inbound<S>,
    ) -> Next {
        let refusal = match error {
            ReadError::LineTooLong => Refusal::CommandLineTooLong,
            ReadError::Bare(kind) => Refusal::BareNewline(kind.as_str()),
            ReadError::Timeout(_) => Refusal::CommandTimeout,
            ReadError::ShuttingDown => Refusal::ShuttingDown,
            ReadError::Closed | ReadError::Io(_) => {
                tracing::debug!(%error, "session ended by the client");
                self.abandon("client_gone");
                return Next::Close;
            }
        };
        self.refuse(inbound, refusal)
    }

    /// Parses one command line and runs its stage.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        line: &[u8],
        inbound: &mut Inbound<S>,
    ) -> Next {
        // smtp-proto reads an over-long number as a small one (it wraps), so sizes are checked
        // on the raw line first.
        if let Some(refusal) = oversized_number(line, self.shared.smtp.max_message_size) {
            return self.refuse(inbound, refusal);
        }

        // Addresses, HELO names and parameters are UTF-8 or nothing (RFC 6531 section 3.3); the
        // parser would otherwise fold invalid octets into U+FFFD and deliver to that mailbox.
        if std::str::from_utf8(line).is_err() {
            return self.refuse(inbound, Refusal::BadUtf8);
        }

        let routed = rcpt::without_source_route(line);
        let line = routed.as_deref().unwrap_or(line);

        let answer = match Request::parse(&mut line.iter()) {
            Err(_) if starts_with_command(line, b"BDAT") => Err(Refusal::BadChunkSize),
            Err(smtp_proto::Error::InvalidRecipientAddress) => Err(self.unparsed_rcpt(line)),
            Err(error) => Err(parse_refusal(error)),
            Ok(Request::Ehlo { host }) => Ok(self.hello(&host, true)),
            Ok(Request::Helo { host }) => Ok(self.hello(&host, false)),
            Ok(Request::Mail { from }) => self.mail(from).await,
            Ok(Request::Rcpt { to }) => self.rcpt(to, line).await,
            // RFC 5321 section 4.1.1: DATA, RSET and QUIT take no parameter; a client sending
            // one is confused about the protocol, and must not see its message taken.
            Ok(Request::Data) if has_parameter(line, b"DATA") => {
                Err(Refusal::Syntax("DATA".into()))
            }
            Ok(Request::Data) => return self.data(inbound).await,
            Ok(Request::Bdat {
                chunk_size,
                is_last,
            }) => {
                return self.bdat(inbound, chunk_size, is_last).await;
            }
            Ok(Request::Rset) if has_parameter(line, b"RSET") => {
                Err(Refusal::Syntax("RSET".into()))
            }
            Ok(Request::Rset) => {
                self.abandon("rset");
                Ok(Reply::new(250, "2.0.0", "Ok"))
            }
            Ok(Request::Noop { .. }) => Ok(Reply::new(250, "2.0.0", "Ok")),
            Ok(Request::Help { .. }) => Ok(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS",
            )),
            // RFC 5321 section 3.5.3: 252 when the server will not say whether a user exists.
            Ok(Request::Vrfy { .. }) => Ok(Reply::new(
                252,
                "2.5.2",
                "Cannot verify the user; send a message to try delivery",
            )),
            Ok(Request::StartTls) if line.len() != b"STARTTLS\r\n".len() => {
                Err(Refusal::StartTlsParameter)
            }
            Ok(Request::StartTls) => return self.starttls(inbound),
            Ok(Request::Quit) if has_parameter(line, b"QUIT") => {
                Err(Refusal::Syntax("QUIT".into()))
            }
            Ok(Request::Quit) => {
                self.abandon("quit");
                inbound.reply(&Reply::new(221, "2.0.0", "Bye"));
                return Next::Close;
            }
            Ok(Request::Expn { .. }) => Err(Refusal::NotImplemented("EXPN")),
            Ok(Request::Auth { .. }) => Err(Refusal::NotImplemented("AUTH")),
            Ok(Request::Etrn { .. }) => Err(Refusal::NotImplemented("ETRN")),
            Ok(Request::Atrn { .. }) => Err(Refusal::NotImplemented("ATRN")),
            Ok(Request::Burl { .. }) => Err(Refusal::NotImplemented("BURL")),
            Ok(Request::Lhlo { .. }) => Err(Refusal::UnknownCommand),
        };
        match answer {
            Ok(reply) => {
                inbound.reply(&reply);
                Next::Continue
            }
            Err(refusal) => self.refuse(inbound, refusal),
        }
    }

    /// Sends a refusal, counts it, and ends the session when it or the error count says so.
    fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
        refusal: Refusal,
    ) -> Next {
        let hostname = &self.shared.smtp.hostname;
        let reply = refusal.reply(hostname);
        tracing::debug!(refusal = refusal.name(), reply = %reply, "command refused");
        inbound.reply(&reply);
        if refusal.closes_session() {
            self.abandon(refusal.name());
            return Next::Close;
        }

        // Recipients over the limit are the client's cue to send what was accepted and the rest
        // later (RFC 5321 section 4.5.3.1.10), and a budget spent by other sessions is the
        // server's shortage: neither is a misbehaviour of this client, so neither counts.
        if !matches!(
            refusal,
            Refusal::TooManyRecipients | Refusal::InsufficientStorage
        ) {
            self.errors += 1;
        }
        if self.errors >= self.shared.smtp.max_errors {
            tracing::warn!(
                errors = self.errors,
                "session dropped after too many errors"
            );
            inbound.reply(&Refusal::TooManyErrors.reply(hostname));
            self.abandon(Refusal::TooManyErrors.name());
            return Next::Close;
        }
        Next::Continue
    }

    /// STARTTLS (RFC 3207): agree, and let the connection run the handshake.
    fn starttls<S: AsyncRead + AsyncWrite + Unpin>(&mut self, inbound: &mut Inbound<S>) -> Next {
        if self.tls.is_some() {
            return self.refuse(inbound, Refusal::AlreadyTls);
        }
        if self.shared.tls.is_none() {
            return self.refuse(inbound, Refusal::TlsUnavailable);
        }
        if inbound.has_unread_input() {
            // Commands pipelined after STARTTLS are dropped with the plain-text buffer, never
            // run as if they came over TLS (CVE-2011-0411).
            tracing::warn!("client pipelined commands after STARTTLS; they are discarded");
        }
        self.abandon("starttls");
        inbound.reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        Next::StartTls
    }

    /// Ends the open transaction, if any, with one log line saying why.
    fn abandon(&mut self, verdict: &str) {
        if let Some(transaction) = self.transaction.take() {
            self.log_transaction(&transaction, None, 0, verdict);
        }
    }

    /// The one warning line of a message refused because the content budget is spent.
    fn log_over_budget(&self, exhausted: &BudgetExhausted, stage: &'static str) {
        tracing::warn!(
            refusal = crate::reply::Refusal::InsufficientStorage.name(),
            client_ip = %self.client.ip(),
            stage,
            wanted = exhausted.wanted,
            in_use = exhausted.in_use,
            limit = exhausted.limit,
            "message refused: the budget of content in memory is spent"
        );
    }

    /// The Received header for a message of the current transaction, and below it the header
    /// fields the checks added.
    fn trace_header(&self, transaction: &Transaction, queue_id: QueueId) -> Vec<u8> {
        let helo = self.helo.as_ref();
        let mut header = Trace {
            helo: helo.map(|helo| helo.name.as_str()).unwrap_or("unknown"),
            extended: helo.is_some_and(|helo| helo.extended),
            client_ip: self.client.ip(),
            hostname: &self.shared.smtp.hostname,
            tls: self.tls.as_ref(),
            smtputf8: transaction.smtputf8,
            queue_id,
            recipients: &transaction.recipients,
            now: unix_now(),
        }
        .header();
        for field in &transaction.added_headers {
            header.push_str(field);
            header.push_str("\r\n");
        }
        header.into_bytes()
    }

    /// Judges a complete message, then spools it (or holds it in the quarantine) and answers
    /// 250 with its queue id, or refuses it as the verdict says; 451 if it cannot be kept.
    ///
    /// `header_length` is the length of the trace header at the start of `message`.
    async fn enqueue<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        inbound: &mut Inbound<S>,
        mut transaction: Transaction,
        queue_id: QueueId,
        message: Vec<u8>,
        header_length: usize,
    ) -> Next {
        let size = message.len() - header_length;
        let (verdict, message) = self.judge(&transaction, message, header_length).await;
        let action = verdict.action.clone();
        let refusal = judge::refusal(&verdict);
        transaction.verdict = Some(verdict);
        if let Some(refusal) = refusal {
            self.log_transaction(&transaction, Some(queue_id), size, refusal.name());
            return self.refuse(inbound, refusal);
        }

        let envelope = Envelope {
            reverse_path: transaction.reverse_path.clone(),
            recipients: transaction.recipients.clone(),
            smtputf8: transaction.smtputf8,
            body: transaction.body,
            client_ip: self.client.ip(),
            helo: self
                .helo
                .as_ref()
                .map(|helo| helo.name.clone())
                .unwrap_or_default(),
            received_at: unix_now(),
        };
        let kept = match (&action, &self.shared.checks.quarantine) {
            (Action::Quarantine, Some(quarantine)) => {
                let held = HeldVerdict {
                    score: transaction.verdict.as_ref().map_or(0.0, |v| v.score),
                    checks: transaction.verdict.as_ref().map_or_else(Vec::new, |v| {
                        let mut checks: Vec<String> =
                            v.reason.iter().map(ToString::to_string).collect();
                        checks.extend(
                            v.contributions
                                .iter()
                                .map(|c| format!("{}={:.1}", c.check, c.score)),
                        );
                        checks
                    }),
                    held_at: unix_now(),
                };
                let quarantine = quarantine.clone();
                tokio::task::spawn_blocking(move || {
                    quarantine.hold(queue_id, &envelope, &message, &held)
                })
                .await
                .unwrap_or_else(|join| {
                    Err(moat_delivery::SpoolError::Io {
                        action: "hold",
                        path: queue_id.to_string().into(),
                        source: std::io::Error::other(join.to_string()),
                    })
                })
            }
            _ => self.shared.queue.accept(queue_id, envelope, message).await,
        };

        match kept {
            Ok(()) => {
                let outcome = match action {
                    Action::Quarantine if self.shared.checks.quarantine.is_some() => "quarantined",
                    Action::Tag => "tagged",
                    _ => "accepted",
                };
                self.log_transaction(&transaction, Some(queue_id), size, outcome);
                let reply = Reply::new(250, "2.0.0", format!("Ok: queued as {queue_id}"));
                inbound.reply(&reply);
                Next::Continue
            }
            Err(error) => {
                tracing::error!(queue_id = %queue_id, %error, "message could not be spooled");
                self.log_transaction(&transaction, Some(queue_id), size, "queue_unavailable");
                self.refuse(inbound, Refusal::QueueUnavailable)
            }
        }
    }

    /// The one log line of a transaction.
    fn log_transaction(
        &self,
        transaction: &Transaction,
        queue_id: Option<QueueId>,
        size: usize,
        verdict: &str,
    ) {
        tracing::info!(
            queue_id = %queue_id.map(|id| id.to_string()).unwrap_or_else(|| "-".into()),
            client_ip = %self.client.ip(),
            helo = self.helo.as_ref().map(|helo| helo.name.as_str()).unwrap_or(""),
            sender = %transaction.reverse_path,
            recipients = %transaction.recipients.join(","),
            size,
            tls = self.tls.as_ref().map(|tls| tls.version.as_str()).unwrap_or("none"),
            dnsbl = match &self.dnsbl {
                DnsblState::Done(score) => score.score.to_string(),
                _ => "-".to_string(),
            },
            verdict,
            score = transaction.verdict.as_ref().map(|v| format!("{:.1}", v.score)).unwrap_or_default(),
            checks = %transaction.verdict.as_ref().map(|v| {
                v.contributions.iter().map(|c| format!("{}={:.1}", c.check, c.score)).collect::<Vec<_>>().join(",")
            }).unwrap_or_default(),
            ms = transaction.started.elapsed().as_millis() as u64,
            "smtp transaction"
        );
    }
}

/// Whether `line` starts with the command `name`, in any case.
fn starts_with_command(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()].is_ascii_whitespace()
}

/// Whether a command line that should be the bare verb `name` carries anything after it.
/// Trailing spaces are tolerated, as Postfix does.
fn has_parameter(line: &[u8], name: &[u8]) -> bool {
    line.get(name.len()..)
        .unwrap_or_default()
        .iter()
        .any(|&octet| !matches!(octet, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Finds a size the parser would misread: a BDAT chunk size or a MAIL `SIZE=` value with more
/// digits than a 64-bit number holds.
fn oversized_number(line: &[u8], max_message_size: usize) -> Option<Refusal> {
    const MAX_DIGITS: usize = 19;
    let digits_after = |start: usize| {
        line[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };

    if starts_with_command(line, b"BDAT") {
        let start = 5 + line[5..].iter().take_while(|b| **b == b' ').count();
        return (digits_after(start) > MAX_DIGITS).then_some(Refusal::BadChunkSize);
    }
    if starts_with_command(line, b"MAIL") {
        // Parameters follow the reverse-path, so an address cannot look like one.
        let parameters = line
            .iter()
            .rposition(|&b| b == b'>')
            .map_or(0, |end| end + 1);
        let upper = line[parameters..].to_ascii_uppercase();
        let start = parameters + upper.windows(5).position(|window| window == b"SIZE=")? + 5;
        return (digits_after(start) > MAX_DIGITS)
            .then_some(Refusal::DeclaredSizeTooBig(max_message_size));
    }
    None
}

/// Maps a parser error to its refusal.
fn parse_refusal(error: smtp_proto::Error) -> Refusal {
    match error {
        smtp_proto::Error::UnknownCommand => Refusal::UnknownCommand,
        smtp_proto::Error::InvalidSenderAddress => Refusal::BadReversePath,
        smtp_proto::Error::InvalidRecipientAddress => Refusal::BadForwardPath,
        smtp_proto::Error::SyntaxError { syntax } => Refusal::Syntax(syntax.to_string()),
        smtp_proto::Error::InvalidParameter { param } => {
            Refusal::Syntax(format!("invalid value for the {param} parameter"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => Refusal::UnsupportedParameter(param),
        smtp_proto::Error::NeedsMoreData { .. }
        | smtp_proto::Error::ResponseTooLong
        | smtp_proto::Error::InvalidResponse { .. } => Refusal::UnknownCommand,
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod transcript_tests;
