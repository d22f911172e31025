//! Delivery status notifications (RFC 3464) telling the sender which recipients failed and why.
//!
//! A notification is a `multipart/report; report-type=delivery-status` message (RFC 6522) with
//! three parts: a human explanation, the machine-readable `message/delivery-status` fields, and
//! the header section of the original message as `text/rfc822-headers`. Only the headers are
//! returned: the body is the sender's own, and returning it would make the gateway a reflector
//! for whatever content a forged reverse-path points at.
//!
//! mail-builder 1.0.0 writes the headers, the multipart structure and the boundary. It cannot
//! encode the report fields itself: it would label a text body `charset=utf-8` and pick
//! quoted-printable or base64 for it on its own. So the status part is built here as plain
//! 7-bit text and handed over as a raw part with `Content-Transfer-Encoding: 7bit`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use thiserror::Error;

use crate::envelope::Envelope;
use crate::transport::smtp::enhanced_status_prefix;

/// RFC 5322 section 2.1.1: lines should stay within 78 characters; report fields are folded at
/// spaces to fit.
const FOLD_WIDTH: usize = 78;

/// RFC 5322 section 2.1.1: no line may exceed 998 characters. A word longer than this in a
/// diagnostic is cut into pieces, since no space offers a place to fold.
const MAX_WORD: usize = 900;

/// One recipient the notification reports as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The forward-path as given in RCPT TO, without angle brackets.
    pub address: String,
    /// The downstream reply ("550 5.1.1 User unknown") or the local reason.
    pub reason: String,
    /// The host that gave the reply, if it came from one.
    pub remote_host: Option<String>,
}

/// Why no notification could be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BounceError {
    /// The message had the null reverse-path `<>`. RFC 5321 section 4.5.5 forbids a bounce to
    /// it (that would loop between two systems); the caller must drop such failures instead.
    #[error("building a bounce failed: the reverse-path is null")]
    NullReversePath,
    /// The list of failed recipients was empty; RFC 3464 needs at least one per-recipient block.
    #[error("building a bounce failed: no failed recipient given")]
    NoFailedRecipients,
}

/// Builds the delivery status notification for `failed`, addressed to the envelope's
/// reverse-path, and returns the whole message with CRLF line endings.
///
/// `reporting_mta` is this host's name; it appears in `From: MAILER-DAEMON@...`, in
/// `Reporting-MTA` and in the Message-ID. `original` is the message as spooled; only its header
/// section is attached. `now` is the time of the notification, for `Date`.
///
/// # Errors
///
/// [`BounceError::NullReversePath`] if the envelope has the null reverse-path: callers must
/// never bounce such a message, and this refuses to build one if they try.
/// [`BounceError::NoFailedRecipients`] if `failed` is empty.
pub fn build_dsn(
    reporting_mta: &str,
    queue_id: &str,
    envelope: &Envelope,
    failed: &[FailedRecipient],
    original: &[u8],
    now: SystemTime,
) -> Result<Vec<u8>, BounceError> {
    if envelope.has_null_sender() {
        return Err(BounceError::NullReversePath);
    }
    if failed.is_empty() {
        return Err(BounceError::NoFailedRecipients);
    }

    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let message_id = format!(
        "{}.{:09}.{}.dsn@{}",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
        id_safe(queue_id),
        reporting_mta
    );
    let status_fields = delivery_status(reporting_mta, queue_id, envelope, failed).into_bytes();
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human_explanation(reporting_mta, failed)),
            MimePart::new(
                "message/delivery-status",
                BodyPart::Binary(status_fields.into()),
            )
            .transfer_encoding("7bit"),
            headers_part(header_section(original)),
        ],
    );

    let mut output = Vec::new();
    MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{reporting_mta}"),
        ))
        .to(Address::new_address(
            None::<&str>,
            envelope.reverse_path.as_str(),
        ))
        .subject("Undelivered Mail Returned to Sender")
        .date(Date::new(
            i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        ))
        .message_id(MessageId::new(message_id))
        // RFC 3834 section 5: marks the notification as automatic, so that responders such as
        // vacation programs do not answer it.
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("MIME-Version", Raw::new("1.0"))
        .body(report)
        .serialize(&mut output);
    Ok(output)
}

