//! The verdict through a real SMTP session, with sender authentication against a real
//! authoritative DNS server (Knot): a clean message is delivered with Authentication-Results
//! and spam headers, a forged sender under DMARC `p=reject` is refused with 550 5.7.1, and one
//! under `p=quarantine` is held, listed by `moat quarantine list`, and delivered on release.

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use common::{Moat, SmtpConnection, wait_until};
use harness::{Dns, Record};

/// DNS for three sender domains: one whose SPF authorises this test's client (127.0.0.1), and
/// two that do not, with DMARC policies reject and quarantine.
fn dns() -> Dns {
    Dns::start(&[
        Record::txt("good.example", "v=spf1 ip4:127.0.0.1 -all"),
        Record::txt("_dmarc.good.example", "v=DMARC1; p=reject"),
        Record::txt("forged.example", "v=spf1 -all"),
        Record::txt("_dmarc.forged.example", "v=DMARC1; p=reject"),
        Record::txt("careful.example", "v=spf1 -all"),
        Record::txt("_dmarc.careful.example", "v=DMARC1; p=quarantine"),
    ])
}

fn moat(dns: &Dns) -> Moat {
    Moat::start(&format!(
        "hostname = \"mx.example.net\"\n\n[smtp]\ndns_resolver = \"{}\"\n\n[auth]\ntimeout = \"5s\"\n",
        dns.addr
    ))
}

/// Sends one message from `sender` (envelope and From) to bob@localhost; returns the reply
/// to the end of DATA.
fn send(moat: &Moat, sender: &str) -> common::Reply {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command(&format!("MAIL FROM:<{sender}>")).code, 250);
    assert_eq!(smtp.command("RCPT TO:<bob@localhost>").code, 250);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(
        format!("From: <{sender}>\r\nSubject: verdict test\r\nMessage-ID: <v@example.org>\r\n\r\nhello\r\n.\r\n")
            .as_bytes(),
    );
    let reply = smtp.read_reply();
    smtp.command("QUIT");
    reply
}

fn delivered(moat: &Moat, count: usize) -> Vec<String> {
    let new = moat.maildir("localhost", "bob").join("new");
    wait_until(Duration::from_secs(20), "delivery to bob", || {
        std::fs::read_dir(&new)
            .map(|entries| entries.count() >= count)
            .unwrap_or(false)
    });
    std::fs::read_dir(&new)
        .expect("read new/")
        .map(|entry| {
            String::from_utf8_lossy(&std::fs::read(entry.expect("entry").path()).expect("read"))
                .into_owned()
        })
        .collect()
}

fn quarantine(moat: &Moat, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("quarantine")
        .args(args)
        .arg("--data-dir")
        .arg(&moat.data_dir)
        .output()
        .expect("run moat quarantine");
    assert!(
        output.status.success(),
        "moat quarantine {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn an_authenticated_sender_is_delivered_with_authentication_results() {
    let dns = dns();
    let moat = moat(&dns);

    let reply = send(&moat, "alice@good.example");
    assert_eq!(reply.code, 250, "{reply:?}");

    let mail = &delivered(&moat, 1)[0];
    assert!(
        mail.contains("Authentication-Results: mx.example.net;"),
        "{mail}"
    );
    assert!(mail.contains("spf=pass"), "{mail}");
    assert!(mail.contains("dmarc=pass"), "{mail}");
    assert!(mail.contains("X-Spam-Status: No, score="), "{mail}");
}

#[test]
fn a_forged_sender_under_dmarc_reject_is_refused() {
    let dns = dns();
    let moat = moat(&dns);

    let reply = send(&moat, "ceo@forged.example");
    assert_eq!(reply.code, 550, "{reply:?}");
    assert_eq!(
        reply.text(),
        "5.7.1 Message rejected by the DMARC policy of forged.example"
    );
    assert!(
        moat.log().contains("verdict=\"dmarc_rejected\""),
        "{}",
        moat.log()
    );
}

#[test]
fn a_failure_under_dmarc_quarantine_is_held_then_released() {
    let dns = dns();
    let moat = moat(&dns);

    let reply = send(&moat, "news@careful.example");
    assert_eq!(reply.code, 250, "{reply:?}");
    let queue_id = reply
        .text()
        .rsplit(' ')
        .next()
        .expect("queue id")
        .to_string();

    let listed = quarantine(&moat, &["list"]);
    assert!(listed.contains(&queue_id), "{listed}");
    assert!(
        listed.contains("DMARC policy of careful.example"),
        "{listed}"
    );
    assert!(
        !moat.maildir("localhost", "bob").join("new").exists(),
        "held mail was delivered"
    );

    let shown = quarantine(&moat, &["show", &queue_id]);
    assert!(shown.contains("Subject: verdict test"), "{shown}");

    quarantine(&moat, &["release", &queue_id]);
    let mail = &delivered(&moat, 1)[0];
    assert!(mail.contains("Subject: verdict test"), "{mail}");
    assert!(quarantine(&moat, &["list"]).trim().is_empty());
}
