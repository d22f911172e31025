//! `moat serve` with `[greylist]`: the gateway defers a new triplet at RCPT and takes the retry.

mod common;

use std::time::Duration;

use common::*;

fn attempt(moat: &Moat) -> (Reply, Option<Reply>) {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO mx.sender.example").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<alice@sender.example>").code, 250);
    let rcpt = smtp.command("RCPT TO:<bob@localhost>");
    if rcpt.code != 250 {
        smtp.command("QUIT");
        return (rcpt, None);
    }
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(b"Subject: greylisted\r\n\r\nhello\r\n.\r\n");
    let data = smtp.read_reply();
    smtp.command("QUIT");
    (rcpt, Some(data))
}

#[test]
fn a_new_triplet_is_deferred_and_its_retry_after_the_delay_is_delivered_with_a_header() {
    let moat = Moat::start("[greylist]\ndelay = \"2s\"\n");

    let (rcpt, _) = attempt(&moat);
    assert_eq!(rcpt.code, 450, "{rcpt:?}");
    assert!(rcpt.text().starts_with("4.7.1 "), "{rcpt:?}");

    let (early, _) = attempt(&moat);
    assert_eq!(
        early.code, 450,
        "an early retry must be deferred: {early:?}"
    );

    std::thread::sleep(Duration::from_millis(2_200));
    let (rcpt, data) = attempt(&moat);
    assert_eq!(rcpt.code, 250, "{rcpt:?}");
    assert_eq!(data.map(|reply| reply.code), Some(250));

    let new = moat.maildir("localhost", "bob").join("new");
    wait_until(Duration::from_secs(10), "delivery to bob", || {
        std::fs::read_dir(&new)
            .map(|entries| entries.count() == 1)
            .unwrap_or(false)
    });
    let entry = std::fs::read_dir(&new)
        .expect("read new/")
        .next()
        .expect("one file");
    let mail = std::fs::read(entry.expect("entry").path()).expect("read mail");
    let text = String::from_utf8_lossy(&mail);
    assert!(
        text.contains("\r\nX-Greylist: delayed "),
        "no X-Greylist header:\n{text}"
    );
}
