//! Every reply the SMTP server gives, decided in one table.
//!
//! A refusal has one entry here with its reply code (RFC 5321 section 4.2), enhanced status code
//! (RFC 3463) and text. Logs and tests name refusals by the variant's [`Refusal::name`], so the
//! wire, the log line and the test assertion always agree.

use std::fmt;

/// One SMTP reply: a code, an enhanced status code (omitted before the greeting's EHLO) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, for example `2.1.0`.
    pub status: &'static str,
    /// Human-readable text; may hold several lines separated by `\n`.
    pub text: String,
}

impl Reply {
    /// A reply with the given code, enhanced status and text.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// Whether the reply is a temporary or permanent failure (4xx or 5xx).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The reply as it goes on the wire, multi-line where the text has several lines.
    ///
    /// The enhanced status code is repeated on every line, as RFC 2034 section 4 requires.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.text.len() + 16);
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let separator = if lines.peek().is_some() { '-' } else { ' ' };
            let line = if self.status.is_empty() {
                format!("{}{}{}\r\n", self.code, separator, line)
            } else {
                format!("{}{}{} {}\r\n", self.code, separator, self.status, line)
            };
            wire.extend_from_slice(line.as_bytes());
        }
        wire
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.code,
            self.status,
            self.text.replace('\n', " ")
        )
    }
}

