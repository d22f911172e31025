//! SMTP framing without I/O: where a command line ends and where DATA content ends.
//!
//! Only CRLF.CRLF ends DATA (RFC 5321 section 4.1.1.4). A bare LF or a bare CR never ends a
//! line or the message: under [`BareNewline::Reject`] it is a violation that ends the session,
//! and under [`BareNewline::Normalize`] it becomes CRLF in the content, as Postfix 3.9 does with
//! `smtpd_forbid_bare_newline = normalize`. Either way the content handed on has CRLF line
//! endings only, so no downstream server can be made to see a second message inside this one
//! (the SMTP smuggling attacks of CVE-2023-51764 and its relatives).

/// What a bare LF or bare CR gets, in commands and in message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Refuse with 521 5.5.2 and close the session: the safe default.
    #[default]
    Reject,
    /// Take it as CRLF, but still require CRLF.CRLF to end DATA.
    Normalize,
}

/// Which kind of bare line ending was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareKind {
    /// A LF without a CR before it.
    Lf,
    /// A CR without a LF after it.
    Cr,
}

impl BareKind {
    /// The name used in the reply text, as Postfix words it.
    pub fn as_str(self) -> &'static str {
        match self {
            BareKind::Lf => "<LF>",
            BareKind::Cr => "<CR>",
        }
    }
}

/// Where the DATA scanner stands between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// At the start of a line; `after_crlf` says whether a true CRLF ended the previous line.
    LineStart { after_crlf: bool },
    /// After a dot at the start of a line.
    Dot { after_crlf: bool },
    /// After CR following a lone dot: a LF now ends the message if the line before ended in CRLF.
    DotCr { after_crlf: bool },
    /// Inside a line.
    Middle,
    /// After a CR inside a line.
    Cr,
}

/// The result of feeding bytes to a [`DataFramer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input used; the rest belongs to the next command (pipelining).
    pub consumed: usize,
    /// Whether CRLF.CRLF was seen.
    pub finished: bool,
}

/// Scans DATA content: removes dot-stuffing, finds the end, checks line endings and limits.
#[derive(Debug)]
pub struct DataFramer {
    policy: BareNewline,
    max_size: usize,
    max_line: usize,
    position: Position,
    size: usize,
    line_length: usize,
    /// The first violation seen; content after it is scanned for the end but not kept.
    violation: Option<DataViolation>,
}

/// Why DATA content cannot be accepted, found while scanning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataViolation {
    /// A bare LF or CR under the reject policy: the session ends at once.
    Bare(BareKind),
    /// More content than the size limit.
    TooBig,
    /// A line longer than the limit.
    LineTooLong,
}

impl DataFramer {
    /// A scanner for one DATA transaction.
    ///
    /// `max_line` counts octets including the CRLF, as RFC 5321 section 4.5.3.1.6 does; 0 means
    /// no limit.
    pub fn new(policy: BareNewline, max_size: usize, max_line: usize) -> Self {
        DataFramer {
            policy,
            max_size,
            max_line,
            position: Position::LineStart { after_crlf: true },
            size: 0,
            line_length: 0,
            violation: None,
        }
    }

    /// The first violation seen so far, if any.
    pub fn violation(&self) -> Option<DataViolation> {
        self.violation
    }

    /// Content octets seen so far, after dot-unstuffing, including any not kept.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Scans `input`, appending the unstuffed content to `content`, and stops at the end mark.
    ///
    /// A bare newline under the reject policy stops the scan at once: the caller must reply and
    /// close, since the client's idea of where the message ends cannot be trusted.
    pub fn feed(&mut self, input: &[u8], content: &mut Vec<u8>) -> Fed {
        let mut index = 0;
        while index < input.len() {
            // Fast path: copy a run of ordinary bytes inside a line in one go.
            if self.position == Position::Middle {
                let run = input[index..]
                    .iter()
                    .position(|&byte| byte == b'\r' || byte == b'\n')
                    .unwrap_or(input.len() - index);
                self.keep(&input[index..index + run], content);
                index += run;
                if index == input.len() {
                    break;
                }
            }

            let byte = input[index];
            index += 1;
            if self.step(byte, content) {
                return Fed {
                    consumed: index,
                    finished: true,
                };
            }
            if matches!(self.violation, Some(DataViolation::Bare(_))) {
                return Fed {
                    consumed: index,
                    finished: false,
                };
            }
        }
        Fed {
            consumed: index,
            finished: false,
        }
    }

