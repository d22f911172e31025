//! Refusals of the message, seen by a raw client over loopback: its declared and actual size in
//! DATA and BDAT, the gateway-wide budget of content in memory, its line length, bare CR and LF in it (SMTP smuggling), STARTTLS and BDAT. Each
//! test checks the exact reply code and enhanced status code (RFC 3463), whether the session goes
//! on or is closed, and what was delivered.
//!
//! The expected codes are those of the refusal table in `gateway/src/reply.rs`. Each test starts
//! its own `moat serve` with the one limit it needs set small, so a test takes about a second.
//! The client, `tests/common/raw.rs`, is std's `TcpStream`, so bytes go out exactly as written.
//! Only STARTTLS needs a TLS client; that transcript runs through `tests/support/smtp_raw.py`.

mod common;

use std::fs;
use std::thread;

use common::raw::{
    Client, HOST, QUIET, SENDER, all_delivered, assert_queued, assert_reply, start,
    wait_for_messages,
};
use common::{Moat, maildir_new, python_ok, service_addrs};

// ---------------------------------------------------------------------------------------------
// Message size

#[test]
fn ehlo_advertises_the_size_limit() {
    let moat = start("max_message_size = 1000");
    let mut client = Client::connect(moat.smtp_addr);
    assert_eq!(client.reply().code, 220);

    let ehlo = client.command("EHLO client.example.com");

    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines[0], HOST);
    for keyword in [
        "SIZE 1000",
        "PIPELINING",
        "CHUNKING",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(
            ehlo.lines.iter().any(|line| line == keyword),
            "EHLO does not advertise {keyword:?}: {ehlo:?}"
        );
    }
}

#[test]
fn a_declared_size_over_the_limit_gets_552() {
    let moat = start("max_message_size = 1000");
    let mut client = Client::greeted(&moat);

    let over = format!("MAIL FROM:<{SENDER}> SIZE=1001");
    client.expect(&over, 552, "5.3.4");
    let at_limit = format!("MAIL FROM:<{SENDER}> SIZE=1000");
    client.expect(&at_limit, 250, "2.1.0");
}

#[test]

fn a_declared_size_too_large_to_count_gets_552() {
    // RFC 1870 section 6: a declared size over the fixed limit gets 552. smtp-proto 0.2.5
    // saturates at usize::MAX and then restarts from the next digit, so this SIZE reads as 5.
    // `BDAT 1844674407370955161600005 LAST` is read the same way, as a chunk of 5 octets.
    let moat = start("max_message_size = 1000");
    let mut client = Client::greeted(&moat);

    client.expect(
        &format!("MAIL FROM:<{SENDER}> SIZE=1844674407370955161600005"),
        552,
        "5.3.4",
    );
}

#[test]
fn data_over_the_size_limit_gets_552_after_the_dot_and_the_session_goes_on() {
    let moat = start("max_message_size = 1000");
    let mut client = Client::in_transaction(&moat, "big@localhost");
    assert_eq!(client.command("DATA").code, 354);

    // One octet over: refused only once the whole message has been read.
    client.send(&content_of_size(1001));
    client.send(b".\r\n");
    assert_reply(&client.reply(), 552, "5.3.4");
    client.expect("NOOP", 250, "2.0.0");

    // Exactly the limit is accepted, in the same session.
    client.mail();
    client.expect("RCPT TO:<big@localhost>", 250, "2.1.5");
    assert_eq!(client.command("DATA").code, 354);
    client.send(&content_of_size(1000));
    assert_queued(&client.command("."));

    let delivered = wait_for_messages(&moat, "big", 1);
    let message = fs::read(&delivered[0]).expect("read the delivered message");
    assert!(
        message.ends_with(&content_of_size(1000)),
        "the delivered message is not the one of 1,000 octets"
    );
    assert_eq!(
        all_delivered(&moat).len(),
        1,
        "the refused message was delivered"
    );
}

