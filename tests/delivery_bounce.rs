//! Permanent failures and expired messages bounce to the sender (RFC 3464), never to `<>`.
//!
//! The refusing peer is Postfix's smtp-sink with `-f RCPT`, which answers every RCPT with
//! `500 5.3.0`; the sender's domain is one of Moat's own, so the bounce lands in its Maildir.

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A running smtp-sink, killed on drop.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    /// smtp-sink on a free loopback port with extra options (for example `-f RCPT`).
    fn start(options: &[&str]) -> Sink {
        let port = free_port();
        let child = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody"])
            .args(options)
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink (Debian package postfix; scripts/setup installs it)");
        wait_until(Duration::from_secs(10), "smtp-sink to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sink { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one message through a fresh session and returns the 250 reply's text.
fn send(moat: &Moat, from: &str, to: &str) -> String {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command(&format!("MAIL FROM:<{from}>")).code, 250);
    assert_eq!(smtp.command(&format!("RCPT TO:<{to}>")).code, 250);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(b"From: <alice@localhost>\r\nSubject: will bounce\r\nMessage-ID: <b1@example.org>\r\n\r\nbody\r\n.\r\n");
    let reply = smtp.read_reply();
    assert_eq!(reply.code, 250, "{reply:?}");
    smtp.command("QUIT");
    reply.text()
}

/// The files in a Maildir's `new/`, waiting up to `deadline` for at least one.
fn wait_for_mail(moat: &Moat, local: &str, deadline: Duration) -> Vec<Vec<u8>> {
    let new = moat.maildir("localhost", local).join("new");
    wait_until(deadline, &format!("mail for {local}@localhost"), || {
        fs::read_dir(&new)
            .map(|entries| entries.count() > 0)
            .unwrap_or(false)
    });
    fs::read_dir(&new)
        .expect("read new/")
        .map(|entry| fs::read(entry.expect("entry").path()).expect("read mail"))
        .collect()
}

fn queue_is_empty(moat: &Moat) -> bool {
    fs::read_dir(moat.data_dir.join("queue/active"))
        .map(|entries| entries.count() == 0)
        .unwrap_or(false)
}

#[test]
fn a_refused_recipient_bounces_to_the_sender_with_a_delivery_status_report() {
    let sink = Sink::start(&["-f", "RCPT"]);
    let moat = Moat::start(&format!(
        "[[domain]]\nname = \"localhost\"\nroute = \"maildir:MAILDIR_ROOT\"\n\n\
         [[domain]]\nname = \"refusing.example\"\nroute = \"smtp:127.0.0.1:{}\"\n",
        sink.port
    ));

    send(&moat, "alice@localhost", "bob@refusing.example");

    let bounces = wait_for_mail(&moat, "alice", Duration::from_secs(30));
    assert_eq!(bounces.len(), 1, "exactly one bounce");
    let bounce = String::from_utf8_lossy(&bounces[0]);
    for expected in [
        "Content-Type: multipart/report",
        "report-type=\"delivery-status\"",
        "Auto-Submitted: auto-replied",
        "Final-Recipient: rfc822; bob@refusing.example",
        "Action: failed",
        "Status: 5.3.0",
        "Diagnostic-Code: smtp; 500 5.3.0",
        "Subject: will bounce",
    ] {
        assert!(
            bounce.contains(expected),
            "bounce lacks {expected:?}:\n{bounce}"
        );
    }
    wait_until(Duration::from_secs(10), "the queue to empty", || {
        queue_is_empty(&moat)
    });
}

#[test]
fn a_message_from_the_null_sender_is_never_bounced() {
    let sink = Sink::start(&["-f", "RCPT"]);
    let moat = Moat::start(&format!(
        "[[domain]]\nname = \"localhost\"\nroute = \"maildir:MAILDIR_ROOT\"\n\n\
         [[domain]]\nname = \"refusing.example\"\nroute = \"smtp:127.0.0.1:{}\"\n",
        sink.port
    ));

    send(&moat, "", "bob@refusing.example");

    wait_until(Duration::from_secs(30), "the failure to be logged", || {
        moat.log().contains("no bounce")
    });
    wait_until(Duration::from_secs(10), "the queue to empty", || {
        queue_is_empty(&moat)
    });
    assert!(
        !moat.data_dir.join("mail/localhost").exists(),
        "a bounce was delivered"
    );
}

#[test]
fn a_message_that_cannot_be_delivered_in_its_lifetime_bounces_as_expired() {
    let closed_port = free_port();
    let moat = Moat::start(&format!(
        "[delivery]\nretry_schedule = [\"1s\"]\nmax_queue_lifetime = \"3s\"\nconnect_timeout = \"1s\"\n\n\
         [[domain]]\nname = \"localhost\"\nroute = \"maildir:MAILDIR_ROOT\"\n\n\
         [[domain]]\nname = \"down.example\"\nroute = \"lmtp:127.0.0.1:{closed_port}\"\n"
    ));

    send(&moat, "alice@localhost", "bob@down.example");

    let bounces = wait_for_mail(&moat, "alice", Duration::from_secs(60));
    let bounce = String::from_utf8_lossy(&bounces[0]);
    assert!(
        bounce.contains("Status: 5.4.7"),
        "expired bounce lacks 5.4.7:\n{bounce}"
    );
    assert!(
        moat.log().matches("status=\"deferred\"").count() >= 2,
        "retries were not logged"
    );
}
