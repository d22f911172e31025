//! The Authentication-Results header field (RFC 8601) of real checks against a local
//! authoritative DNS server (Knot DNS on loopback): its exact form for a signed message, its
//! form for a bounce, and its syntax, read back with the grammar of RFC 8601 section 2.2.

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use harness::{AUTHSERV_ID, Dns, Record, TestKey, message, sender_auth, with_received};
use moat_gateway::AuthReport;

async fn report(ip: &str, helo: &str, reverse_path: &str, raw: &str, dns: &Dns) -> AuthReport {
    let auth = sender_auth(dns.addr);
    let spf = auth
        .check_spf(ip.parse().expect("address"), helo, reverse_path)
        .await;
    auth.check_message(with_received(raw).as_bytes(), &spf)
        .await
}

fn records(key: &TestKey) -> Vec<Record> {
    vec![
        Record::txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all"),
        Record::txt("mail.example.com", "v=spf1 a -all"),
        Record::address("mail.example.com", "192.0.2.10"),
        Record::txt("_dmarc.example.com", "v=DMARC1; p=reject"),
        Record::dkim_key("ed", "example.com", key),
    ]
}

#[tokio::test]
async fn a_signed_message_gets_every_result_on_its_own_line() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Hello", "Hi."),
    );

    let report = report(
        "192.0.2.10",
        "mail.example.com",
        "user@example.com",
        &signed,
        &dns,
    )
    .await;
    let prefix = &report.dkim[0].signature_prefix;
    // Base64 may hold "/", an RFC 2045 tspecial that makes the value a quoted string.
    let b = if prefix.contains('/') {
        format!("\"{prefix}\"")
    } else {
        prefix.clone()
    };
    assert_eq!(
        report.authentication_results,
        format!(
            "Authentication-Results: {AUTHSERV_ID};\r\n\
             \tspf=pass smtp.mailfrom=user@example.com;\r\n\
             \tspf=pass smtp.helo=mail.example.com;\r\n\
             \tdkim=pass header.d=example.com header.s=ed header.b={b};\r\n\
             \tarc=none;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=example.com"
        )
    );
    check_syntax(&report.authentication_results);
}

#[tokio::test]
async fn a_bounce_reports_the_helo_identity() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let bounce = message("mailer-daemon@example.com", "Undeliverable", "Sorry.");

    let report = report("203.0.113.5", "mail.example.com", "", &bounce, &dns).await;
    assert_eq!(
        report.authentication_results,
        format!(
            "Authentication-Results: {AUTHSERV_ID};\r\n\
             \tspf=fail smtp.helo=mail.example.com;\r\n\
             \tdkim=none;\r\n\
             \tarc=none;\r\n\
             \tdmarc=fail (p=reject dis=reject) header.from=example.com"
        )
    );
    check_syntax(&report.authentication_results);
}

