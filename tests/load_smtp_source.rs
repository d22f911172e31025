//! Load: Postfix's smtp-source sends 10,000 messages over 20 sessions, and each one reaches the
//! Maildir exactly once, with the queue empty at the end.
//!
//! This is not a timing test. The deadline only keeps a stuck run from hanging the suite, and it
//! is generous because the test machine may be small and busy. smtp-source comes with Debian's
//! postfix package; the test fails, saying so, when it is missing.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Moat, files_in, queued_messages};

/// Messages sent in all.
const MESSAGES: usize = 10_000;
/// smtp-source sessions in parallel.
const SESSIONS: usize = 20;
/// Body size of each message, in octets (smtp-source -l).
const BODY_SIZE: usize = 1_024;
/// Time allowed for sending and delivering everything: a debug build on a busy 2-core machine
/// needs under a minute, so only a stuck server reaches it.
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
    let deadline = started + DEADLINE;

    // smtp-source exits non-zero on the first reply that is not the expected one, so a clean
    // exit means every message got its 250. Its output goes to a file, not a pipe that nobody
    // would read while we wait.
    let source_log = moat.dir().join("smtp-source.log");
    let log_file = File::create(&source_log).expect("create smtp-source's log");
    let mut source = Command::new("smtp-source")
        .args(["-s", &SESSIONS.to_string(), "-m", &MESSAGES.to_string()])
        .args(["-l", &BODY_SIZE.to_string(), "-M", "client.example.org"])
        .args([
            "-f",
            "sender@example.org",
            "-t",
            &format!("{LOCAL_PART}@{DOMAIN}"),
        ])
        .arg(moat.smtp_addr.to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone a file handle"))
        .stderr(log_file)
        .spawn()
        .expect("smtp-source runs (Debian package postfix)");
    let status = loop {
        if let Some(status) = source.try_wait().expect("smtp-source status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = source.kill();
            break source.wait().expect("smtp-source status");
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "smtp-source failed ({status}):\n{}\nmoat log ends:\n{}",
        fs::read_to_string(&source_log).unwrap_or_default(),
        log_tail(&moat)
    );
    eprintln!("smtp-source finished after {:?}", started.elapsed());

    let maildir = moat.maildir(DOMAIN, LOCAL_PART);
    let queue = moat.data_dir.join("queue");
    let delivered = wait_until_delivered(&maildir, &queue, deadline);
    eprintln!(
        "{delivered} messages delivered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        delivered,
        MESSAGES,
        "messages in {}\n{}",
        maildir.display(),
        log_tail(&moat)
    );

    // The queue is empty, so nothing more can arrive; look once more after a pause all the same,
    // so that a late duplicate from a delivery the queue had already forgotten would show.
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
    let leftovers = files_in(&maildir.join("tmp"));
    assert!(
        leftovers.is_empty(),
        "partial files left in the Maildir's tmp: {leftovers:?}"
    );
    for file in message_files(&maildir) {
        let size = fs::metadata(&file).map_or(0, |meta| meta.len());
        assert!(
            size > BODY_SIZE as u64,
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

/// The last lines of Moat's log: the whole log has a line per delivery, too many for a panic
/// message. The harness keeps the directory with the full log when a test fails.
fn log_tail(moat: &Moat) -> String {
    let log = moat.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