#[test]
fn bdat_over_the_size_limit_gets_552() {
    let moat = start("max_message_size = 1000");

    // One chunk one octet over.
    let mut client = Client::in_transaction(&moat, "big@localhost");
    client.send(b"BDAT 1001 LAST\r\n");
    client.send(&content_of_size(1001));
    assert_reply(&client.reply(), 552, "5.3.4");
    client.expect("NOOP", 250, "2.0.0");

    // Two chunks that are over only together.
    client.mail();
    client.expect("RCPT TO:<big@localhost>", 250, "2.1.5");
    client.send(b"BDAT 600\r\n");
    client.send(&content_of_size(600));
    assert_reply(&client.reply(), 250, "2.0.0");
    client.send(b"BDAT 600 LAST\r\n");
    client.send(&content_of_size(600));
    assert_reply(&client.reply(), 552, "5.3.4");
    client.expect("NOOP", 250, "2.0.0");
}

#[test]
fn a_content_line_over_the_limit_gets_554_and_the_session_goes_on() {
    let moat = start("max_text_line = 100");
    let mut client = Client::in_transaction(&moat, "long@localhost");
    assert_eq!(client.command("DATA").code, 354);

    // 100 octets with the CRLF is the longest line allowed; one more is too long.
    let longest = "x".repeat(98);
    client.send(format!("{longest}\r\n{longest}y\r\n.\r\n").as_bytes());
    assert_reply(&client.reply(), 554, "5.6.0");
    client.expect("NOOP", 250, "2.0.0");

    // BDAT content gets the same limit.
    client.mail();
    client.expect("RCPT TO:<long@localhost>", 250, "2.1.5");
    client.send(format!("BDAT 101 LAST\r\n{longest}y\r\n").as_bytes());
    assert_reply(&client.reply(), 554, "5.6.0");

    client.mail();
    client.expect("RCPT TO:<long@localhost>", 250, "2.1.5");
    assert_eq!(client.command("DATA").code, 354);
    assert_queued(&client.command(&format!("{longest}\r\n.")));
    wait_for_messages(&moat, "long", 1);
    assert_eq!(all_delivered(&moat).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Bare newlines and smuggling

#[test]
fn a_bare_lf_in_data_gets_521_closes_and_delivers_nothing() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "victim@localhost");
    assert_eq!(client.command("DATA").code, 354);

    client.send(b"Subject: a\r\n\r\na\n.\nb\r\n.\r\n");

    assert_reply(&client.reply(), 521, "5.5.2");
    client.assert_closed();
    assert_nothing_delivered_for(&moat, "victim");
}

#[test]
fn a_bare_cr_in_data_gets_521_closes_and_delivers_nothing() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "victim@localhost");
    assert_eq!(client.command("DATA").code, 354);

    client.send(b"Subject: a\r\n\r\na\r.\rb\r\n.\r\n");

    assert_reply(&client.reply(), 521, "5.5.2");
    client.assert_closed();
    assert_nothing_delivered_for(&moat, "victim");
}

#[test]
fn a_bare_lf_in_a_command_gets_521_and_closes() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.send(b"NOOP\n");

    assert_reply(&client.reply(), 521, "5.5.2");
    client.assert_closed();
}

#[test]
fn a_bare_cr_in_a_command_gets_521_and_closes() {
    // The command parser skips a CR, so without this refusal `NO\rOP` would run as NOOP.
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.send(b"NO\rOP\r\n");

    assert_reply(&client.reply(), 521, "5.5.2");
    client.assert_closed();
}

#[test]
fn normalize_delivers_a_smuggling_attempt_as_one_message() {
    let moat = start("bare_newline = \"normalize\"");
    let mut client = Client::in_transaction(&moat, "victim@localhost");
    assert_eq!(client.command("DATA").code, 354);

    client.send(
        b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<y@localhost>\r\n\
          DATA\r\n\r\nsmuggled\r\n.\r\n",
    );

    // One reply for the whole of it, then nothing: no smuggled command was run.
    assert_queued(&client.reply());
    assert!(
        client.is_quiet(),
        "the server answered more than the one message"
    );
    client.expect("NOOP", 250, "2.0.0");

    let delivered = wait_for_messages(&moat, "victim", 1);
    let message = fs::read(&delivered[0]).expect("read the delivered message");
    let text = String::from_utf8_lossy(&message);
    assert!(
        text.contains("\r\nsmuggled\r\n"),
        "the tail is not content: {text:?}"
    );
    assert!(
        text.contains("\r\nMAIL FROM:<x@example.org>\r\n"),
        "{text:?}"
    );
    assert!(maildir_new(&moat.maildir("localhost", "y")).is_empty());
    thread::sleep(QUIET);
    assert_eq!(
        all_delivered(&moat).len(),
        1,
        "a second message was delivered"
    );
}

