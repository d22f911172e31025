//! The reply codec: reply lines (RFC 5321 section 4.2), whole replies, enhanced status codes
//! (RFC 3463) and the service extensions an EHLO or LHLO reply advertises.
//!
//! Nothing here touches the socket; the connection reads the lines and hands them in.

use crate::transport::RecipientResult;

/// One reply: its code and the text of each line, without the code and separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) lines: Vec<String>,
}

impl Reply {
    /// The first digit: 2 completion, 3 intermediate, 4 transient, 5 permanent.
    pub(super) fn class(&self) -> u16 {
        self.code / 100
    }

    /// The whole reply on one line, e.g. "250 2.1.5 Ok".
    ///
    /// Continuation lines are joined with a space; an enhanced status code repeated at the start
    /// of each line (RFC 2034 section 4) is kept only once.
    pub(super) fn text(&self) -> String {
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
    pub(super) fn outcome(&self) -> Option<RecipientResult> {
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
pub(super) struct ReplyLine {
    pub(super) code: u16,
    pub(super) last: bool,
    pub(super) text: String,
}

/// Parses one reply line, CRLF (or a bare LF, which some servers send) included.
pub(super) fn parse_reply_line(line: &[u8]) -> Result<ReplyLine, String> {
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
pub(super) struct Extensions {
    pub(super) pipelining: bool,
    pub(super) size: bool,
    pub(super) eight_bit_mime: bool,
    pub(super) smtputf8: bool,
}

impl Extensions {
    /// Reads the keywords from the lines after the first of an EHLO or LHLO reply.
    pub(super) fn from_hello(reply: &Reply) -> Extensions {
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

#[cfg(test)]
mod tests {
    use super::*;

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
