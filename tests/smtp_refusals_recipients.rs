//! Refusals of recipients, seen by a raw client over loopback: the recipient limit, an unknown
//! user of a listed domain, relaying (also to a destination hidden in the local part or behind a
//! source route), postmaster and the null forward-path. Each test checks the exact reply code
//! and enhanced status code (RFC 3463).
//!
//! The expected codes are those of the refusal table in `gateway/src/reply.rs`. Each test starts
//! its own `moat serve` with the one limit it needs set small, so a test takes about a second.
//! The client, `tests/common/raw.rs`, is std's `TcpStream`, so bytes go out exactly as written.

mod common;

use common::raw::{Client, HOST, all_delivered, assert_queued, start, wait_for_messages};
use common::{Moat, TempDir, write_file};

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

    // An address literal is valid syntax naming a host that is none of our domains.
    client.expect("RCPT TO:<rcpt@[192.0.2.1]>", 554, "5.7.1");
    client.expect("RCPT TO:<rcpt@[IPv6:2001:db8::1]>", 554, "5.7.1");
    client.expect("RCPT TO:<rcpt@[192.0.2.999]>", 501, "5.1.3");
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
    // A route through an address literal is dropped too (RFC 5321 section 4.1.1.3), and the
    // repeated recipient gets one copy.
    client.expect("RCPT TO:<@[192.0.2.1]:u@localhost>", 250, "2.1.5");
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