/// The first part: what happened, for a person.
fn human_explanation(reporting_mta: &str, failed: &[FailedRecipient]) -> String {
    let mut text = format!(
        "This is the mail delivery system at {reporting_mta}.\r\n\
         \r\n\
         Your message could not be delivered to the recipients listed below.\r\n\
         The attached report gives the details for mail software, and the header\r\n\
         section of your message follows it.\r\n\
         \r\n"
    );
    // Writing into a String cannot fail.
    for recipient in failed {
        let _ = write!(text, "<{}>: {}\r\n", recipient.address, recipient.reason);
        if let Some(host) = &recipient.remote_host {
            let _ = write!(text, "    (reported by {host})\r\n");
        }
    }
    text
}

/// The second part: the per-message fields, then one block of per-recipient fields each
/// (RFC 3464 section 2.1), every block ended by an empty line.
fn delivery_status(
    reporting_mta: &str,
    queue_id: &str,
    envelope: &Envelope,
    failed: &[FailedRecipient],
) -> String {
    let mut fields = String::new();
    let received_at = i64::try_from(envelope.received_at).unwrap_or(i64::MAX);
    push_field(
        &mut fields,
        "Reporting-MTA",
        &format!("dns; {}", ascii_text(reporting_mta)),
    );
    push_field(&mut fields, "X-Moat-Queue-ID", &ascii_text(queue_id));
    push_field(
        &mut fields,
        "Arrival-Date",
        &Date::new(received_at).to_rfc822(),
    );

    for recipient in failed {
        fields.push_str("\r\n");
        push_field(
            &mut fields,
            "Final-Recipient",
            &address_field(&recipient.address),
        );
        push_field(&mut fields, "Action", "failed");
        push_field(&mut fields, "Status", &status_code(&recipient.reason));
        if let Some(host) = &recipient.remote_host {
            push_field(
                &mut fields,
                "Remote-MTA",
                &format!("dns; {}", ascii_text(host)),
            );
        }
        push_field(
            &mut fields,
            "Diagnostic-Code",
            &diagnostic_code(&recipient.reason),
        );
    }
    fields
}

/// The third part: the original header section, as 7-bit text when it is plain ASCII with
/// proper lines, otherwise encoded by mail-builder (quoted-printable or base64).
fn headers_part(headers: &[u8]) -> MimePart<'_> {
    let plain = headers.iter().all(|&b| (1..=127).contains(&b))
        && headers.split(|&b| b == b'\n').all(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.len() <= 998 && !line.contains(&b'\r')
        })
        && (headers.is_empty() || headers.ends_with(b"\r\n"));
    if plain {
        return MimePart::new("text/rfc822-headers", BodyPart::Binary(headers.into()))
            .transfer_encoding("7bit");
    }
    // 8-bit headers come from an SMTPUTF8 session, so their charset is UTF-8 (RFC 6532).
    // RFC 6533 would rather send them unencoded as message/global-headers, inside a
    // message/global-delivery-status report; a text/rfc822-headers part that mail-builder
    // encodes reaches every reader, which is why it was chosen for this version.
    let content_type = ContentType::new("text/rfc822-headers").attribute("charset", "utf-8");
    MimePart::new(content_type, BodyPart::Binary(headers.into()))
}

/// Returns the header section of `message`: every line up to, not including, the first empty
/// line (RFC 5322 section 2.1), or the whole message if it has no body.
fn header_section(message: &[u8]) -> &[u8] {
    let mut end = 0;
    while let Some(rest) = message.get(end..).filter(|rest| !rest.is_empty()) {
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            break;
        }
        end += rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |lf| lf + 1);
    }
    message.get(..end).unwrap_or(message)
}