    /// Moves the scanner over one byte; returns true at the end of the message.
    fn step(&mut self, byte: u8, content: &mut Vec<u8>) -> bool {
        match (self.position, byte) {
            (Position::LineStart { after_crlf }, b'.') => {
                self.position = Position::Dot { after_crlf };
            }
            (Position::LineStart { .. } | Position::Middle, b'\r') => self.position = Position::Cr,
            (Position::LineStart { .. } | Position::Middle, b'\n') => {
                self.bare(BareKind::Lf, content)
            }
            (Position::LineStart { .. } | Position::Middle, _) => {
                self.keep(&[byte], content);
                self.position = Position::Middle;
            }

            (Position::Dot { after_crlf }, b'\r') => self.position = Position::DotCr { after_crlf },
            (Position::Dot { .. }, b'\n') => {
                // A lone dot ended by a bare LF is content, never the end (smuggling).
                self.keep(b".", content);
                self.bare(BareKind::Lf, content);
            }
            (Position::Dot { .. }, _) => {
                // Dot-stuffing: the leading dot is removed (RFC 5321 section 4.5.2).
                self.position = Position::Middle;
                return self.step(byte, content);
            }

            (Position::DotCr { after_crlf: true }, b'\n') => return true,
            (Position::DotCr { after_crlf: false }, b'\n') => {
                self.keep(b".\r\n", content);
                self.new_line(true);
            }
            (Position::DotCr { .. }, _) => {
                self.keep(b".", content);
                self.bare(BareKind::Cr, content);
                if self.policy == BareNewline::Normalize {
                    return self.step(byte, content);
                }
            }

            (Position::Cr, b'\n') => {
                self.keep(b"\r\n", content);
                self.new_line(true);
            }
            (Position::Cr, _) => {
                self.bare(BareKind::Cr, content);
                if self.policy == BareNewline::Normalize {
                    return self.step(byte, content);
                }
            }
        }
        false
    }

    /// Handles a bare LF or CR according to the policy.
    fn bare(&mut self, kind: BareKind, content: &mut Vec<u8>) {
        match self.policy {
            BareNewline::Reject => {
                if !matches!(self.violation, Some(DataViolation::Bare(_))) {
                    self.violation = Some(DataViolation::Bare(kind));
                }
            }
            BareNewline::Normalize => {
                self.keep(b"\r\n", content);
                self.new_line(false);
            }
        }
    }

    fn new_line(&mut self, after_crlf: bool) {
        self.position = Position::LineStart { after_crlf };
        self.line_length = 0;
    }

    /// Appends content unless a violation or the size limit means it will not be kept.
    fn keep(&mut self, bytes: &[u8], content: &mut Vec<u8>) {
        self.size += bytes.len();
        self.line_length += bytes.len();
        if self.max_line != 0 && self.line_length > self.max_line && self.violation.is_none() {
            self.violation = Some(DataViolation::LineTooLong);
        }
        if self.size > self.max_size && self.violation.is_none() {
            self.violation = Some(DataViolation::TooBig);
        }
        if self.violation.is_none() {
            content.extend_from_slice(bytes);
        }
    }
}

/// Finds the end of a command line in `input`.
///
/// Returns the length of the line including its terminator, and whether it ended with a bare
/// LF; `None` when no LF has arrived yet.
pub fn command_line_end(input: &[u8]) -> Option<(usize, bool)> {
    let lf = input.iter().position(|&byte| byte == b'\n')?;
    let bare = lf == 0 || input[lf - 1] != b'\r';
    Some((lf + 1, bare))
}

