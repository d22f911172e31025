//! Refusals of the SMTP session itself, seen by a raw client over loopback: the pre-greet wait,
//! command lines and their order, syntax, the error limit, timeouts and concurrent sessions. Each
//! test checks the exact reply code and enhanced status code (RFC 3463), and whether the session
//! goes on or is closed; and what a shutdown (SIGTERM) tells the sessions open at that moment.
//!
//! The expected codes are those of the refusal table in `gateway/src/reply.rs`. Each test starts
//! its own `moat serve` with the one limit it needs set small, so a test takes about a second.
//! The client, `tests/common/raw.rs`, is std's `TcpStream`, so bytes go out exactly as written.
//! The slowest tests are the timeouts (1 s) and the pre-greet wait (2 s).

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::raw::{Client, SENDER, assert_queued, assert_reply, start, wait_for_messages};
use common::{Moat, wait_until};

/// The pre-greet wait of the pre-greet tests: long enough to measure, short enough to keep the
/// test quick.
const PREGREET_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Pre-greet test

#[test]
fn a_client_talking_before_the_greeting_gets_554_and_is_dropped() {
    let moat = start("pregreet_wait = \"2s\"");

    let mut client = Client::connect(moat.smtp_addr);
    client.send(b"EHLO client.example.com\r\n");

    assert_reply(&client.reply(), 554, "5.5.1");
    client.assert_closed();
}

#[test]
fn a_silent_client_is_greeted_after_the_wait_and_then_at_once() {
    let moat = start("pregreet_wait = \"2s\"");

    let started = Instant::now();
    let mut first = Client::connect(moat.smtp_addr);
    assert_eq!(first.reply().code, 220);
    let waited = started.elapsed();
    assert!(
        waited >= PREGREET_WAIT - Duration::from_millis(100),
        "the first greeting came after {waited:?}, before the pre-greet wait"
    );
    assert_eq!(first.command("QUIT").code, 221);

    // The address passed: the next connection from it is greeted without the wait.
    let started = Instant::now();
    let mut second = Client::connect(moat.smtp_addr);
    assert_eq!(second.reply().code, 220);
    let waited = started.elapsed();
    assert!(
        waited < PREGREET_WAIT / 2,
        "the second greeting took {waited:?}: the pass was not remembered"
    );
}

// ---------------------------------------------------------------------------------------------
// Command lines and sequence

#[test]
fn a_command_line_over_the_limit_gets_500_and_the_session_goes_on() {
    let moat = start("max_command_line = 64");
    let mut client = Client::greeted(&moat);

    // 64 octets with the CRLF is the longest line allowed; one more is too long.
    let longest = format!("NOOP {}", "x".repeat(64 - 7));
    client.expect(&longest, 250, "2.0.0");
    let too_long = format!("NOOP {}", "x".repeat(64 - 6));
    client.expect(&too_long, 500, "5.5.2");

    // A line far over the limit, arriving in many reads, is dropped up to its end.
    let far_too_long = format!("NOOP {}", "x".repeat(200_000));
    client.expect(&far_too_long, 500, "5.5.2");
    client.expect("NOOP", 250, "2.0.0");
}

#[test]
fn an_unknown_command_gets_500() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("XYZZY plugh", 500, "5.5.2");
    client.expect("NOOP", 250, "2.0.0");
}

#[test]
fn rcpt_before_mail_gets_503() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("RCPT TO:<rcpt@localhost>", 503, "5.5.1");
}

#[test]
fn data_before_mail_gets_503() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("DATA", 503, "5.5.1");
    client.expect("NOOP", 250, "2.0.0");
}

#[test]
fn data_without_an_accepted_recipient_gets_554() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();
    client.expect("RCPT TO:<rcpt@other.example>", 554, "5.7.1");

    // RFC 5321 section 3.3 allows 503 or 554 "no valid recipients" here; Moat gives the second.
    client.expect("DATA", 554, "5.5.1");
    client.expect("NOOP", 250, "2.0.0");
}

#[test]
fn mail_before_helo_gets_503() {
    let moat = start("");
    let mut client = Client::connect(moat.smtp_addr);
    assert_eq!(client.reply().code, 220);

    client.expect(&format!("MAIL FROM:<{SENDER}>"), 503, "5.5.1");
}

#[test]
fn a_nested_mail_gets_503() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("MAIL FROM:<other@example.org>", 503, "5.5.1");
}

