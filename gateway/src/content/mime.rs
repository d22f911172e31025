//! MIME analysis: a message parsed by mail-parser and taken apart into what each check
//! needs. The rules get the decoded headers and body text (HTML stripped to text); the URL
//! collector gets text and HTML source; the built-in scanner gets every decoded part, every
//! file unpacked from archives and the raw message; the attachment policy gets every
//! attachment and archive entry with its name and detected type.

use std::borrow::Cow;
use std::collections::HashMap;

use mail_parser::decoders::html::html_to_text;
use mail_parser::{HeaderValue, Message, MessagePart, MimeHeaders, PartType};

use super::archive::{self, Budget, Unpacked};
use super::magic::FileType;
use super::policy::{self, PolicySubject};
use super::report::{Analysis, Attachment, PolicyHit};
use super::rules::RuleText;
use super::settings::AttachmentPolicy;
use super::signatures::ScanTarget;
use super::urls::UrlCollector;

/// What the built-in scanner looks at: one decoded part, unpacked file or the raw message.
#[derive(Debug)]
pub struct ScanItem<'m> {
    /// Where it is, as reported in hits.
    pub part: String,
    /// Its bytes.
    pub data: Cow<'m, [u8]>,
    /// What it is, for the signatures' target types.
    pub target: ScanTarget,
    /// Whether it is a slice of the raw message (a part the parser did not decode).
    pub in_raw_message: bool,
}

/// Which checks the message is taken apart for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Every check: the rules' text and the URLs are gathered too.
    AllChecks,
    /// The signatures and the attachment policy only (layer 2 alone).
    Signatures,
}

/// A message taken apart.
#[derive(Debug, Default)]
pub struct Dissection<'m> {
    /// Its structure, for the report.
    pub analysis: Analysis,
    /// Its text, for the rules.
    pub rule_text: RuleText,
    /// What the built-in scanner looks at.
    pub items: Vec<ScanItem<'m>>,
    /// What the attachment policy refuses.
    pub policy_hits: Vec<PolicyHit>,
}

/// Takes `message` (parsed from `raw`, or `None` when it has no header section) apart for
/// `purpose`, unpacking at most `unpack_budget` octets from archives.
pub fn dissect<'m>(
    raw: &'m [u8],
    message: Option<&'m Message<'m>>,
    policy: &AttachmentPolicy,
    unpack_budget: usize,
    purpose: Purpose,
) -> Dissection<'m> {
    let mut walker = Walker {
        raw,
        text: purpose == Purpose::AllChecks,
        policy,
        budget: Budget::new(unpack_budget),
        urls: UrlCollector::default(),
        out: Dissection::default(),
    };
    walker.out.items.push(ScanItem {
        part: "message".to_owned(),
        data: Cow::Borrowed(raw),
        target: ScanTarget::Message,
        in_raw_message: false,
    });

    match message {
        Some(message) => {
            walker.out.analysis.parsed = true;
            if walker.text {
                walker.headers(message);
            }
            walker.walk(message, "");
        }
        None if walker.text => {
            // Not a message the parser can read: the rules and URLs see it as plain text.
            let text = String::from_utf8_lossy(raw);
            walker.out.rule_text.push_body(&text);
            walker.urls.scan(&text);
        }
        None => {}
    }

    let (urls, url_domains) = walker.urls.finish();
    walker.out.analysis.urls = urls;
    walker.out.analysis.url_domains = url_domains;
    walker.out
}

struct Walker<'p, 'm> {
    raw: &'m [u8],
    /// Whether the rules' text and the URLs are wanted.
    text: bool,
    policy: &'p AttachmentPolicy,
    budget: Budget,
    urls: UrlCollector,
    out: Dissection<'m>,
}

