//! The Postfix policy delegation protocol's wire format, without I/O: `name=value` lines, a
//! blank line ending each request, and `action=...` replies (Postfix's SMTPD_POLICY_README).

use std::net::IpAddr;

use crate::triplet::TripletRequest;

/// The longest attribute line accepted, in bytes with its newline. Postfix's longest attributes
/// (certificate subjects, SASL names) stay far below this.
pub const MAX_LINE: usize = 16 * 1024;

/// The most attributes in one request; Postfix 3.x sends about 30.
pub const MAX_ATTRIBUTES: usize = 256;

/// Why a request is malformed. The service closes the connection without a reply: Postfix
/// then logs the failure and applies its `default_action`, rather than act on a guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line was longer than [`MAX_LINE`].
    #[error("policy request: line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A line was not `name=value`.
    #[error("policy request: not a name=value line: {0:?}")]
    NotAnAttribute(String),
    /// A line was not UTF-8.
    #[error("policy request: line is not UTF-8")]
    NotUtf8,
    /// More than [`MAX_ATTRIBUTES`] lines.
    #[error("policy request: more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// `request=` is missing or not `smtpd_access_policy`.
    #[error("policy request: request={0:?}, expected smtpd_access_policy")]
    WrongRequest(String),
    /// A required attribute is missing or invalid.
    #[error("policy request: attribute {name} is missing or invalid: {value:?}")]
    BadAttribute {
        /// The attribute's name.
        name: &'static str,
        /// Its value, empty when missing.
        value: String,
    },
}

/// One request's attributes in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRequest {
    attributes: Vec<(String, String)>,
}

/// What a line adds to a request being read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// An attribute was added.
    Attribute,
    /// The blank line: the request is complete.
    End,
}

impl PolicyRequest {
    /// Adds one line, given with or without its `\n` or `\r\n`.
    ///
    /// # Errors
    /// [`ProtocolError`] when the line is not an attribute or the request grows too large.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Line, ProtocolError> {
        if line.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(Line::End);
        }
        let line = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
        let Some((name, value)) = line.split_once('=') else {
            return Err(ProtocolError::NotAnAttribute(
                line.chars().take(80).collect(),
            ));
        };
        if name.is_empty() {
            return Err(ProtocolError::NotAnAttribute(
                line.chars().take(80).collect(),
            ));
        }
        if self.attributes.len() >= MAX_ATTRIBUTES {
            return Err(ProtocolError::TooManyAttributes);
        }
        self.attributes.push((name.to_owned(), value.to_owned()));
        Ok(Line::Attribute)
    }

    /// Whether no line was added yet.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// The value of an attribute; the last one wins when repeated.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The triplet request this asks about, or `Ok(None)` when it is not a recipient check
    /// (greylisting applies only at RCPT; other stages get `DUNNO`).
    ///
    /// # Errors
    /// [`ProtocolError`] when `request`, `client_address` or `recipient` is missing or invalid.
    pub fn triplet_request(&self) -> Result<Option<TripletRequest>, ProtocolError> {
        let request = self.attribute("request").unwrap_or("");
        if request != "smtpd_access_policy" {
            return Err(ProtocolError::WrongRequest(request.to_owned()));
        }
        let state = self.attribute("protocol_state").unwrap_or("RCPT");
        if !state.eq_ignore_ascii_case("RCPT") {
            return Ok(None);
        }

        let address = self.attribute("client_address").unwrap_or("");
        let client_ip: IpAddr = address.parse().map_err(|_| ProtocolError::BadAttribute {
            name: "client_address",
            value: address.to_owned(),
        })?;
        let recipient = self.attribute("recipient").unwrap_or("");
        if recipient.is_empty() {
            return Err(ProtocolError::BadAttribute {
                name: "recipient",
                value: String::new(),
            });
        }
        let sender = self.attribute("sender").unwrap_or("");

        // Postfix's client_name is the forward-confirmed name, or "unknown".
        let client_name = self
            .attribute("client_name")
            .filter(|name| !name.is_empty() && *name != "unknown")
            .map(str::to_owned);
        let mut triplet = TripletRequest::new(client_ip, sender, recipient);
        triplet.client_name = client_name;
        Ok(Some(triplet))
    }
}

