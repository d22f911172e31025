//! Every limit and refusal of the SMTP server, seen by a raw client over loopback: the exact reply
//! code and enhanced status code (RFC 3463), and whether the session goes on or is closed.
//!
//! The expected codes are those of the refusal table in `gateway/src/reply.rs`. Each test starts
//! its own `moat serve` with the one limit it needs set small, so a test takes about a second;
//! the slowest are the timeouts (1 s) and the pre-greet wait (2 s). The client is std's
//! `TcpStream`, so bytes go out exactly as written: bare LFs, pipelined batches, BDAT chunks.
//! Only STARTTLS needs a TLS client; that transcript runs through `tests/support/smtp_raw.py`.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::{Moat, Reply, TempDir, maildir_new, python_ok, wait_until, write_file};

/// The server's name in these tests, so that replies naming it can be recognised.
const HOST: &str = "mx.example.com";

/// The reverse-path of every test transaction.
const SENDER: &str = "sender@example.org";

/// The longest wait for a reply or for the server to close. Every timeout under test is 1 or 2
/// seconds, so only a server that hangs reaches it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a delivery to the Maildir may take after the 250; it is normally a few milliseconds.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// How long the client waits to be sure the server sends nothing.
const QUIET: Duration = Duration::from_millis(300);

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
// Recipients

#[test]
fn more_recipients_than_the_limit_get_452() {
    let moat = start("max_recipients = 2");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<one@localhost>", 250, "2.1.5");
    client.expect("RCPT TO:<two@localhost>", 250, "2.1.5");
    client.expect("RCPT TO:<three@localhost>", 452, "4.5.3");
}

#[test]
fn an_unknown_user_of_a_listed_domain_gets_550() {
    let lists = TempDir::new("recipients");
    let list = write_file(lists.path(), "localhost.recipients", "alice\n# bob left\n");
    let moat = Moat::start(&format!(
        "hostname = \"{HOST}\"\n\n[[domain]]\nname = \"localhost\"\n\
         route = \"maildir:MAILDIR_ROOT\"\nrecipients = \"{}\"\n",
        list.display()
    ));
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<Alice@localhost>", 250, "2.1.5");
    client.expect("RCPT TO:<bob@localhost>", 550, "5.1.1");
}

#[test]
fn another_domain_is_relay_denied_with_554() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<rcpt@other.example>", 554, "5.7.1");
    client.expect("RCPT TO:<rcpt@localhost.other.example>", 554, "5.7.1");
}

#[test]
fn another_destination_hidden_in_the_local_part_is_relay_denied() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    for hidden in [
        "<u%other.example@localhost>",
        "<other.example!u@localhost>",
        "<\"u@other.example\"@localhost>",
    ] {
        // The reply names the address, so a failure shows which form got through.
        client.expect(&format!("RCPT TO:{hidden}"), 554, "5.7.1");
    }
}

#[test]
fn a_source_route_is_stripped_and_the_final_domain_judged() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<@localhost:u@other.example>", 554, "5.7.1");
    client.expect("RCPT TO:<@other.example:u@localhost>", 250, "2.1.5");
    assert_eq!(client.command("DATA").code, 354);
    assert_queued(&client.command("Subject: routed\r\n\r\nbody\r\n."));

    // The route was dropped: the message is u@localhost's, and nothing left for other.example.
    wait_for_messages(&moat, "u", 1);
    assert_eq!(all_delivered(&moat).len(), 1);
}

#[test]
fn a_bare_postmaster_is_accepted() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<postmaster>", 250, "2.1.5");
    client.expect("RCPT TO:<PostMaster>", 250, "2.1.5");
}

#[test]

fn postmaster_is_accepted_even_when_the_recipient_list_omits_it() {
    // RFC 5321 section 4.5.1: a server that delivers mail MUST accept the reserved mailbox
    // postmaster, case-insensitively, for each domain it handles.
    let lists = TempDir::new("recipients");
    let list = write_file(lists.path(), "localhost.recipients", "alice\n");
    let moat = Moat::start(&format!(
        "hostname = \"{HOST}\"\n\n[[domain]]\nname = \"localhost\"\n\
         route = \"maildir:MAILDIR_ROOT\"\nrecipients = \"{}\"\n",
        list.display()
    ));
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<postmaster>", 250, "2.1.5");
    client.expect("RCPT TO:<Postmaster@localhost>", 250, "2.1.5");
}