impl<'m> Walker<'_, 'm> {
    /// The top-level header fields, decoded, for the rules.
    fn headers(&mut self, message: &'m Message<'m>) {
        let raw = message.raw_message();
        for header in message.headers() {
            let value: Cow<'_, str> = match &header.value {
                HeaderValue::Text(text) => Cow::Borrowed(text.as_ref()),
                HeaderValue::TextList(list) => Cow::Owned(list.join(", ")),
                _ => {
                    let range = header.offset_start as usize..header.offset_end as usize;
                    String::from_utf8_lossy(raw.get(range).unwrap_or_default())
                }
            };
            self.out.rule_text.push_header(header.name(), &value);
        }
    }

    /// Every part of `message`, nested messages included; `path` prefixes part numbers.
    fn walk(&mut self, message: &'m Message<'m>, path: &str) {
        for (index, part) in message.parts.iter().enumerate() {
            let number = format!("{path}{index}");
            match &part.body {
                PartType::Multipart(_) => {}
                PartType::Message(nested) => {
                    self.out.analysis.nested_messages += 1;
                    self.walk(nested, &format!("{number}."));
                }
                PartType::Text(text) if !is_attachment(part) => self.text(text, &number),
                PartType::Html(html) if !is_attachment(part) => self.html(html, &number),
                PartType::Text(text) | PartType::Html(text) => {
                    self.attachment(part, text.as_bytes(), &number);
                }
                PartType::Binary(data) | PartType::InlineBinary(data) => {
                    self.attachment(part, data, &number);
                }
            }
        }
    }

    /// A decoded part for the scanner, noting whether it is a slice of the raw message.
    fn item(&mut self, part: String, data: &'m [u8], target: ScanTarget) {
        let raw = self.raw.as_ptr_range();
        let slice = data.as_ptr_range();
        let in_raw_message = raw.start <= slice.start && slice.end <= raw.end;
        self.out.items.push(ScanItem {
            part,
            data: Cow::Borrowed(data),
            target,
            in_raw_message,
        });
    }

    fn text(&mut self, text: &'m str, number: &str) {
        self.out.analysis.text_parts += 1;
        if self.text {
            self.out.rule_text.push_body(text);
            self.urls.scan(text);
        }
        self.item(format!("part {number}"), text.as_bytes(), ScanTarget::Text);
    }

    /// HTML is stripped to text for the rules, and searched for URLs both as text (entities
    /// decoded) and as source (links are in attributes).
    fn html(&mut self, html: &'m str, number: &str) {
        self.out.analysis.html_parts += 1;
        if self.text {
            let text = html_to_text(html);
            self.out.rule_text.push_body(&text);
            self.urls.scan(html);
            self.urls.scan(&text);
        }
        self.item(format!("part {number}"), html.as_bytes(), ScanTarget::Html);
    }

    fn attachment(&mut self, part: &'m MessagePart<'m>, data: &'m [u8], number: &str) {
        let name = part.attachment_name().map(str::to_owned);
        let label = name.clone().unwrap_or_else(|| format!("part {number}"));
        let declared_type = part.content_type().map(|content_type| {
            let subtype = content_type.subtype().unwrap_or("");
            format!("{}/{subtype}", content_type.ctype()).to_ascii_lowercase()
        });

        let mut detected_type = FileType::detect(data);
        let mut macros = detected_type == FileType::Ole2 && policy::ole2_has_macros(data);
        let mut listing = None;
        if detected_type == FileType::Zip {
            let opened = archive::open_zip(data, &mut self.budget);
            if opened.office_document {
                detected_type = FileType::OfficeOpenXml;
            }
            macros |= opened.macros;
            self.entries(&label, &opened.listing.entries, opened.files);
            self.out.analysis.incomplete.extend(
                opened
                    .incomplete
                    .into_iter()
                    .map(|reason| format!("{label}: {reason}")),
            );
            listing = Some(opened.listing);
        }

        let subject = PolicySubject {
            part: &label,
            name: name.as_deref(),
            file_type: detected_type,
            macros,
            encrypted: listing.as_ref().is_some_and(|l| l.encrypted),
        };
        policy::check(self.policy, &subject, &mut self.out.policy_hits);

        self.item(label.clone(), data, ScanTarget::File(detected_type));
        self.out.analysis.attachments.push(Attachment {
            part: label,
            name,
            declared_type,
            detected_type,
            size: data.len(),
            archive: listing,
        });
    }

    /// An archive's entries: each checked by the policy (encrypted ones by name only), each
    /// unpacked one given to the scanner.
    fn entries(
        &mut self,
        label: &str,
        entries: &[super::report::ArchiveEntry],
        files: Vec<Unpacked>,
    ) {
        let mut unpacked: HashMap<String, Unpacked> = files
            .into_iter()
            .map(|file| (file.name.clone(), file))
            .collect();
        for entry in entries {
            let part = format!("{label}/{}", entry.name);
            let file = unpacked.remove(&entry.name);
            let file_type = file.as_ref().map_or(FileType::Binary, |f| f.detected_type);
            let macros = file.as_ref().is_some_and(|f| {
                f.detected_type == FileType::Ole2 && policy::ole2_has_macros(&f.data)
            });
            let subject = PolicySubject {
                part: &part,
                name: Some(&entry.name),
                file_type,
                macros,
                encrypted: false,
            };
            policy::check(self.policy, &subject, &mut self.out.policy_hits);
            if let Some(file) = file {
                self.out.items.push(ScanItem {
                    part,
                    data: Cow::Owned(file.data),
                    target: ScanTarget::File(file.detected_type),
                    in_raw_message: false,
                });
            }
        }
    }
}