/// The `Status` value: the enhanced status code in `reason` ("550 5.1.1 User unknown" gives
/// 5.1.1), or else the class of its reply code with detail 0.0, or else 5.0.0.
fn status_code(reason: &str) -> String {
    let (reply_class, text) = match reason.as_bytes() {
        [class @ b'2'..=b'5', b'0'..=b'9', b'0'..=b'9', rest @ ..]
            if rest.is_empty() || rest.starts_with(b" ") || rest.starts_with(b"-") =>
        {
            (
                Some(char::from(*class)),
                reason.get(4..).unwrap_or_default(),
            )
        }
        _ => (None, reason),
    };
    if let Some(status) = enhanced_status_prefix(text.trim_start()) {
        return status.to_string();
    }
    match reply_class {
        Some(class @ ('4' | '5')) => format!("{class}.0.0"),
        _ => "5.0.0".to_string(),
    }
}

/// The `Diagnostic-Code` value: "smtp; <reply>" for an SMTP reply, otherwise the local reason
/// under our own diagnostic type, as RFC 3464 section 2.3.6 allows with an "X-" name.
fn diagnostic_code(reason: &str) -> String {
    let is_reply = reason.len() >= 3
        && reason.bytes().take(3).all(|b| b.is_ascii_digit())
        && matches!(reason.as_bytes().get(3), None | Some(b' ' | b'-'));
    let diagnostic_type = if is_reply { "smtp" } else { "X-Moat" };
    format!("{diagnostic_type}; {}", ascii_text(reason))
}

/// The `Final-Recipient` value: `rfc822; addr` for an ASCII address, or `utf-8; addr` with
/// every other character written as `\x{HEX}` (RFC 6533 section 3, utf-8-addr-xtext), which
/// keeps this part 7-bit.
fn address_field(address: &str) -> String {
    if address.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return format!("rfc822; {address}");
    }
    let mut field = String::from("utf-8; ");
    for ch in address.chars() {
        let qchar = matches!(ch, '\u{21}'..='\u{7e}') && !matches!(ch, '+' | '=' | '\\');
        if qchar {
            field.push(ch);
        } else {
            let _ = write!(field, "\\x{{{:X}}}", u32::from(ch));
        }
    }
    field
}

/// Makes `text` safe for a 7-bit header field: every control or non-ASCII character becomes
/// '?', since these fields are US-ASCII (RFC 3464 section 2.1.1).
fn ascii_text(text: &str) -> String {
    text.chars()
        .map(|ch| {
            if ch == ' ' || ch.is_ascii_graphic() {
                ch
            } else {
                '?'
            }
        })
        .collect()
}

/// Makes `text` usable as the left part of a Message-ID (a dot-atom, RFC 5322 section 3.6.4).
fn id_safe(text: &str) -> String {
    text.chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect()
}

/// Appends `name: value` and CRLF to `out`, folding at spaces to keep lines near FOLD_WIDTH.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    for word in value.split(' ').filter(|word| !word.is_empty()) {
        for piece in split_long(word) {
            // The first word always goes on the field's first line.
            if column + 1 + piece.len() > FOLD_WIDTH && column > name.len() + 1 {
                out.push_str("\r\n");
                column = 0;
            }
            out.push(' ');
            out.push_str(piece);
            column += 1 + piece.len();
        }
    }
    out.push_str("\r\n");
}