#[test]
fn syntax_errors_get_501() {
    let moat = start("");
    let mut client = Client::connect(moat.smtp_addr);
    assert_eq!(client.reply().code, 220);

    client.expect("EHLO", 501, "5.5.4");
    client.expect("EHLO client.example.com", 250, "");
    client.expect(&format!("MAIL FROM:{SENDER}"), 501, "5.5.4");
    client.expect("MAIL FROM:<no-domain>", 501, "5.1.7");
    client.mail();
    client.expect("RCPT TO:rcpt@localhost", 501, "5.5.4");
    client.expect("RCPT TO:<a..b@localhost>", 501, "5.1.3");
    client.expect("VRFY", 501, "5.5.4");
}

#[test]
fn data_rset_and_quit_with_a_parameter_get_501_and_the_transaction_goes_on() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "user@localhost");

    client.expect("DATA please", 501, "5.5.4");
    client.expect("RSET now", 501, "5.5.4");
    client.expect("QUIT later", 501, "5.5.4");

    // None of them took effect: the recipient is still there, and trailing blanks are fine.
    client.expect("DATA  ", 354, "");
    client.send(b"Subject: still one transaction\r\n\r\nbody\r\n.\r\n");
    assert_queued(&client.reply());
}

#[test]
fn a_command_that_is_not_utf8_gets_500_even_with_smtputf8() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.expect("MAIL FROM:<sender@example.org> SMTPUTF8", 250, "2.1.0");

    // \xff never occurs in UTF-8; \xc3 alone starts a sequence that does not end.
    for bad in [
        &b"RCPT TO:<\xff@localhost>\r\n"[..],
        b"RCPT TO:<caf\xc3@localhost>\r\n",
    ] {
        client.send(bad);
        assert_reply(&client.reply(), 500, "5.5.2");
    }
    client.expect("RCPT TO:<caf\u{e9}@localhost>", 250, "2.1.5");
}

#[test]
fn vrfy_gets_252() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("VRFY rcpt@localhost", 252, "2.5.2");
}

#[test]
fn expn_and_auth_get_502() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("EXPN staff", 502, "5.5.1");
    client.expect("AUTH PLAIN", 502, "5.5.1");
}

#[test]
fn help_gets_214() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.expect("HELP", 214, "2.0.0");
}

#[test]
fn noop_and_rset_get_250() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("NOOP", 250, "2.0.0");
    client.expect("RSET", 250, "2.0.0");
    // RSET ended the transaction, so a new MAIL is not nested.
    client.mail();
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let moat = start("");
    let mut client = Client::greeted(&moat);

    client.send(
        format!(
            "MAIL FROM:<{SENDER}>\r\nRCPT TO:<rcpt@localhost>\r\nRCPT TO:<rcpt@other.example>\r\n\
             DATA\r\n"
        )
        .as_bytes(),
    );

    assert_reply(&client.reply(), 250, "2.1.0");
    assert_reply(&client.reply(), 250, "2.1.5");
    assert_reply(&client.reply(), 554, "5.7.1");
    assert_eq!(client.reply().code, 354);
}

// ---------------------------------------------------------------------------------------------
// Errors, timeouts and concurrent sessions

#[test]
fn a_session_with_too_many_errors_gets_421_and_is_closed() {
    let moat = start("max_errors = 3");
    let mut client = Client::greeted(&moat);

    client.expect("XYZZY", 500, "5.5.2");
    client.expect("RCPT TO:<rcpt@localhost>", 503, "5.5.1");
    // The third error is answered, then the session is dropped.
    client.expect("XYZZY", 500, "5.5.2");
    assert_reply(&client.reply(), 421, "4.7.0");
    client.assert_closed();
}

#[test]
fn a_silent_client_gets_421_after_the_command_timeout() {
    let moat = start("command_timeout = \"1s\"");
    let mut client = Client::greeted(&moat);

    let started = Instant::now();
    assert_reply(&client.reply(), 421, "4.4.2");
    assert!(started.elapsed() >= Duration::from_millis(900));
    client.assert_closed();
}

#[test]
fn a_client_stalling_in_data_gets_421_after_the_data_timeout() {
    let moat = start("data_timeout = \"1s\"");
    let mut client = Client::in_transaction(&moat, "stall@localhost");
    assert_eq!(client.command("DATA").code, 354);

    client.send(b"Subject: stalled\r\n\r\nhalf a messa");

    assert_reply(&client.reply(), 421, "4.4.2");
    client.assert_closed();
}

