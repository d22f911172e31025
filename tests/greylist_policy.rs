//! `moat greylist policy` as Postfix meets it: requests as Postfix sends them over a real
//! socket, several per connection, malformed ones dropped, and state that survives a restart
//! and a `kill -9`.

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::TempDir;

#[path = "support/greylist_harness.rs"]
mod harness;
use harness::{PolicyProcess, postfix_request};

/// A one-second delay keeps the tests short; the window and age keep their order.
const SHORT: &str = "delay = \"1s\"\nretry_window = \"1h\"\nmax_age = \"1d\"
hostname = \"mx.rcpt.example\"\nsync_interval = \"100ms\"";

fn baseline(instance: &str) -> Vec<(String, String)> {
    postfix_request(
        "192.0.2.10",
        "alice@sender.example",
        "bob@rcpt.example",
        instance,
    )
}

fn is_defer(action: &str) -> bool {
    action.starts_with("DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in ")
}

#[test]
fn postfix_requests_are_deferred_then_pass_with_a_header_then_pass_at_once() {
    let dir = TempDir::new("greylist-policy");
    let moat = PolicyProcess::start(dir.path(), SHORT);
    let mut client = moat.client();
    assert_eq!(
        client.ask(&baseline("1")),
        "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 1 seconds"
    );
    thread::sleep(Duration::from_millis(1_100));
    let action = client.ask(&baseline("2"));
    assert!(
        action.starts_with("PREPEND X-Greylist: delayed "),
        "{action}"
    );
    assert!(
        action.ends_with(" seconds by Moat at mx.rcpt.example"),
        "{action}"
    );
    assert_eq!(client.ask(&baseline("3")), "DUNNO");
}

#[test]
fn other_protocol_states_get_dunno_on_the_same_connection() {
    let dir = TempDir::new("greylist-policy-state");
    let moat = PolicyProcess::start(dir.path(), SHORT);
    let mut client = moat.client();
    let mut data = baseline("1");
    data[1].1 = "DATA".to_owned();
    assert_eq!(client.ask(&data), "DUNNO");
    assert!(is_defer(&client.ask(&baseline("1"))));
}

#[test]
fn malformed_requests_close_the_connection_without_a_reply() {
    let dir = TempDir::new("greylist-policy-malformed");
    let moat = PolicyProcess::start(dir.path(), SHORT);
    let malformed: [&[u8]; 4] = [
        b"request=smtpd_access_policy\nno equals sign here\n\n",
        b"request=something_else\nclient_address=192.0.2.1\nrecipient=a@b.example\n\n",
        b"request=smtpd_access_policy\nclient_address=not-an-address\nrecipient=a@b.example\n\n",
        b"request=smtpd_access_policy\nclient_address=192.0.2.1\nsender=a@b.example\n\n",
    ];
    for bytes in malformed {
        let mut client = moat.client();
        client.send(bytes);
        assert!(
            client.closed_without_reply(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut long = b"request=smtpd_access_policy\nsender=".to_vec();
    long.extend(std::iter::repeat_n(b'a', 20_000));
    long.extend_from_slice(b"\n\n");
    let mut client = moat.client();
    client.send(&long);
    assert!(client.closed_without_reply(), "an overlong line");

    // The service goes on answering well-formed requests.
    assert!(is_defer(&moat.client().ask(&baseline("1"))));
}

#[test]
fn restart_keeps_pending_and_passed_triplets() {
    let dir = TempDir::new("greylist-policy-restart");
    let mut moat = PolicyProcess::start(dir.path(), SHORT);
    let pending = postfix_request(
        "192.0.2.10",
        "later@sender.example",
        "bob@rcpt.example",
        "9",
    );
    {
        let mut client = moat.client();
        assert!(is_defer(&client.ask(&baseline("1"))));
        thread::sleep(Duration::from_millis(1_100));
        assert!(client.ask(&baseline("2")).starts_with("PREPEND "));
        assert!(is_defer(&client.ask(&pending)));
    }
    moat.stop();
    assert!(moat.log().contains("greylist counts"), "{}", moat.log());
    moat.restart();
    let mut client = moat.client();
    assert_eq!(client.ask(&baseline("3")), "DUNNO");
    thread::sleep(Duration::from_millis(1_100));
    assert!(
        client.ask(&pending).starts_with("PREPEND "),
        "the pending triplet was lost"
    );
}

#[test]
fn kill_9_keeps_state_older_than_the_sync_interval() {
    let dir = TempDir::new("greylist-policy-kill9");
    let mut moat = PolicyProcess::start(dir.path(), SHORT);
    {
        let mut client = moat.client();
        assert!(is_defer(&client.ask(&baseline("1"))));
        thread::sleep(Duration::from_millis(1_100));
        assert!(client.ask(&baseline("2")).starts_with("PREPEND "));
    }
    // sync_interval is 100 ms: after it, the pass is durable.
    thread::sleep(Duration::from_millis(400));
    moat.kill9();
    moat.restart();
    assert_eq!(moat.client().ask(&baseline("3")), "DUNNO");
}

#[test]
fn a_second_process_on_the_same_store_exits_75_naming_the_holder() {
    let dir = TempDir::new("greylist-policy-in-use");
    let first = PolicyProcess::start(dir.path(), "");

    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["greylist", "policy", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("moat.toml"))
        .arg("--data-dir")
        .arg(&first.data_dir)
        .output()
        .expect("run moat");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("open in another process"), "{stderr}");
    assert_eq!(
        stderr.matches("another process").count(),
        1,
        "said twice: {stderr}"
    );
}

#[test]
fn a_bad_greylist_key_exits_78_naming_it() {
    let dir = TempDir::new("greylist-policy-config");
    let config = dir.path().join("moat.toml");
    std::fs::write(&config, "[greylist]\ndelay = \"soon\"\n").expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["greylist", "policy", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run moat");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("greylist.delay = \"soon\""), "{stderr}");

    std::fs::write(&config, "[greylist]\ndelai = \"5m\"\n").expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["greylist", "policy", "--config"])
        .arg(&config)
        .output()
        .expect("run moat");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("delai"), "{stderr}");
}
