//! The SMTP server's settings, already validated: limits, timeouts and the newline policy.

use std::time::Duration;

use crate::session::framing::BareNewline;

/// Default largest message: 25 MiB, what the large mailbox providers accept, so mail they
/// would take is not refused here.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1024 * 1024;

/// Default budget of message content held in memory by all sessions receiving it: 1 GiB.
///
/// Forty messages at the 25 MiB size limit at once, or about ten thousand of the typical
/// 100 KiB, which is more than the default 1,000 sessions can send together; and it fits, with
/// the rest of the process, a 2 GiB machine, the smallest a gateway of that load runs on. The
/// worst case it replaces, every default session at the default size limit, is 25 GiB.
pub const DEFAULT_MAX_CONTENT_IN_MEMORY: usize = 1024 * 1024 * 1024;

/// Default recipients per message: RFC 5321 section 4.5.3.1.8 says a server must accept at
/// least 100.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;

/// Default errors per session before it is dropped, as Postfix's smtpd_hard_error_limit.
pub const DEFAULT_MAX_ERRORS: u32 = 20;

/// Default concurrent sessions in all; each holds at most one message in memory.
pub const DEFAULT_MAX_SESSIONS: usize = 1_000;

/// Default concurrent sessions from one client IP, as Postfix's
/// smtpd_client_connection_count_limit.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 50;

/// Default longest command line including CRLF. RFC 5321 section 4.5.3.1.4 sets 512 octets
/// but lets extensions raise it; SMTPUTF8 addresses and ESMTP parameters do, so Moat takes
/// Postfix's line_length_limit.
pub const DEFAULT_MAX_COMMAND_LINE: usize = 2_048;

/// Default longest content line including CRLF; 0 means no limit. RFC 5321 section
/// 4.5.3.1.6 sets 1000, but real mail breaks it often (the SpamAssassin corpus has lines of
/// several thousand octets) and Postfix accepts them, so Moat does too unless told otherwise.
pub const DEFAULT_MAX_TEXT_LINE: usize = 0;

/// Default wait for the next command: RFC 5321 section 4.5.3.2.7 asks for at least 5 minutes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Default wait for more content during DATA or BDAT: RFC 5321 section 4.5.3.2.6 (the client's
/// data block timeout, 3 minutes).
pub const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(3 * 60);

/// Default silence asked of a new client before the greeting. Spambots that talk first give
/// themselves away; one second catches most without delaying real senders much, and a client
/// that passed is then greeted at once (as postscreen's greet test, with a shorter wait).
pub const DEFAULT_PREGREET_WAIT: Duration = Duration::from_secs(1);

/// Default time a client that passed the pre-greet test is greeted without waiting, as
/// postscreen_greet_ttl.
pub const DEFAULT_PREGREET_PASS_TTL: Duration = Duration::from_secs(24 * 3600);

/// Settings of the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The name given in the greeting, EHLO reply and Received header.
    pub hostname: String,
    /// Largest message in octets, advertised with SIZE.
    pub max_message_size: usize,
    /// Octets of message content all sessions may hold in memory while receiving it; a message
    /// that would go over gets 452 4.3.1. At least `max_message_size`, so that any message
    /// within the size limit fits when it is alone.
    pub max_content_in_memory: usize,
    /// Recipients accepted per message.
    pub max_recipients: usize,
    /// Error replies a session may cause before it is dropped.
    pub max_errors: u32,
    /// Concurrent sessions in all.
    pub max_sessions: usize,
    /// Concurrent sessions from one client IP.
    pub max_sessions_per_ip: usize,
    /// Longest command line including CRLF.
    pub max_command_line: usize,
    /// Longest content line including CRLF; 0 for no limit.
    pub max_text_line: usize,
    /// Wait for the next command.
    pub command_timeout: Duration,
    /// Wait for more content.
    pub data_timeout: Duration,
    /// Silence asked of a new client before the greeting; zero turns the test off.
    pub pregreet_wait: Duration,
    /// How long a client that passed the pre-greet test is greeted at once.
    pub pregreet_pass_ttl: Duration,
    /// What a bare LF or CR gets.
    pub bare_newline: BareNewline,
}

impl SmtpConfig {
    /// The defaults, with the given host name.
    pub fn with_hostname(hostname: impl Into<String>) -> Self {
        SmtpConfig {
            hostname: hostname.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_content_in_memory: DEFAULT_MAX_CONTENT_IN_MEMORY,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            max_errors: DEFAULT_MAX_ERRORS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_ip: DEFAULT_MAX_SESSIONS_PER_IP,
            max_command_line: DEFAULT_MAX_COMMAND_LINE,
            max_text_line: DEFAULT_MAX_TEXT_LINE,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            data_timeout: DEFAULT_DATA_TIMEOUT,
            pregreet_wait: DEFAULT_PREGREET_WAIT,
            pregreet_pass_ttl: DEFAULT_PREGREET_PASS_TTL,
            bare_newline: BareNewline::Reject,
        }
    }
}
