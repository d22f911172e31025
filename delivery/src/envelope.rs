//! The envelope of a spooled message: reverse-path, forward-paths and what the session learnt.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The SMTP envelope of one message as the gateway accepted it (RFC 5321 section 2.3.1).
///
/// It is stored beside the content in the queue, so every field must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The reverse-path from MAIL FROM, without angle brackets; empty for the null sender `<>`.
    pub reverse_path: String,
    /// The forward-paths from RCPT TO that were accepted, in the order they were given.
    pub recipients: Vec<String>,
    /// Whether the client asked for SMTPUTF8 (RFC 6531), so the relay must ask for it too.
    pub smtputf8: bool,
    /// The body type the client declared with BODY= (RFC 6152, RFC 3030).
    pub body: BodyType,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The name the client gave in HELO or EHLO.
    pub helo: String,
    /// When the message was accepted, in seconds since the Unix epoch.
    pub received_at: u64,
}

/// The body type of a message, as declared by the BODY parameter of MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BodyType {
    /// No BODY parameter or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME (RFC 6152).
    EightBitMime,
    /// BODY=BINARYMIME (RFC 3030); only possible with BDAT.
    BinaryMime,
}

impl Envelope {
    /// Whether the reverse-path is the null sender, to which no bounce may ever be sent.
    pub fn has_null_sender(&self) -> bool {
        self.reverse_path.is_empty()
    }
}