#[test]
fn normalize_does_not_end_data_at_crlf_dot_lf() {
    let moat = start("bare_newline = \"normalize\"");
    let mut client = Client::in_transaction(&moat, "victim@localhost");
    assert_eq!(client.command("DATA").code, 354);

    client.send(b"Subject: a\r\n\r\nfirst\r\n.\n");
    assert!(client.is_quiet(), "CRLF.LF ended DATA");
    client.send(b"second\r\n.\r\n");
    assert_queued(&client.reply());

    let delivered = wait_for_messages(&moat, "victim", 1);
    let message = fs::read(&delivered[0]).expect("read the delivered message");
    assert!(
        message.ends_with(b"\r\n\r\nfirst\r\n.\r\nsecond\r\n"),
        "{:?}",
        String::from_utf8_lossy(&message)
    );
}

#[test]
fn normalize_takes_a_bare_lf_command_as_crlf() {
    let moat = start("bare_newline = \"normalize\"");
    let mut client = Client::greeted(&moat);

    client.send(b"NOOP\n");

    assert_reply(&client.reply(), 250, "2.0.0");
}

#[test]
fn normalize_still_refuses_a_bare_cr_in_a_command() {
    let moat = start("bare_newline = \"normalize\"");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.send(b"RCPT TO:<victim@local\rhost>\r\n");

    assert_reply(&client.reply(), 521, "5.5.2");
    client.assert_closed();
}

// ---------------------------------------------------------------------------------------------
// STARTTLS

#[test]

fn starttls_with_a_parameter_gets_501() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("STARTTLS now", 501, "5.5.4");
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let moat = start("");

    let transcript = smtp_raw(
        &moat,
        &[
            "reply",
            "send:EHLO client.example.com\\r\\n",
            "reply",
            "send:STARTTLS\\r\\nNOOP\\r\\n",
            "reply",
            "quiet:500",
            "starttls",
            "send:EHLO client.example.com\\r\\n",
            "reply",
            "send:QUIT\\r\\n",
            "reply",
            "eof",
        ],
    );

    assert_eq!(transcript[2], "reply 220 2.0.0 Ready to start TLS");
    // The NOOP is answered neither in plain text nor over TLS: the first reply over TLS is the
    // EHLO's, and it no longer offers STARTTLS.
    assert_eq!(transcript[3], "quiet");
    assert!(transcript[4].starts_with("tls TLSv1."), "{transcript:?}");
    assert!(
        transcript[5].starts_with(&format!("reply 250 {HOST} | ")),
        "{transcript:?}"
    );
    assert!(!transcript[5].contains("STARTTLS"), "{transcript:?}");
    assert_eq!(transcript[6], "reply 221 2.0.0 Bye");
    assert_eq!(transcript[7], "eof");
}

#[test]
fn starttls_forgets_the_ehlo_before_it() {
    let moat = start("");

    let transcript = smtp_raw(
        &moat,
        &[
            "reply",
            "send:EHLO client.example.com\\r\\n",
            "reply",
            "send:STARTTLS\\r\\n",
            "reply",
            "starttls",
            &format!("send:MAIL FROM:<{SENDER}>\\r\\n"),
            "reply",
            "send:STARTTLS\\r\\n",
            "reply",
        ],
    );

    // RFC 3207 section 4.2: the client must say EHLO again over TLS.
    assert!(
        transcript[4].starts_with("reply 503 5.5.1 "),
        "{transcript:?}"
    );
    assert!(
        transcript[5].starts_with("reply 503 5.5.1 "),
        "{transcript:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// BDAT

#[test]
fn bdat_0_last_after_rcpt_queues_the_message() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "chunked@localhost");

    assert_queued(&client.command("BDAT 0 LAST"));
}

#[test]
fn bdat_without_mail_gets_503_and_its_chunk_is_not_run() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    // The 10 octets of the chunk are "QUIT\r\nQUIT"; the NOOP after them is the next command.
    client.send(b"BDAT 10\r\nQUIT\r\nQUITNOOP\r\n");

    assert_reply(&client.reply(), 503, "5.5.1");
    assert_reply(&client.reply(), 250, "2.0.0");
    assert!(client.is_quiet());
    client.expect("QUIT", 221, "2.0.0");
}