#[test]
fn a_null_forward_path_gets_501() {
    let moat = start("");
    let mut client = Client::greeted(&moat);
    client.mail();

    client.expect("RCPT TO:<>", 501, "5.1.3");
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
// Helpers

/// Starts Moat with the name [`HOST`] and `smtp` as the body of its `[smtp]` table.
fn start(smtp: &str) -> Moat {
    Moat::start(&format!("hostname = \"{HOST}\"\n\n[smtp]\n{smtp}\n"))
}

/// Asserts the reply code and that every line carries the enhanced status code (RFC 2034
/// section 4 repeats it on each line); `""` for replies that carry none.
fn assert_reply(reply: &Reply, code: u16, status: &str) {
    assert_eq!(reply.code, code, "unexpected reply {reply:?}");
    if status.is_empty() {
        return;
    }
    for line in &reply.lines {
        assert!(
            line.strip_prefix(status)
                .is_some_and(|rest| rest.starts_with(' ')),
            "reply {code} does not carry {status} on every line: {reply:?}"
        );
    }
}

/// Asserts a 250 that names the queue id the message was spooled under.
fn assert_queued(reply: &Reply) {
    assert_reply(reply, 250, "2.0.0");
    let id = reply.lines[0].strip_prefix("2.0.0 Ok: queued as ");
    assert!(
        id.is_some_and(|id| !id.is_empty()),
        "no queue id in {reply:?}"
    );
}

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

/// Waits until `local@localhost` has `count` messages and returns them.
fn wait_for_messages(moat: &Moat, local: &str, count: usize) -> Vec<PathBuf> {
    let maildir = moat.maildir("localhost", local);
    let what = format!("{count} message(s) in {}", maildir.display());
    wait_until(DELIVERY_DEADLINE, &what, || {
        maildir_new(&maildir).len() >= count
    });
    maildir_new(&maildir)
}

/// Every message delivered under the Maildir root, for any domain and user.
fn all_delivered(moat: &Moat) -> Vec<PathBuf> {
    let subdirectories = |dir: PathBuf| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    subdirectories(moat.data_dir.join("mail"))
        .into_iter()
        .flat_map(subdirectories)
        .flat_map(|maildir| maildir_new(&maildir))
        .collect()
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

/// Connects until a session is greeted with 220 rather than refused.
fn wait_for_greeting(moat: &Moat) {
    wait_until(
        Duration::from_secs(10),
        "a session to be admitted again",
        || Client::connect(moat.smtp_addr).reply().code == 220,
    );
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

/// A raw SMTP client: bytes go out exactly as given; replies, silence and the close are checked.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects without reading the greeting.
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        let writer = stream.try_clone().expect("clone a TCP stream");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects, reads the 220 greeting and says EHLO.
    fn greeted(moat: &Moat) -> Client {
        let mut client = Client::connect(moat.smtp_addr);
        assert_reply(&client.reply(), 220, "");
        client.expect("EHLO client.example.com", 250, "");
        client
    }

    /// A greeted client with MAIL from [`SENDER`] and one accepted recipient.
    fn in_transaction(moat: &Moat, recipient: &str) -> Client {
        let mut client = Client::greeted(moat);
        client.mail();
        let rcpt = format!("RCPT TO:<{recipient}>");
        client.expect(&rcpt, 250, "2.1.5");
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the SMTP server");
    }

    /// Sends `line` with CRLF and reads the reply.
    fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line` and asserts the reply's code and enhanced status, as [`assert_reply`].
    fn expect(&mut self, line: &str, code: u16, status: &str) {
        let reply = self.command(line);
        assert_reply(&reply, code, status);
    }

    /// Opens a transaction with MAIL from [`SENDER`].
    fn mail(&mut self) {
        self.expect(&format!("MAIL FROM:<{SENDER}>"), 250, "2.1.0");
    }

    /// Reads one reply, single- or multi-line; panics if the server closes or stays silent.
    fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line);
            let read = read.unwrap_or_else(|e| panic!("read a reply line: {e}; so far {lines:?}"));
            assert!(
                read > 0,
                "the server closed the connection; lines so far: {lines:?}"
            );
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line.get(..3).and_then(|code| code.parse::<u16>().ok());
            let code = code.unwrap_or_else(|| panic!("not an SMTP reply line: {line:?}"));
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, lines };
            }
        }
    }

    /// Whether the server sends nothing for [`QUIET`].
    fn is_quiet(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(QUIET))
            .expect("set a read timeout");
        let quiet = match self.reader.fill_buf() {
            Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            Ok(_) => false,
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        quiet
    }

    /// Asserts that the server closes the connection with nothing more to say.
    fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "more after the last reply: {rest:?}"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(rest.is_empty(), "more after the last reply: {rest:?}");
            }
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}
