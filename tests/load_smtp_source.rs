//! Load: Postfix's smtp-source sends 10,000 messages over 20 sessions, and each one reaches the
//! Maildir exactly once, with the queue empty at the end.
//!
//! This is not a timing test. The deadline only keeps a stuck run from hanging the suite, and it
//! is generous because the test machine may be small and busy. smtp-source comes with Debian's
//! postfix package; the test fails, saying so, when it is missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Moat;

/// Messages sent in all.
const MESSAGES: usize = 10_000;
/// smtp-source sessions in parallel.
const SESSIONS: usize = 20;
/// Body size of each message, in octets (smtp-source -l).
const BODY_SIZE: usize = 1_024;
/// Time allowed for sending and delivering everything: about twenty times what a 2-core machine
/// needs, so only a stuck server reaches it.
const DEADLINE: Duration = Duration::from_secs(600);

const DOMAIN: &str = "example.com";
const LOCAL_PART: &str = "load";

#[test]
fn ten_thousand_messages_from_smtp_source_are_each_delivered_once() {
    // The harness turns the pregreet delay off; every session comes from 127.0.0.1, so the
    // per-address limit must allow all of them at once.
    let moat = Moat::start(&format!(
        r#"
[smtp]
max_sessions_per_ip = 1000

[[domain]]
name = "{DOMAIN}"
route = "maildir:MAILDIR_ROOT"
"#
    ));
    let started = Instant::now();

    // smtp-source exits non-zero on the first reply that is not the expected one, so a clean
    // exit means every message got its 250.
    let output = Command::new("smtp-source")
        .args(["-s", &SESSIONS.to_string(), "-m", &MESSAGES.to_string()])
        .args(["-l", &BODY_SIZE.to_string(), "-M", "client.example.org"])
        .args([
            "-f",
            "sender@example.org",
            "-t",
            &format!("{LOCAL_PART}@{DOMAIN}"),
        ])
        .arg(moat.smtp_addr.to_string())
        .output()
        .expect("smtp-source runs (Debian package postfix)");
    assert!(
        output.status.success(),
        "smtp-source failed ({}):\n{}{}\nmoat log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        moat.log()
    );
    eprintln!("smtp-source finished after {:?}", started.elapsed());

    let maildir = moat.maildir(DOMAIN, LOCAL_PART);
    let queue = moat.data_dir.join("queue");
    let delivered = wait_until_delivered(&maildir, &queue, started + DEADLINE);
    eprintln!(
        "{delivered} messages delivered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        delivered,
        MESSAGES,
        "messages in {}\nmoat log:\n{}",
        maildir.display(),
        moat.log()
    );

    // The queue is empty, so nothing more can arrive; still, look once more after a pause so a
    // late duplicate from a delivery the queue had already forgotten would show.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        message_files(&maildir).len(),
        MESSAGES,
        "late deliveries after the queue drained"
    );
    assert_eq!(
        queued_messages(&queue),
        Vec::<PathBuf>::new(),
        "messages left in the queue"
    );
    assert!(
        files_in(&maildir.join("tmp")).is_empty(),
        "partial files left in {}/tmp",
        maildir.display()
    );
    for file in message_files(&maildir) {
        let size = fs::metadata(&file).map(|meta| meta.len()).unwrap_or(0);
        assert!(
            size as usize > BODY_SIZE,
            "{} is short: {size} octets",
            file.display()
        );
    }
}

/// Polls until the queue is empty and the Maildir holds at least MESSAGES messages, or the
/// deadline passes; returns the number of messages in the Maildir.
fn wait_until_delivered(maildir: &Path, queue: &Path, deadline: Instant) -> usize {
    loop {
        let delivered = message_files(maildir).len();
        let queued = queued_messages(queue).len();
        if delivered >= MESSAGES && queued == 0 {
            return delivered;
        }
        if Instant::now() > deadline {
            eprintln!("deadline passed: {delivered} delivered, {queued} still queued");
            return delivered;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The delivered messages: files in the Maildir's `new` and `cur`.
fn message_files(maildir: &Path) -> Vec<PathBuf> {
    let mut files = files_in(&maildir.join("new"));
    files.extend(files_in(&maildir.join("cur")));
    files
}

/// Messages still in the queue, whatever their state: every file under the queue directory but
/// those in `tmp` (which Moat removes at start, and which never held an acknowledged message).
fn queued_messages(queue: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(queue) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name() != "tmp" && entry.path().is_dir())
        .flat_map(|entry| files_in(&entry.path()))
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect()
}