#[test]
fn data_after_a_bdat_chunk_gets_503() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "chunked@localhost");
    client.send(b"BDAT 7\r\nhello\r\n");
    assert_reply(&client.reply(), 250, "2.0.0");

    client.expect("DATA", 503, "5.5.1");

    // The transaction survives the refused DATA and ends with the next chunk.
    client.send(b"BDAT 7 LAST\r\nworld\r\n");
    assert_queued(&client.reply());
    let delivered = wait_for_messages(&moat, "chunked", 1);
    let message = fs::read(&delivered[0]).expect("read the delivered message");
    assert!(message.ends_with(b"\r\nhello\r\nworld\r\n"));
}

// ---------------------------------------------------------------------------------------------
// Content budget: octets of content held in memory by all sessions together

/// A budget of 100 KiB (and the same size limit, the least the budget may be).
const TINY_BUDGET: &str = "max_message_size = 102400\nmax_content_in_memory = 102400";

/// Octets the first session holds while the second one sends: a BDAT chunk answered 250 is
/// held until the transaction ends, so the budget's use is known when the second one starts.
const HELD: usize = 70_000;

/// Opens a session that holds [`HELD`] octets of the budget in a BDAT chunk not yet LAST.
fn holding_session(moat: &Moat) -> Client {
    let mut holder = Client::in_transaction(moat, "holder@localhost");
    holder.send(format!("BDAT {HELD}\r\n").as_bytes());
    holder.send(&content_of_size(HELD));
    assert_reply(&holder.reply(), 250, "2.0.0");
    holder
}

/// Sends one message by DATA in an open transaction and returns the reply to its final dot,
/// having checked that nothing was answered before the dot.
fn data_reply(client: &mut Client, size: usize) -> common::Reply {
    assert_eq!(client.command("DATA").code, 354);
    client.send(&content_of_size(size));
    assert!(client.is_quiet(), "a reply came before the final dot");
    client.command(".")
}

#[test]
fn data_over_the_content_budget_gets_452_after_the_dot_and_the_budget_comes_back() {
    let moat = start(&format!(
        "{TINY_BUDGET}\n[metrics]\nlisten = \"127.0.0.1:0\""
    ));
    let mut holder = holding_session(&moat);
    let mut client = Client::in_transaction(&moat, "fits@localhost");

    // 32,400 octets are left: a message of 10,000 fits.
    assert_queued(&data_reply(&mut client, 10_000));

    // 40,000 does not: refused after its dot, and the session goes on.
    client.mail();
    client.expect("RCPT TO:<over@localhost>", 250, "2.1.5");
    assert_reply(&data_reply(&mut client, 40_000), 452, "4.3.1");
    client.expect("NOOP", 250, "2.0.0");

    // A small message after the refusal is taken.
    client.mail();
    client.expect("RCPT TO:<fits@localhost>", 250, "2.1.5");
    assert_queued(&data_reply(&mut client, 5_000));

    // Once the holder's session ends its 70,000 octets are back: 90,000 fits.
    holder.expect("QUIT", 221, "2.0.0");
    client.mail();
    client.expect("RCPT TO:<fits@localhost>", 250, "2.1.5");
    assert_queued(&data_reply(&mut client, 90_000));

    wait_for_messages(&moat, "fits", 3);
    thread::sleep(QUIET);
    assert!(maildir_new(&moat.maildir("localhost", "over")).is_empty());
    assert!(maildir_new(&moat.maildir("localhost", "holder")).is_empty());
    let log = moat.log();
    let warning = log
        .lines()
        .find(|line| line.contains("WARN") && line.contains("insufficient_storage"));
    let warning = warning.unwrap_or_else(|| panic!("no warning for the refusal in:\n{log}"));
    assert!(warning.contains("limit=102400"), "{warning}");
    assert!(warning.contains("in_use="), "{warning}");
    assert!(warning.contains("wanted="), "{warning}");

    // The refusal is counted on the metrics endpoint, and nothing is held once all is spooled.
    let metrics = service_addrs(&log, "metrics")[0];
    let mut stream = std::net::TcpStream::connect(metrics).expect("connect to metrics");
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).expect("read metrics");
    assert!(
        body.contains("moat_smtp_insufficient_storage_total 1\n"),
        "{body}"
    );
    assert!(
        body.contains("moat_smtp_content_in_memory_limit_bytes 102400\n"),
        "{body}"
    );
}