#[tokio::test]
async fn odd_envelopes_still_give_a_well_formed_field() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let raw = message("user@example.com", "Hi", "Unsigned.");
    for (helo, reverse_path) in [
        ("[192.0.2.10]", "user@example.com"),
        ("mail.example.com", "\"john smith\"@example.com"),
        ("bad helo (name)", "a\"b\\c@example.com"),
        ("mail.example.com", "user@[192.0.2.1]"),
    ] {
        let report = report("192.0.2.10", helo, reverse_path, &raw, &dns).await;
        check_syntax(&report.authentication_results);
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 8601 section 2.2, read back

/// Checks `field` against the ABNF of RFC 8601 section 2.2: the field name, an authserv-id,
/// then `; method=result [(comment)] *(ptype.property=pvalue)`, folded only by CRLF and a
/// tab, with no line longer than 998 characters (RFC 5322 section 2.1.1).
fn check_syntax(field: &str) {
    for line in field.split("\r\n") {
        assert!(line.len() <= 998, "line too long: {line}");
    }
    assert!(!field.ends_with("\r\n"), "the final CRLF is the caller's");
    for (index, _) in field.match_indices(['\r', '\n']) {
        let rest = &field[index..];
        assert!(
            rest.starts_with("\r\n\t") || field[..index].ends_with('\r'),
            "bare CR or LF, or a fold without whitespace: {field:?}"
        );
    }

    let unfolded = field.replace("\r\n", "");
    let value = unfolded
        .strip_prefix("Authentication-Results: ")
        .unwrap_or_else(|| panic!("field name: {field:?}"));
    let mut reader = Reader(value);
    let authserv_id = reader.value();
    assert_eq!(authserv_id, AUTHSERV_ID);

    let mut methods = Vec::new();
    while !reader.at_end() {
        reader.expect(';');
        let method = reader.keyword();
        reader.expect('=');
        let result = reader.keyword();
        assert!(
            allowed(&method, &result),
            "{method}={result} is not registered"
        );
        reader.skip_comment();
        while reader.peek().is_some_and(|c| c != ';') {
            let ptype = reader.keyword();
            reader.expect('.');
            let property = reader.keyword();
            reader.expect('=');
            let _ = reader.value();
            assert!(
                ["smtp", "header", "policy"].contains(&ptype.as_str()),
                "ptype {ptype}.{property}"
            );
        }
        methods.push(method);
    }
    assert!(methods.contains(&"spf".to_string()));
    assert!(methods.contains(&"dmarc".to_string()));
}

/// The results registered for each method (RFC 8601 section 2.7, RFC 8617, RFC 7489).
fn allowed(method: &str, result: &str) -> bool {
    let results: &[&str] = match method {
        "spf" => &[
            "none",
            "neutral",
            "pass",
            "fail",
            "softfail",
            "temperror",
            "permerror",
        ],
        "dkim" => &[
            "none",
            "pass",
            "fail",
            "policy",
            "neutral",
            "temperror",
            "permerror",
        ],
        "arc" => &["none", "pass", "fail"],
        "dmarc" => &["none", "pass", "fail", "temperror", "permerror"],
        _ => &[],
    };
    results.contains(&result)
}

/// A reader of the unfolded field value.
struct Reader<'a>(&'a str);

impl Reader<'_> {
    fn skip_space(&mut self) {
        self.0 = self.0.trim_start_matches([' ', '\t']);
    }

    fn at_end(&mut self) -> bool {
        self.skip_space();
        self.0.is_empty()
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.0.chars().next()
    }

    fn expect(&mut self, wanted: char) {
        assert_eq!(self.peek(), Some(wanted), "at {:?}", self.0);
        self.0 = &self.0[1..];
    }

    /// A method, result, ptype or property: RFC 5321 Keyword-like letters, digits, hyphens.
    fn keyword(&mut self) -> String {
        self.skip_space();
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(self.0.len());
        assert!(end > 0, "keyword expected at {:?}", self.0);
        let (keyword, rest) = self.0.split_at(end);
        self.0 = rest;
        keyword.to_string()
    }

    /// A pvalue: a quoted string, an address, or a token.
    fn value(&mut self) -> String {
        self.skip_space();
        if let Some(rest) = self.0.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = rest.char_indices();
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().expect("escaped character").1),
                    '"' => {
                        self.0 = &rest[index + 1..];
                        return value;
                    }
                    _ => value.push(c),
                }
            }
            panic!("unterminated quoted string in {:?}", self.0);
        }
        let end = self
            .0
            .find(|c: char| c.is_ascii_whitespace() || c == ';' || c == '(' || c == '"')
            .unwrap_or(self.0.len());
        assert!(end > 0, "value expected at {:?}", self.0);
        let (value, rest) = self.0.split_at(end);
        let token_or_address = value.chars().all(|c| {
            c.is_ascii_graphic() && (c == '@' || c == '.' || !"()<>,;:\\\"/[]?=".contains(c))
        });
        assert!(token_or_address, "unquoted value {value:?} needs quoting");
        self.0 = rest;
        value.to_string()
    }

    fn skip_comment(&mut self) {
        if self.peek() != Some('(') {
            return;
        }
        let end = self.0.find(')').expect("closed comment");
        assert!(!self.0[1..end].contains('('), "nested comment");
        self.0 = &self.0[end + 1..];
    }
}