/// A reply as it goes on the wire: `action=...` and the blank line that ends it.
pub fn reply(action: &str) -> String {
    // A newline inside the action would end the reply early and desynchronise Postfix.
    let action = action.replace(['\r', '\n'], " ");
    format!("action={action}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[&str]) -> Result<PolicyRequest, ProtocolError> {
        let mut request = PolicyRequest::default();
        for line in lines {
            request.push_line(line.as_bytes())?;
        }
        Ok(request)
    }

    const POSTFIX: &[&str] = &[
        "request=smtpd_access_policy\n",
        "protocol_state=RCPT\n",
        "protocol_name=ESMTP\n",
        "client_address=192.0.2.10\n",
        "client_name=mx1.sender.example\n",
        "reverse_client_name=mx1.sender.example\n",
        "helo_name=mx1.sender.example\n",
        "sender=alice@sender.example\n",
        "recipient=bob@rcpt.example\n",
        "instance=123.456.7\n",
    ];

    #[test]
    fn reads_a_request_as_postfix_sends_it() {
        let request = request(POSTFIX).expect("valid");
        let triplet = request.triplet_request().expect("valid").expect("RCPT");
        assert_eq!(triplet.client_ip.to_string(), "192.0.2.10");
        assert_eq!(triplet.client_name.as_deref(), Some("mx1.sender.example"));
        assert_eq!(triplet.reverse_path, "alice@sender.example");
        assert_eq!(triplet.recipient, "bob@rcpt.example");
    }

    #[test]
    fn crlf_lines_read_like_lf_lines() {
        let mut request = PolicyRequest::default();
        assert_eq!(
            request.push_line(b"request=smtpd_access_policy\r\n"),
            Ok(Line::Attribute)
        );
        assert_eq!(request.attribute("request"), Some("smtpd_access_policy"));
        assert_eq!(request.push_line(b"\r\n"), Ok(Line::End));
    }

    #[test]
    fn values_may_hold_equals_signs_and_be_empty() {
        let request = request(&["sender=\n", "ccert_subject=CN=a=b\n"]).expect("valid");
        assert_eq!(request.attribute("sender"), Some(""));
        assert_eq!(request.attribute("ccert_subject"), Some("CN=a=b"));
    }

    #[test]
    fn unknown_client_name_is_no_name() {
        let mut lines = POSTFIX.to_vec();
        lines[4] = "client_name=unknown\n";
        let triplet = request(&lines)
            .expect("valid")
            .triplet_request()
            .expect("valid");
        assert_eq!(triplet.expect("RCPT").client_name, None);
    }

    #[test]
    fn other_protocol_states_are_not_greylisted() {
        let mut lines = POSTFIX.to_vec();
        lines[1] = "protocol_state=DATA\n";
        let request = request(&lines).expect("valid");
        assert_eq!(request.triplet_request(), Ok(None));
    }

    #[test]
    fn refuses_lines_without_equals_and_overlong_lines() {
        assert!(matches!(
            request(&["garbage\n"]),
            Err(ProtocolError::NotAnAttribute(_))
        ));
        assert!(matches!(
            request(&["=value\n"]),
            Err(ProtocolError::NotAnAttribute(_))
        ));
        let long = format!("sender={}\n", "a".repeat(MAX_LINE));
        assert_eq!(request(&[&long]), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn refuses_too_many_attributes() {
        let line = "x=y\n";
        let lines = vec![line; MAX_ATTRIBUTES + 1];
        assert_eq!(request(&lines), Err(ProtocolError::TooManyAttributes));
    }

    #[test]
    fn refuses_other_requests_and_missing_attributes() {
        let wrong = request(&["request=junk\n"]).expect("lines ok");
        assert!(matches!(
            wrong.triplet_request(),
            Err(ProtocolError::WrongRequest(_))
        ));
        let mut lines = POSTFIX.to_vec();
        lines[3] = "client_address=not-an-ip\n";
        let bad_ip = request(&lines).expect("lines ok");
        assert!(matches!(
            bad_ip.triplet_request(),
            Err(ProtocolError::BadAttribute { .. })
        ));
        lines[3] = "client_address=192.0.2.1\n";
        lines[8] = "recipient=\n";
        let no_rcpt = request(&lines).expect("lines ok");
        assert!(matches!(
            no_rcpt.triplet_request(),
            Err(ProtocolError::BadAttribute { .. })
        ));
    }

    #[test]
    fn reply_ends_with_a_blank_line_and_cannot_be_split() {
        assert_eq!(reply("DUNNO"), "action=DUNNO\n\n");
        assert_eq!(reply("PREPEND X: a\nb"), "action=PREPEND X: a b\n\n");
    }
}
