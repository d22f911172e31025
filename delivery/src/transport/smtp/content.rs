//! The message content as it goes on the wire after DATA: dot-stuffed, with CRLF line endings
//! and the final dot (RFC 5321 section 4.5.2).

/// Appends `message` to `out` as DATA content: dot-stuffed, CRLF line endings, final dot.
///
/// Returns the size of the content before dot-stuffing, which is what SIZE counts (RFC 1870).
///
/// A bare CR or LF is written as CRLF and counts as a line end for dot-stuffing. RFC 5321
/// section 2.3.8 forbids sending them bare, and a server that reads a bare LF as a line end
/// would otherwise see a "<LF>.<CRLF>" in the content as the end of data (SMTP smuggling).
pub(super) fn dot_stuff(message: &[u8], out: &mut Vec<u8>) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
