//! DKIM at the end of DATA against a real authoritative DNS server (Knot DNS on loopback),
//! with messages the tests sign with keys they generate: Ed25519 and RSA 2048 (whose key
//! record needs two TXT strings) pass, an altered body fails, an unsigned message has none, a
//! missing key is a permerror and an unreachable server a temperror.

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use harness::{Dns, Record, TestKey, closed_port, message, sender_auth, with_received};
use moat_gateway::{DkimCheck, DkimResult, SenderAuth, SpfResult};

async fn dkim(auth: &SenderAuth, raw: &str) -> Vec<DkimCheck> {
    let spf = auth
        .check_spf(
            "192.0.2.10".parse().expect("address"),
            "mail.example.com",
            "user@example.com",
        )
        .await;
    auth.check_message(with_received(raw).as_bytes(), &spf)
        .await
        .dkim
}

#[tokio::test]
async fn an_ed25519_signature_of_a_published_key_passes() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&[Record::dkim_key("ed", "example.com", &key)]);
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Hello", "Hi there."),
    );

    let checks = dkim(&sender_auth(dns.addr), &signed).await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].result, DkimResult::Pass, "{checks:?}");
    assert_eq!(checks[0].domain, "example.com");
    assert_eq!(checks[0].selector, "ed");
    assert_eq!(checks[0].signature_prefix.len(), 8);
}

#[tokio::test]
async fn an_rsa_2048_signature_passes_with_its_key_in_two_txt_strings() {
    let key = TestKey::rsa2048();
    assert!(
        key.dns_record().len() > 255,
        "the record should need two strings"
    );
    let dns = Dns::start(&[Record::dkim_key("rsa", "example.com", &key)]);
    let signed = key.sign(
        "example.com",
        "rsa",
        &message("user@example.com", "Hello", "Hi there."),
    );

    let checks = dkim(&sender_auth(dns.addr), &signed).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].result, DkimResult::Pass, "{checks:?}");
}

#[tokio::test]
async fn an_altered_body_fails() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&[Record::dkim_key("ed", "example.com", &key)]);
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Invoice", "Pay to account 1234."),
    );
    let altered = signed.replace("account 1234", "account 6666");

    let checks = dkim(&sender_auth(dns.addr), &altered).await;
    assert_eq!(checks[0].result, DkimResult::Fail);
    assert_eq!(checks[0].reason, Some("body hash did not verify"));
}

#[tokio::test]
async fn an_altered_signed_header_fails() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&[Record::dkim_key("ed", "example.com", &key)]);
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Lunch", "At noon."),
    );
    let altered = signed.replace("Subject: Lunch", "Subject: You won a prize");

    let checks = dkim(&sender_auth(dns.addr), &altered).await;
    assert_eq!(checks[0].result, DkimResult::Fail);
    assert_eq!(checks[0].reason, Some("signature did not verify"));
}

#[tokio::test]
async fn an_unsigned_message_has_no_result_and_says_dkim_none() {
    let dns = Dns::start(&[]);
    let auth = sender_auth(dns.addr);
    let spf = auth
        .check_spf(
            "192.0.2.10".parse().expect("address"),
            "mail.example.com",
            "user@example.com",
        )
        .await;
    let raw = with_received(&message("user@example.com", "Plain", "No signature."));
    let report = auth.check_message(raw.as_bytes(), &spf).await;
    assert!(report.dkim.is_empty());
    assert!(
        report.authentication_results.contains("\tdkim=none;"),
        "{}",
        report.authentication_results
    );
}

#[tokio::test]
async fn a_signature_whose_key_is_not_published_is_a_permerror() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&[]);
    let signed = key.sign(
        "example.com",
        "gone",
        &message("user@example.com", "Hello", "Hi."),
    );

    let checks = dkim(&sender_auth(dns.addr), &signed).await;
    assert_eq!(checks[0].result, DkimResult::PermError);
    assert_eq!(checks[0].reason, Some("no key for signature"));
}

#[tokio::test]
async fn a_revoked_key_is_a_permerror() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&[Record::txt(
        "old._domainkey.example.com",
        "v=DKIM1; k=ed25519; p=",
    )]);
    let signed = key.sign(
        "example.com",
        "old",
        &message("user@example.com", "Hello", "Hi."),
    );

    let checks = dkim(&sender_auth(dns.addr), &signed).await;
    assert_eq!(checks[0].result, DkimResult::PermError, "{checks:?}");
}

#[tokio::test]
async fn a_key_that_cannot_be_fetched_is_a_temperror() {
    let key = TestKey::ed25519();
    let auth = sender_auth(closed_port());
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Hello", "Hi."),
    );

    let spf = auth
        .check_spf(
            "192.0.2.10".parse().expect("address"),
            "mail.example.com",
            "user@example.com",
        )
        .await;
    assert_eq!(spf.mail_from.result, SpfResult::TempError);
    let report = auth
        .check_message(with_received(&signed).as_bytes(), &spf)
        .await;
    assert_eq!(report.dkim[0].result, DkimResult::TempError);
    assert_eq!(report.dmarc_action, None, "a DNS failure never refuses");
}

#[tokio::test]
async fn every_signature_is_reported_in_the_messages_order() {
    let author = TestKey::ed25519();
    let provider = TestKey::rsa2048();
    let dns = Dns::start(&[
        Record::dkim_key("ed", "example.com", &author),
        Record::dkim_key("rsa", "esp.example.org", &provider),
    ]);
    let signed = author.sign(
        "example.com",
        "ed",
        &message("user@example.com", "News", "This week."),
    );
    let twice = provider.sign("esp.example.org", "rsa", &signed);

    let checks = dkim(&sender_auth(dns.addr), &twice).await;
    let seen: Vec<(&str, DkimResult)> = checks
        .iter()
        .map(|check| (check.domain.as_str(), check.result))
        .collect();
    assert_eq!(
        seen,
        [
            ("esp.example.org", DkimResult::Pass),
            ("example.com", DkimResult::Pass)
        ]
    );
}