/// A part is an attachment when the sender said so, or gave it a file name.
fn is_attachment(part: &MessagePart<'_>) -> bool {
    part.content_disposition()
        .is_some_and(|disposition| disposition.is_attachment())
        || part.attachment_name().is_some()
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;

    use super::*;

    fn parser() -> MessageParser {
        MessageParser::new()
            .with_mime_headers()
            .default_header_text()
    }

    fn dissect_text(raw: &[u8]) -> (Analysis, String, String, Vec<String>, Vec<&'static str>) {
        let parser = parser();
        let message = parser.parse(raw);
        let policy = AttachmentPolicy::default();
        let out = dissect(raw, message.as_ref(), &policy, 1 << 20, Purpose::AllChecks);
        let parts = out.items.iter().map(|item| item.part.clone()).collect();
        let rules = out.policy_hits.iter().map(|hit| hit.rule).collect();
        (
            out.analysis,
            out.rule_text.headers,
            out.rule_text.body,
            parts,
            rules,
        )
    }

    const MULTIPART: &str = "From: a@example.com\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
\r\n\
--b2\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Plain text with http://plain.example/x\r\n\
--b2\r\n\
Content-Type: text/html\r\n\
\r\n\
<html><body><p>Rich <b>text</b></p><a href=\"https://link.example/y\">here</a></body></html>\r\n\
--b2--\r\n\
--b1\r\n\
Content-Type: application/octet-stream; name=\"tool.pdf.exe\"\r\n\
Content-Disposition: attachment; filename=\"tool.pdf.exe\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
TVqQAAMAAAA=\r\n\
--b1--\r\n";

    #[test]
    fn takes_a_multipart_message_apart() {
        let (analysis, headers, body, parts, rules) = dissect_text(MULTIPART.as_bytes());
        assert!(analysis.parsed);
        assert_eq!(analysis.text_parts, 1);
        assert_eq!(analysis.html_parts, 1);
        assert_eq!(analysis.attachments.len(), 1);
        let attachment = &analysis.attachments[0];
        assert_eq!(attachment.name.as_deref(), Some("tool.pdf.exe"));
        assert_eq!(
            attachment.declared_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(attachment.detected_type, FileType::WindowsExecutable);
        assert_eq!(attachment.size, 8);
        assert!(headers.contains("Subject: Grüße\n"), "{headers}");
        assert!(body.contains("Plain text with"), "{body}");
        assert!(body.contains("Rich text"), "{body}");
        assert!(!body.contains("<b>"), "{body}");
        assert_eq!(analysis.url_domains, ["link.example", "plain.example"]);
        assert_eq!(parts[0], "message");
        assert!(parts.contains(&"tool.pdf.exe".to_owned()), "{parts:?}");
        assert_eq!(
            rules,
            ["dangerous_extension", "double_extension", "executable"]
        );
    }

    #[test]
    fn nested_messages_are_counted_and_walked() {
        let raw = "From: a@example.com\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
See attached.\r\n\
--b\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: b@example.org\r\n\
Subject: inner\r\n\
\r\n\
Inner words http://inner.example/\r\n\
--b--\r\n";
        let (analysis, _, body, _, _) = dissect_text(raw.as_bytes());
        assert_eq!(analysis.nested_messages, 1);
        assert_eq!(analysis.text_parts, 2);
        assert!(body.contains("Inner words"), "{body}");
        assert_eq!(analysis.url_domains, ["inner.example"]);
    }

    #[test]
    fn text_with_a_file_name_is_an_attachment() {
        let raw = "Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
body\r\n\
--b\r\n\
Content-Type: text/plain; name=\"notes.txt\"\r\n\
\r\n\
attached words\r\n\
--b--\r\n";
        let (analysis, _, body, _, rules) = dissect_text(raw.as_bytes());
        assert_eq!(analysis.text_parts, 1);
        assert_eq!(analysis.attachments.len(), 1);
        assert_eq!(analysis.attachments[0].detected_type, FileType::Text);
        assert!(!body.contains("attached words"));
        assert!(rules.is_empty());
    }

    #[test]
    fn garbage_without_headers_is_still_searched() {
        let (_, headers, body, parts, _) = dissect_text(b"\x00\x01 no headers http://x.example/");
        assert!(headers.contains("no headers") || body.contains("no headers"));
        assert_eq!(parts[0], "message");

        let (analysis, _, body, parts, _) = dissect_text(b"");
        assert!(!analysis.parsed);
        assert!(body.is_empty());
        assert_eq!(parts, ["message"]);
    }
}