#[test]
fn a_client_stalling_in_a_bdat_chunk_gets_421_after_the_data_timeout() {
    let moat = start("data_timeout = \"1s\"");
    let mut client = Client::in_transaction(&moat, "stall@localhost");

    client.send(b"BDAT 100 LAST\r\nSubject: stalled\r\n");

    assert_reply(&client.reply(), 421, "4.4.2");
    client.assert_closed();
}

#[test]
fn a_third_session_from_one_address_gets_421_when_two_are_allowed() {
    let moat = start("max_sessions_per_ip = 2");
    let first = Client::greeted(&moat);
    let _second = Client::greeted(&moat);

    let mut third = Client::connect(moat.smtp_addr);
    assert_reply(&third.reply(), 421, "4.7.0");
    third.assert_closed();

    // The place of a session that ended is given back.
    drop(first);
    wait_for_greeting(&moat);
}

#[test]
fn a_third_session_gets_421_when_two_are_allowed_in_all() {
    let moat = start("max_sessions = 2");
    let first = Client::greeted(&moat);
    let _second = Client::greeted(&moat);

    let mut third = Client::connect(moat.smtp_addr);
    assert_reply(&third.reply(), 421, "4.3.2");
    third.assert_closed();

    drop(first);
    wait_for_greeting(&moat);
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[test]
fn on_sigterm_idle_sessions_get_421_and_a_message_being_received_is_still_spooled() {
    let mut moat = start("");
    let mut idle = Client::greeted(&moat);
    let mut sending = Client::in_transaction(&moat, "user@localhost");
    sending.expect("DATA", 354, "");
    sending.send(b"Subject: sent across a shutdown\r\n\r\nFirst half,\r\n");

    moat.terminate();
    wait_until(
        Duration::from_secs(10),
        "the listening socket to close",
        || TcpStream::connect(moat.smtp_addr).is_err(),
    );

    // A session between commands is told the service is going away (RFC 5321 section 3.8).
    assert_reply(&idle.reply(), 421, "4.3.2");
    idle.assert_closed();

    // The message being received is finished, spooled and acknowledged; then 421.
    sending.send(b"second half.\r\n.\r\n");
    assert_queued(&sending.reply());
    assert_reply(&sending.reply(), 421, "4.3.2");
    sending.assert_closed();

    let status = moat.stop().expect("moat was running");
    assert!(
        status.success(),
        "moat serve exited with {status} after SIGTERM"
    );

    // What was answered 250 is delivered after a restart.
    moat.restart();
    let delivered = wait_for_messages(&moat, "user", 1);
    let content = std::fs::read_to_string(&delivered[0]).expect("read the delivered message");
    assert!(
        content.contains("First half,\r\nsecond half.\r\n"),
        "the message was cut: {content:?}"
    );
}

#[test]
fn on_sigterm_a_message_sent_in_bdat_chunks_may_send_its_last_chunk() {
    let mut moat = start("");
    let mut sending = Client::in_transaction(&moat, "user@localhost");
    let first = b"Subject: chunked\r\n\r\nOne,\r\n";
    sending.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    sending.send(first);
    assert_reply(&sending.reply(), 250, "2.0.0");

    moat.terminate();
    wait_until(
        Duration::from_secs(10),
        "the listening socket to close",
        || TcpStream::connect(moat.smtp_addr).is_err(),
    );

    // The message spans commands; the shutdown waits for its last chunk, then says 421.
    let last = b"two.\r\n";
    sending.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    sending.send(last);
    assert_queued(&sending.reply());
    assert_reply(&sending.reply(), 421, "4.3.2");
    sending.assert_closed();

    moat.stop();
    moat.restart();
    let delivered = wait_for_messages(&moat, "user", 1);
    let content = std::fs::read_to_string(&delivered[0]).expect("read the delivered message");
    assert!(
        content.contains("One,\r\ntwo.\r\n"),
        "the message was cut: {content:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Connects until a session is greeted with 220 rather than refused.
fn wait_for_greeting(moat: &Moat) {
    wait_until(
        Duration::from_secs(10),
        "a session to be admitted again",
        || Client::connect(moat.smtp_addr).reply().code == 220,
    );
}