/// Checks a message that arrived in BDAT chunks: line endings by the policy, and line length.
///
/// Returns `Ok(None)` when the content can be kept as it is, and `Ok(Some(content))` when the
/// normalize policy had to turn bare LF or CR into CRLF.
///
/// # Errors
/// The first violation: a bare newline under the reject policy, or a line over `max_line`
/// octets including CRLF (0 means no limit).
pub fn check_chunked(
    body: &[u8],
    policy: BareNewline,
    max_line: usize,
) -> Result<Option<Vec<u8>>, DataViolation> {
    let mut normalized: Option<Vec<u8>> = None;
    let mut line_start = 0;
    for (index, &byte) in body.iter().enumerate() {
        let bare = match byte {
            b'\n' if index == 0 || body[index - 1] != b'\r' => Some(BareKind::Lf),
            b'\r' if body.get(index + 1) != Some(&b'\n') => Some(BareKind::Cr),
            _ => None,
        };
        match (bare, policy) {
            (Some(kind), BareNewline::Reject) => return Err(DataViolation::Bare(kind)),
            (Some(_), BareNewline::Normalize) => {
                let content = normalized.get_or_insert_with(|| body[..index].to_vec());
                content.extend_from_slice(b"\r\n");
            }
            (None, _) => {
                if let Some(content) = normalized.as_mut() {
                    content.push(byte);
                }
            }
        }
        if byte == b'\n' || bare.is_some() {
            if max_line != 0 && index + 1 - line_start > max_line {
                return Err(DataViolation::LineTooLong);
            }
            line_start = index + 1;
        }
    }
    if max_line != 0 && body.len() - line_start > max_line {
        return Err(DataViolation::LineTooLong);
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(policy: BareNewline, input: &[u8]) -> (Vec<u8>, Fed, Option<DataViolation>) {
        let mut framer = DataFramer::new(policy, 1_000, 0);
        let mut content = Vec::new();
        let fed = framer.feed(input, &mut content);
        (content, fed, framer.violation())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let (content, fed, violation) =
            scan(BareNewline::Reject, b"a\r\n..b\r\n.\r\nMAIL FROM:<>\r\n");
        assert_eq!(content, b"a\r\n.b\r\n");
        assert_eq!(
            fed,
            Fed {
                consumed: 11,
                finished: true
            }
        );
        assert_eq!(violation, None);
    }

    #[test]
    fn an_empty_message_ends_at_a_lone_dot() {
        let (content, fed, _) = scan(BareNewline::Reject, b".\r\n");
        assert!(content.is_empty());
        assert!(fed.finished);
    }

    #[test]
    fn rejects_a_bare_lf_at_once() {
        let (_, fed, violation) = scan(BareNewline::Reject, b"a\n.\nb\r\n.\r\n");
        assert!(!fed.finished);
        assert_eq!(violation, Some(DataViolation::Bare(BareKind::Lf)));
    }

    #[test]
    fn rejects_a_bare_cr() {
        let (_, _, violation) = scan(BareNewline::Reject, b"a\rb\r\n.\r\n");
        assert_eq!(violation, Some(DataViolation::Bare(BareKind::Cr)));
    }

    #[test]
    fn normalize_never_ends_at_a_dot_after_a_bare_lf() {
        // The smuggling pattern: "\n.\r\n" must not end the message.
        let (content, fed, violation) = scan(
            BareNewline::Normalize,
            b"a\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n",
        );
        assert!(fed.finished);
        assert_eq!(violation, None);
        assert_eq!(content, b"a\r\n.\r\nMAIL FROM:<x@y>\r\n\r\n");
    }

    #[test]
    fn normalize_turns_bare_endings_into_crlf() {
        let (content, fed, _) = scan(BareNewline::Normalize, b"a\nb\rc\r\n.\n\r\n.\r\n");
        assert!(fed.finished);
        assert_eq!(content, b"a\r\nb\r\nc\r\n.\r\n\r\n");
    }

    #[test]
    fn the_end_mark_may_be_split_across_reads() {
        let mut framer = DataFramer::new(BareNewline::Reject, 1_000, 0);
        let mut content = Vec::new();
        let mut finished = false;
        for byte in b"hello\r\n.\r\n".chunks(1) {
            finished = framer.feed(byte, &mut content).finished;
        }
        assert!(finished);
        assert_eq!(content, b"hello\r\n");
    }

    #[test]
    fn too_big_content_is_scanned_to_the_end_but_not_kept() {
        let mut framer = DataFramer::new(BareNewline::Reject, 4, 0);
        let mut content = Vec::new();
        let fed = framer.feed(b"123456\r\n.\r\n", &mut content);
        assert!(fed.finished);
        assert_eq!(framer.violation(), Some(DataViolation::TooBig));
    }

    #[test]
    fn a_long_line_is_a_violation() {
        let mut framer = DataFramer::new(BareNewline::Reject, 1_000, 6);
        let mut content = Vec::new();
        let fed = framer.feed(b"1234\r\n1234567\r\n.\r\n", &mut content);
        assert!(fed.finished);
        assert_eq!(framer.violation(), Some(DataViolation::LineTooLong));
    }

    #[test]
    fn chunked_content_gets_the_same_newline_policy() {
        assert_eq!(
            check_chunked(b"a\r\nb\r\n", BareNewline::Reject, 0),
            Ok(None)
        );
        assert_eq!(
            check_chunked(b"a\nb\r\n", BareNewline::Reject, 0),
            Err(DataViolation::Bare(BareKind::Lf))
        );
        assert_eq!(
            check_chunked(b"a\nb\rc\r\n", BareNewline::Normalize, 0),
            Ok(Some(b"a\r\nb\r\nc\r\n".to_vec()))
        );
        assert_eq!(
            check_chunked(b"1234\r\n12345\r\n", BareNewline::Reject, 6),
            Err(DataViolation::LineTooLong)
        );
    }

    #[test]
    fn finds_command_line_ends() {
        assert_eq!(command_line_end(b"NOOP\r\nQUIT"), Some((6, false)));
        assert_eq!(command_line_end(b"NOOP\nQUIT"), Some((5, true)));
        assert_eq!(command_line_end(b"NOOP"), None);
    }
}