#[test]
fn a_declared_size_is_checked_at_mail_but_not_held() {
    let moat = start(TINY_BUDGET);

    // A client that declares a size and then stalls ties up nothing: otherwise a few such
    // sessions, each sending NOOP now and then, would refuse everyone else's mail.
    let mut stalling = Client::greeted(&moat);
    stalling.expect(&format!("MAIL FROM:<{SENDER}> SIZE=90000"), 250, "2.1.0");
    stalling.expect("NOOP", 250, "2.0.0");

    let mut client = Client::in_transaction(&moat, "fits@localhost");
    assert_queued(&data_reply(&mut client, 90_000));
}

#[test]
fn bdat_over_the_content_budget_gets_452_and_the_transaction_fails() {
    let moat = start(TINY_BUDGET);
    let _holder = holding_session(&moat);
    let mut client = Client::in_transaction(&moat, "over@localhost");

    // One chunk over what is left.
    client.send(b"BDAT 40000 LAST\r\n");
    client.send(&content_of_size(40_000));
    assert_reply(&client.reply(), 452, "4.3.1");
    client.expect("NOOP", 250, "2.0.0");

    // Two chunks over only together: the second is refused, and so is every chunk after it,
    // read and dropped, until LAST.
    client.mail();
    client.expect("RCPT TO:<over@localhost>", 250, "2.1.5");
    client.send(b"BDAT 20000\r\n");
    client.send(&content_of_size(20_000));
    assert_reply(&client.reply(), 250, "2.0.0");
    client.send(b"BDAT 20000\r\n");
    client.send(&content_of_size(20_000));
    assert_reply(&client.reply(), 452, "4.3.1");
    client.send(b"BDAT 6 LAST\r\nNOOP\r\n");
    assert_reply(&client.reply(), 452, "4.3.1");
    assert!(client.is_quiet(), "the last chunk was run as a command");

    // A SIZE declared at MAIL that does not fit is refused at once (RFC 1870 section 6).
    client.expect(&format!("MAIL FROM:<{SENDER}> SIZE=40000"), 452, "4.3.1");
    client.expect(&format!("MAIL FROM:<{SENDER}> SIZE=20000"), 250, "2.1.0");
    client.expect("RCPT TO:<fits@localhost>", 250, "2.1.5");
    client.send(b"BDAT 20000 LAST\r\n");
    client.send(&content_of_size(20_000));
    assert_queued(&client.reply());

    wait_for_messages(&moat, "fits", 1);
    thread::sleep(QUIET);
    assert!(maildir_new(&moat.maildir("localhost", "over")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Message content of exactly `size` octets (at least 2), in CRLF lines of at most 200 octets,
/// without the end-of-data mark.
fn content_of_size(size: usize) -> Vec<u8> {
    assert!(size >= 2, "a CRLF line needs 2 octets");
    let mut content = Vec::with_capacity(size);
    while size - content.len() >= 200 {
        content.extend_from_slice(&[b'x'; 98]);
        content.extend_from_slice(b"\r\n");
    }
    let rest = size - content.len();
    content.extend(std::iter::repeat_n(b'y', rest - 2));
    content.extend_from_slice(b"\r\n");
    content
}

/// Proves a refused message was never spooled: a message sent after it, in a new session, is
/// delivered while the refused one's Maildir stays empty.
fn assert_nothing_delivered_for(moat: &Moat, local: &str) {
    let mut control = Client::in_transaction(moat, "control@localhost");
    assert_eq!(control.command("DATA").code, 354);
    assert_queued(&control.command("Subject: control\r\n\r\nbody\r\n."));
    wait_for_messages(moat, "control", 1);
    thread::sleep(QUIET);

    assert!(maildir_new(&moat.maildir("localhost", local)).is_empty());
    assert_eq!(all_delivered(moat).len(), 1);
}

/// Runs `tests/support/smtp_raw.py` against Moat with `steps` and returns its output lines.
fn smtp_raw(moat: &Moat, steps: &[&str]) -> Vec<String> {
    let addr = moat.smtp_addr;
    let mut args = vec![addr.ip().to_string(), addr.port().to_string()];
    args.extend(steps.iter().map(|step| step.to_string()));
    python_ok("smtp_raw.py", &args)
        .lines()
        .map(str::to_owned)
        .collect()
}