/// Splits a word into pieces of at most MAX_WORD bytes, on character boundaries.
fn split_long(word: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = word;
    while rest.len() > MAX_WORD {
        let mut cut = MAX_WORD;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::envelope::BodyType;

    fn envelope(reverse_path: &str) -> Envelope {
        Envelope {
            reverse_path: reverse_path.into(),
            recipients: vec!["bob@example.com".into(), "carol@example.com".into()],
            smtputf8: false,
            body: BodyType::SevenBit,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            helo: "client.example.org".into(),
            received_at: 1_700_000_000,
        }
    }

    const ORIGINAL: &[u8] = b"Received: from client.example.org\r\n\
        From: alice@example.org\r\n\
        Subject: quarterly figures\r\n\
        \r\n\
        The secret body.\r\n";

    fn failures() -> Vec<FailedRecipient> {
        vec![
            FailedRecipient {
                address: "bob@example.com".into(),
                reason: "550 5.1.1 User unknown".into(),
                remote_host: Some("lmtp.example.com".into()),
            },
            FailedRecipient {
                address: "carol@example.com".into(),
                reason: "554 transaction failed".into(),
                remote_host: None,
            },
        ]
    }

    fn build() -> String {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_600);
        let dsn = build_dsn(
            "mx.example.com",
            "Q42",
            &envelope("alice@example.org"),
            &failures(),
            ORIGINAL,
            now,
        )
        .expect("dsn builds");
        String::from_utf8(dsn).expect("dsn is UTF-8")
    }

    /// Splits a message into its unfolded header fields and its body.
    fn split_message(message: &str) -> (Vec<(String, String)>, &str) {
        let (head, body) = message
            .split_once("\r\n\r\n")
            .expect("header/body separator");
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = fields.last_mut().expect("continuation after a field");
                last.1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("field has a colon");
                fields.push((name.to_string(), value.trim().to_string()));
            }
        }
        (fields, body)
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("missing field {name}"))
    }

    /// Returns the body parts of a multipart body, checking the closing delimiter.
    fn parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
        let delimiter = format!("--{boundary}");
        let closing = format!("\r\n--{boundary}--\r\n");
        assert!(body.ends_with(&closing), "no closing delimiter: {body}");
        let inner = &body[..body.len() - closing.len()];
        inner
            .split(&format!("{delimiter}\r\n"))
            .skip(1)
            .map(|p| p.trim_end_matches("\r\n"))
            .collect()
    }

    #[test]
    fn addresses_the_reverse_path_from_mailer_daemon() {
        let dsn = build();
        let (fields, _) = split_message(&dsn);
        assert_eq!(
            field(&fields, "From"),
            "\"Mail Delivery System\" <MAILER-DAEMON@mx.example.com>"
        );
        assert_eq!(field(&fields, "To"), "<alice@example.org>");
        assert_eq!(
            field(&fields, "Subject"),
            "Undelivered Mail Returned to Sender"
        );
        assert_eq!(field(&fields, "Auto-Submitted"), "auto-replied");
        assert_eq!(field(&fields, "MIME-Version"), "1.0");
        assert_eq!(field(&fields, "Date"), "Tue, 14 Nov 2023 22:23:20 +0000");
        assert!(field(&fields, "Message-ID").ends_with(".Q42.dsn@mx.example.com>"));
    }

    #[test]
    fn has_the_three_parts_of_a_delivery_status_report() {
        let dsn = build();
        let (fields, body) = split_message(&dsn);
        let content_type = field(&fields, "Content-Type");
        assert!(
            content_type.starts_with("multipart/report;"),
            "{content_type}"
        );
        assert!(
            content_type.contains("report-type=delivery-status")
                || content_type.contains("report-type=\"delivery-status\""),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("boundary parameter")
            .trim_matches('"');

        let parts = parts(body, boundary);
        assert_eq!(parts.len(), 3, "{body}");
        assert!(
            parts[0].starts_with("Content-Type: text/plain"),
            "{}",
            parts[0]
        );
        assert!(
            parts[1].starts_with("Content-Type: message/delivery-status\r\n"),
            "{}",
            parts[1]
        );
        assert!(
            parts[2].starts_with("Content-Type: text/rfc822-headers\r\n"),
            "{}",
            parts[2]
        );
    }

    #[test]
    fn reports_each_recipient_with_its_status() {
        let dsn = build();
        let status_part = dsn
            .split("Content-Type: message/delivery-status\r\n")
            .nth(1)
            .and_then(|rest| rest.split("\r\n--").next())
            .expect("status part");
        let (_, fields) = status_part.split_once("\r\n\r\n").expect("part headers");
        let blocks: Vec<&str> = fields.split("\r\n\r\n").collect();

        assert!(
            blocks[0].contains("Reporting-MTA: dns; mx.example.com\r\n"),
            "{}",
            blocks[0]
        );
        assert!(
            blocks[0].contains("X-Moat-Queue-ID: Q42\r\n"),
            "{}",
            blocks[0]
        );
        assert!(
            blocks[0].contains("Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000"),
            "{}",
            blocks[0]
        );
        assert_eq!(
            blocks[1],
            "Final-Recipient: rfc822; bob@example.com\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             Remote-MTA: dns; lmtp.example.com\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 User unknown"
        );
        assert_eq!(
            blocks[2],
            "Final-Recipient: rfc822; carol@example.com\r\n\
             Action: failed\r\n\
             Status: 5.0.0\r\n\
             Diagnostic-Code: smtp; 554 transaction failed\r\n"
        );
    }

    #[test]
    fn returns_the_original_headers_without_the_body() {
        let dsn = build();
        let part = "Content-Type: text/rfc822-headers\r\n\
                    Content-Transfer-Encoding: 7bit\r\n\
                    \r\n\
                    Received: from client.example.org\r\n\
                    From: alice@example.org\r\n\
                    Subject: quarterly figures\r\n\
                    \r\n--";
        assert!(dsn.contains(part), "{dsn}");
        assert!(!dsn.contains("secret body"));
    }

    #[test]
    fn refuses_a_null_reverse_path() {
        let result = build_dsn(
            "mx.example.com",
            "Q1",
            &envelope(""),
            &failures(),
            ORIGINAL,
            SystemTime::now(),
        );
        assert!(matches!(result, Err(BounceError::NullReversePath)));
    }

    #[test]
    fn refuses_an_empty_recipient_list() {
        let result = build_dsn(
            "mx.example.com",
            "Q1",
            &envelope("a@example.org"),
            &[],
            ORIGINAL,
            SystemTime::now(),
        );
        assert!(matches!(result, Err(BounceError::NoFailedRecipients)));
    }

    #[test]
    fn takes_the_status_from_the_reply() {
        assert_eq!(status_code("550 5.1.1 User unknown"), "5.1.1");
        assert_eq!(status_code("550-5.7.1 Rejected"), "5.7.1");
        assert_eq!(status_code("550 no such user"), "5.0.0");
        assert_eq!(status_code("452 too many"), "4.0.0");
        assert_eq!(status_code("5.6.7 downstream lacks SMTPUTF8"), "5.6.7");
        assert_eq!(status_code("mailbox exploded"), "5.0.0");
        assert_eq!(status_code("550 5.1 short"), "5.0.0");
    }

    #[test]
    fn labels_local_reasons_with_our_diagnostic_type() {
        assert_eq!(diagnostic_code("550 5.1.1 x"), "smtp; 550 5.1.1 x");
        assert_eq!(
            diagnostic_code("5.6.7 downstream lacks SMTPUTF8"),
            "X-Moat; 5.6.7 downstream lacks SMTPUTF8"
        );
    }

    #[test]
    fn writes_non_ascii_addresses_as_utf8_xtext() {
        assert_eq!(address_field("bob@example.com"), "rfc822; bob@example.com");
        assert_eq!(
            address_field("jörg+x@example.com"),
            "utf-8; j\\x{F6}rg\\x{2B}x@example.com"
        );
    }

    #[test]
    fn folds_long_fields_at_spaces() {
        let mut out = String::new();
        let long = "smtp; 550 5.7.1 ".to_string() + &"word ".repeat(40);
        push_field(&mut out, "Diagnostic-Code", &long);
        assert!(
            out.split("\r\n").all(|line| line.len() <= FOLD_WIDTH),
            "{out}"
        );
        assert!(out.contains("\r\n word"), "{out}");
        assert_eq!(
            out.replace("\r\n", "").trim_end(),
            format!("Diagnostic-Code: {}", long.trim_end())
        );
    }

    #[test]
    fn finds_the_header_section() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(header_section(b"A: 1"), b"A: 1");
    }
}
