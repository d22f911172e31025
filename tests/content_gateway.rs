//! Content verdicts through a real SMTP session: GTUBE is refused as spam, an EICAR
//! attachment as a virus by the built-in scanner, a clean message is delivered with spam
//! headers, and with clamd unreachable under the default failure mode the client is told to
//! try again later.

mod common;

use std::fs;
use std::time::Duration;

use common::{Moat, Reply, SmtpConnection, TempDir, free_port, wait_until};

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A signature directory with EICAR's ClamAV hash signature (MD5 and size of the file).
fn signatures(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("signatures");
    fs::create_dir_all(&path).expect("create signatures dir");
    fs::write(
        path.join("test.hdb"),
        "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
    )
    .expect("write hdb");
    path
}

fn send(moat: &Moat, body: &str) -> Reply {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<alice@example.org>").code, 250);
    assert_eq!(smtp.command("RCPT TO:<bob@localhost>").code, 250);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(body.as_bytes());
    smtp.send_raw(b".\r\n");
    let reply = smtp.read_reply();
    smtp.command("QUIT");
    reply
}

fn with_attachment(name: &str, content: &str) -> String {
    format!(
        "From: <alice@example.org>\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n\
         Content-Type: application/octet-stream; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{content}\r\n--b1--\r\n"
    )
}

#[test]
fn gtube_is_refused_as_spam_and_a_clean_message_is_delivered_with_spam_headers() {
    let dir = TempDir::new("content-gtube");
    let moat = Moat::start(&format!(
        "[content]\nsignatures_dir = \"{}\"\n",
        signatures(&dir).display()
    ));

    let spam = send(&moat, &format!("Subject: offer\r\n\r\n{GTUBE}\r\n"));
    assert_eq!(spam.code, 554, "{spam:?}");
    assert!(
        spam.text()
            .starts_with("5.7.1 Message rejected as spam (score "),
        "{spam:?}"
    );

    let clean = send(&moat, "Subject: lunch\r\n\r\nShall we meet at noon?\r\n");
    assert_eq!(clean.code, 250, "{clean:?}");
    let new = moat.maildir("localhost", "bob").join("new");
    wait_until(Duration::from_secs(10), "delivery to bob", || {
        fs::read_dir(&new)
            .map(|entries| entries.count() == 1)
            .unwrap_or(false)
    });
    let entry = fs::read_dir(&new)
        .expect("read new/")
        .next()
        .expect("one")
        .expect("entry");
    let mail = String::from_utf8_lossy(&fs::read(entry.path()).expect("read")).into_owned();
    assert!(mail.contains("X-Spam-Status: No, score=0.0"), "{mail}");
}

#[test]
fn an_eicar_attachment_is_refused_by_the_built_in_scanner() {
    let dir = TempDir::new("content-eicar");
    let moat = Moat::start(&format!(
        "[content]\nsignatures_dir = \"{}\"\n",
        signatures(&dir).display()
    ));

    let reply = send(&moat, &with_attachment("test.txt", EICAR));
    assert_eq!(reply.code, 554, "{reply:?}");
    assert_eq!(
        reply.text(),
        "5.7.1 Message rejected: virus found (Eicar-Test-Signature)"
    );
    assert!(
        moat.log().contains("verdict=\"virus_found\""),
        "{}",
        moat.log()
    );
}

#[test]
fn an_unreachable_clamd_defers_the_message_by_default() {
    let closed = free_port();
    let moat = Moat::start(&format!(
        "[content]\n\n[content.clamd]\naddress = \"127.0.0.1:{closed}\"\ntimeout = \"2s\"\n"
    ));

    let reply = send(&moat, "Subject: lunch\r\n\r\nnoon?\r\n");
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(
        reply.text().starts_with("4.7.0 Temporary failure: "),
        "{reply:?}"
    );
}

#[test]
fn a_double_extension_attachment_is_held_in_the_quarantine() {
    let moat = Moat::start("[content]\n");

    let reply = send(
        &moat,
        &with_attachment("invoice.pdf.exe", "MZ not really a program"),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    wait_until(Duration::from_secs(5), "the quarantine to hold it", || {
        fs::read_dir(moat.data_dir.join("quarantine"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().len() == 16)
            })
            .unwrap_or(false)
    });
    assert!(
        moat.log().contains("verdict=\"quarantined\""),
        "{}",
        moat.log()
    );
}