/// Why the server refused a command, a message or the whole session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The client sent bytes before the greeting (a pre-greet spambot).
    PregreetTalker,
    /// All sessions are busy.
    TooManySessions,
    /// The client's IP address holds too many sessions.
    TooManySessionsFromClient,
    /// The client caused too many errors in one session.
    TooManyErrors,
    /// No command arrived within the command timeout.
    CommandTimeout,
    /// No message data arrived within the data timeout.
    DataTimeout,
    /// A command line longer than the limit.
    CommandLineTooLong,
    /// A bare LF or bare CR in a command or in content, under the `reject` policy.
    BareNewline(&'static str),
    /// A command the server does not know.
    UnknownCommand,
    /// A command line that is not valid UTF-8 (RFC 6531 section 3.3 allows UTF-8 only).
    BadUtf8,
    /// A command the server knows but does not offer (AUTH, ETRN, EXPN, ...).
    NotImplemented(&'static str),
    /// A command out of order, such as RCPT before MAIL.
    BadSequence(&'static str),
    /// A command with bad syntax; the text gives the expected form.
    Syntax(String),
    /// A MAIL or RCPT parameter the server does not support.
    UnsupportedParameter(String),
    /// HELO or EHLO without a name.
    MissingHeloName,
    /// The reverse-path is not a valid address.
    BadReversePath,
    /// The forward-path is not a valid address.
    BadForwardPath,
    /// The client declared SMTPUTF8 content or addresses without the parameter.
    Utf8WithoutSmtputf8,
    /// MAIL FROM declared a SIZE above the limit.
    DeclaredSizeTooBig(usize),
    /// The message grew above the size limit during DATA or BDAT.
    MessageTooBig(usize),
    /// A content line longer than the limit.
    ContentLineTooLong(usize),
    /// The recipient's domain is not an accepted domain: no relaying.
    RelayDenied(String),
    /// The recipient's local part tries to route elsewhere (%, !, @ in quotes).
    RoutedLocalPart(String),
    /// The recipient is not in the domain's recipient list.
    UnknownUser(String),
    /// More recipients than the per-message limit.
    TooManyRecipients,
    /// DATA or BDAT without any accepted recipient.
    NoValidRecipients,
    /// STARTTLS on a session that already uses TLS.
    AlreadyTls,
    /// STARTTLS is not offered (no certificate could be loaded).
    TlsUnavailable,
    /// A BDAT command whose chunk size cannot be read: the chunk's end is unknown, so the
    /// session cannot go on safely.
    BadChunkSize,
    /// STARTTLS with a parameter (RFC 3207 section 4).
    StartTlsParameter,
    /// The client is listed on DNSBLs whose weights reach the threshold.
    DnsblListed {
        /// The client's address.
        client: std::net::IpAddr,
        /// The zones that list it.
        zones: String,
    },
    /// The greylist defers this recipient, or cannot decide and is set to fail temporarily;
    /// its reply (450 or 451 4.7.1, with when to retry) comes from the greylist's own table.
    Greylisted(moat_greylist::SmtpReply),
    /// The verdict's score reached the reject threshold.
    SpamRejected(String),
    /// An anti-virus layer found a virus.
    VirusFound(String),
    /// The author domain's DMARC policy is reject and the message failed it.
    DmarcRejected(String),
    /// A content check that must run could not (clamd down); the client should retry.
    ScanUnavailable(String),
    /// The spool could not store the message; the client should retry.
    QueueUnavailable,
    /// The gateway-wide budget of content held in memory is spent by the messages being
    /// received; the client should retry when they have been spooled.
    InsufficientStorage,
    /// The server is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// The outcome name used in logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::PregreetTalker => "pregreet",
            Refusal::TooManySessions => "too_many_sessions",
            Refusal::TooManySessionsFromClient => "too_many_sessions_from_client",
            Refusal::TooManyErrors => "too_many_errors",
            Refusal::CommandTimeout => "command_timeout",
            Refusal::DataTimeout => "data_timeout",
            Refusal::CommandLineTooLong => "command_line_too_long",
            Refusal::BareNewline(_) => "bare_newline",
            Refusal::UnknownCommand => "unknown_command",
            Refusal::BadUtf8 => "bad_utf8",
            Refusal::NotImplemented(_) => "not_implemented",
            Refusal::BadSequence(_) => "bad_sequence",
            Refusal::Syntax(_) => "syntax",
            Refusal::UnsupportedParameter(_) => "unsupported_parameter",
            Refusal::MissingHeloName => "missing_helo_name",
            Refusal::BadReversePath => "bad_reverse_path",
            Refusal::BadForwardPath => "bad_forward_path",
            Refusal::Utf8WithoutSmtputf8 => "utf8_without_smtputf8",
            Refusal::DeclaredSizeTooBig(_) => "declared_size_too_big",
            Refusal::MessageTooBig(_) => "message_too_big",
            Refusal::ContentLineTooLong(_) => "content_line_too_long",
            Refusal::RelayDenied(_) => "relay_denied",
            Refusal::RoutedLocalPart(_) => "routed_local_part",
            Refusal::UnknownUser(_) => "unknown_user",
            Refusal::TooManyRecipients => "too_many_recipients",
            Refusal::NoValidRecipients => "no_valid_recipients",
            Refusal::AlreadyTls => "already_tls",
            Refusal::TlsUnavailable => "tls_unavailable",
            Refusal::BadChunkSize => "bad_chunk_size",
            Refusal::StartTlsParameter => "starttls_parameter",
            Refusal::DnsblListed { .. } => "dnsbl_listed",
            Refusal::Greylisted(reply) if reply.code == 450 => "greylisted",
            Refusal::Greylisted(_) => "greylist_unavailable",
            Refusal::SpamRejected(_) => "spam_rejected",
            Refusal::VirusFound(_) => "virus_found",
            Refusal::DmarcRejected(_) => "dmarc_rejected",
            Refusal::ScanUnavailable(_) => "scan_unavailable",
            Refusal::QueueUnavailable => "queue_unavailable",
            Refusal::InsufficientStorage => "insufficient_storage",
            Refusal::ShuttingDown => "shutting_down",
        }
    }

    /// The reply for this refusal; `host` is the server's own name for 421 replies.
    pub fn reply(&self, host: &str) -> Reply {
        match self {
            Refusal::PregreetTalker => Reply::new(
                554,
                "5.5.1",
                format!("{host} Error: talked before the greeting"),
            ),
            Refusal::TooManySessions => Reply::new(
                421,
                "4.3.2",
                format!("{host} Too many sessions, try again later"),
            ),
            Refusal::TooManySessionsFromClient => Reply::new(
                421,
                "4.7.0",
                format!("{host} Too many sessions from your address, try again later"),
            ),
            Refusal::TooManyErrors => {
                Reply::new(421, "4.7.0", format!("{host} Error: too many errors"))
            }
            Refusal::CommandTimeout | Refusal::DataTimeout => {
                Reply::new(421, "4.4.2", format!("{host} Error: timeout exceeded"))
            }
            Refusal::CommandLineTooLong => Reply::new(500, "5.5.2", "Error: line too long"),
            Refusal::BareNewline(which) => {
                Reply::new(521, "5.5.2", format!("{host} Error: bare {which} received"))
            }
            Refusal::UnknownCommand => Reply::new(500, "5.5.2", "Error: command not recognized"),
            Refusal::BadUtf8 => Reply::new(500, "5.5.2", "Error: bad UTF-8 syntax"),
            Refusal::NotImplemented(command) => {
                Reply::new(502, "5.5.1", format!("Error: {command} not implemented"))
            }
            Refusal::BadSequence(why) => Reply::new(503, "5.5.1", format!("Error: {why}")),
            Refusal::Syntax(form) => Reply::new(501, "5.5.4", format!("Syntax: {form}")),
            Refusal::UnsupportedParameter(param) => {
                Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
            }
            Refusal::MissingHeloName => Reply::new(501, "5.5.4", "Syntax: EHLO hostname"),
            Refusal::BadReversePath => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            Refusal::BadForwardPath => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            Refusal::Utf8WithoutSmtputf8 => Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter (RFC 6531)",
            ),
            Refusal::DeclaredSizeTooBig(limit) => Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds fixed limit of {limit} octets"),
            ),
            Refusal::MessageTooBig(limit) => Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds fixed limit of {limit} octets"),
            ),
            Refusal::ContentLineTooLong(limit) => Reply::new(
                554,
                "5.6.0",
                format!("Message has a line longer than {limit} octets"),
            ),
            Refusal::RelayDenied(address) => {
                Reply::new(554, "5.7.1", format!("<{address}>: Relay access denied"))
            }
            Refusal::RoutedLocalPart(address) => Reply::new(
                554,
                "5.7.1",
                format!("<{address}>: Relay access denied (routing in the local part)"),
            ),
            Refusal::UnknownUser(address) => Reply::new(
                550,
                "5.1.1",
                format!("<{address}>: Recipient address rejected: User unknown"),
            ),
            Refusal::TooManyRecipients => Reply::new(452, "4.5.3", "Error: too many recipients"),
            Refusal::NoValidRecipients => Reply::new(554, "5.5.1", "Error: no valid recipients"),
            Refusal::AlreadyTls => Reply::new(503, "5.5.1", "Error: TLS already active"),
            Refusal::TlsUnavailable => {
                Reply::new(454, "4.7.0", "TLS not available due to local problem")
            }
            Refusal::BadChunkSize => Reply::new(
                501,
                "5.5.4",
                format!("{host} Syntax: BDAT chunk-size [LAST]; closing, the chunk end is unknown"),
            ),
            Refusal::StartTlsParameter => {
                Reply::new(501, "5.5.4", "Syntax: STARTTLS (no parameters allowed)")
            }
            Refusal::DnsblListed { client, zones } => Reply::new(
                554,
                "5.7.1",
                format!("Service unavailable; client [{client}] blocked using {zones}"),
            ),
            Refusal::Greylisted(reply) => Reply::new(reply.code, reply.status, reply.text.clone()),
            Refusal::SpamRejected(score) => Reply::new(
                554,
                "5.7.1",
                format!("Message rejected as spam (score {score})"),
            ),
            Refusal::VirusFound(name) => Reply::new(
                554,
                "5.7.1",
                format!("Message rejected: virus found ({name})"),
            ),
            Refusal::DmarcRejected(domain) => Reply::new(
                550,
                "5.7.1",
                format!("Message rejected by the DMARC policy of {domain}"),
            ),
            Refusal::ScanUnavailable(check) => Reply::new(
                451,
                "4.7.0",
                format!("Temporary failure: {check} unavailable, try again later"),
            ),
            Refusal::QueueUnavailable => Reply::new(
                451,
                "4.3.0",
                "Error: queue file write error, try again later",
            ),
            // RFC 1870 section 6 and RFC 3463's 4.3.1 (mail system full): what Postfix answers
            // when its queue file system is short, and what senders already retry on.
            Refusal::InsufficientStorage => {
                Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
            }
            Refusal::ShuttingDown => {
                Reply::new(421, "4.3.2", format!("{host} Service shutting down"))
            }
        }
    }

    /// Whether the server closes the connection after this refusal's reply.
    pub fn closes_session(&self) -> bool {
        matches!(
            self,
            Refusal::PregreetTalker
                | Refusal::TooManySessions
                | Refusal::TooManySessionsFromClient
                | Refusal::TooManyErrors
                | Refusal::CommandTimeout
                | Refusal::DataTimeout
                | Refusal::BareNewline(_)
                | Refusal::BadChunkSize
                | Refusal::ShuttingDown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_reply_repeats_the_enhanced_code() {
        let reply = Reply::new(250, "2.0.0", "first\nsecond");
        assert_eq!(reply.to_wire(), b"250-2.0.0 first\r\n250 2.0.0 second\r\n");
    }

    #[test]
    fn relay_denial_keeps_the_session_open() {
        assert!(!Refusal::RelayDenied("a@b.example".into()).closes_session());
        assert!(Refusal::TooManyErrors.closes_session());
        assert!(Refusal::PregreetTalker.closes_session());
    }
}
