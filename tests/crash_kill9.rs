//! Crash safety: Moat is killed with SIGKILL in the middle of a load and restarted on the same
//! data directory, and every message it had answered 250 is then delivered.
//!
//! The client is tests/support/send_numbered.py: each message has its own Message-ID, and the
//! client writes down each Message-ID the moment its 250 arrives. After the restart and the
//! drain, every one of those must be in the Maildir. Messages whose transaction was cut by the
//! kill carry no promise; the report counts those that arrived anyway.
//!
//! Duplicates are allowed (a delivery that finished just before the kill may be made again after
//! the restart, since the queue file was not yet removed) and are printed, not failed, up to one
//! per delivery that could have been in flight at the kill. More than that means the restart
//! redelivers mail it had already finished with, and the test fails.
//!
//! Each test kills at a different moment of the load; deadlines, not timings, bound them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Moat, repo_root};

/// Messages the client sends in each test.
const MESSAGES: usize = 3_000;
/// Client sessions in parallel.
const SESSIONS: usize = 8;
/// Delivery concurrency configured in Moat: the most deliveries that can be cut by one kill, and
/// so the most duplicates a kill may cause.
const DELIVERY_CONCURRENCY: usize = 20;
/// Time allowed for the whole test: only a stuck server reaches it.
const DEADLINE: Duration = Duration::from_secs(600);

const DOMAIN: &str = "example.com";
const LOCAL_PART: &str = "crash";

#[test]
fn acknowledged_messages_survive_a_kill_early_in_the_load() {
    crash_during_load("early", When::AfterAcks(MESSAGES / 20));
}

#[test]
fn acknowledged_messages_survive_a_kill_in_the_middle_of_the_load() {
    crash_during_load("middle", When::AfterAcks(MESSAGES / 2));
}

#[test]
fn acknowledged_messages_survive_a_kill_while_the_queue_drains() {
    crash_during_load("drain", When::AfterClientFinished);
}

/// The moment of the kill.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Once the client has recorded this many 250 replies.
    AfterAcks(usize),
    /// Right after the client has sent its last message, while deliveries may still be queued.
    AfterClientFinished,
}

fn crash_during_load(name: &str, when: When) {
    let deadline = Instant::now() + DEADLINE;
    let mut moat = Moat::start(&format!(
        r#"
[smtp]
max_sessions_per_ip = 1000

[delivery]
concurrency = {DELIVERY_CONCURRENCY}

[[domain]]
name = "{DOMAIN}"
route = "maildir:MAILDIR_ROOT"
"#
    ));
    let work = moat
        .data_dir
        .parent()
        .expect("data_dir has a parent")
        .join(format!("client-{name}"));
    fs::create_dir_all(&work).expect("client folder");
    let acked_file = work.join("acked");
    let failed_file = work.join("failed");
    let port_file = work.join("port");
    fs::write(&port_file, moat.smtp_addr.port().to_string()).expect("port file");

    let mut client = start_client(name, &port_file, &acked_file, &failed_file);

    // Wait for the moment, then kill.
    match when {
        When::AfterAcks(count) => {
            while lines(&acked_file).len() < count {
                assert!(
                    Instant::now() < deadline,
                    "no {count} acks before the deadline"
                );
                assert!(
                    client.try_wait().expect("client status").is_none(),
                    "client ended early"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        When::AfterClientFinished => {
            let status = wait_for(&mut client, deadline);
            assert!(status.success(), "client failed before the kill: {status}");
        }
    }
    let acked_at_kill = lines(&acked_file).len();
    moat.kill9();
    eprintln!("{name}: killed with {acked_at_kill} messages acknowledged");

    // The client keeps retrying refused connections while Moat is down.
    moat.restart();
    fs::write(&port_file, moat.smtp_addr.port().to_string()).expect("port file");

    let status = wait_for(&mut client, deadline);
    assert!(
        status.success(),
        "client did not send all messages: {status}\n{}",
        moat.log()
    );

    let acked: BTreeSet<String> = lines(&acked_file).into_iter().map(first_field).collect();
    let failed: BTreeSet<String> = lines(&failed_file).into_iter().map(first_field).collect();
    let maildir = moat.maildir(DOMAIN, LOCAL_PART);
    let queue = moat.data_dir.join("queue");
    let delivered = wait_until_delivered(&maildir, &queue, &acked, deadline);

    // Report first, then judge, so a failure shows the whole picture.
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let duplicates: Vec<(&String, &usize)> =
        delivered.iter().filter(|(_, count)| **count > 1).collect();
    let unacked_delivered = failed
        .iter()
        .filter(|id| delivered.contains_key(*id))
        .count();
    let strangers: Vec<&String> = delivered
        .keys()
        .filter(|id| !acked.contains(*id) && !failed.contains(*id))
        .collect();
    eprintln!(
        "{name}: {} acknowledged, {} cut by the kill ({unacked_delivered} of them delivered \
         anyway), {} distinct delivered, {} missing, {} duplicated",
        acked.len(),
        failed.len(),
        delivered.len(),
        missing.len(),
        duplicates.len()
    );
    for (id, count) in &duplicates {
        eprintln!("{name}: duplicate: {id} delivered {count} times");
    }

    assert!(
        missing.is_empty(),
        "acknowledged but not delivered: {missing:?}\n{}",
        moat.log()
    );
    assert!(
        strangers.is_empty(),
        "delivered but never sent: {strangers:?}"
    );
    assert!(
        duplicates.len() <= DELIVERY_CONCURRENCY,
        "{} duplicates after one kill, more than the {DELIVERY_CONCURRENCY} deliveries that can \
         be in flight",
        duplicates.len()
    );
    assert!(
        queued_messages(&queue).is_empty(),
        "messages left in the queue"
    );
}

fn start_client(name: &str, port_file: &Path, acked: &Path, failed: &Path) -> Child {
    // As common::python does, but spawned: the client runs while the test kills and restarts.
    let interpreter = std::env::var("MOAT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    Command::new(interpreter)
        .arg(repo_root().join("tests/support/send_numbered.py"))
        .arg("--port-file")
        .arg(port_file)
        .args([
            "--sessions",
            &SESSIONS.to_string(),
            "--messages",
            &MESSAGES.to_string(),
        ])
        .args([
            "--prefix",
            name,
            "--recipient",
            &format!("{LOCAL_PART}@{DOMAIN}"),
        ])
        .arg("--acked")
        .arg(acked)
        .arg("--failed")
        .arg(failed)
        .args(["--deadline", &DEADLINE.as_secs().to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 runs tests/support/send_numbered.py")
}

fn wait_for(child: &mut Child, deadline: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("client status") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("client status");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until every acknowledged message is delivered and the queue is empty, or the deadline
/// passes; returns how often each Message-ID was delivered.
fn wait_until_delivered(
    maildir: &Path,
    queue: &Path,
    acked: &BTreeSet<String>,
    deadline: Instant,
) -> BTreeMap<String, usize> {
    loop {
        let delivered = delivered_message_ids(maildir);
        let all_there = acked.iter().all(|id| delivered.contains_key(id));
        if (all_there && queued_messages(queue).is_empty()) || Instant::now() > deadline {
            return delivered;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// How often each Message-ID occurs in the Maildir's `new` and `cur`.
fn delivered_message_ids(maildir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for dir in ["new", "cur"] {
        for file in files_in(&maildir.join(dir)) {
            let id = fs::read(&file)
                .ok()
                .and_then(|bytes| message_id(&bytes))
                .unwrap_or_else(|| format!("(no Message-ID in {})", file.display()));
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// The Message-ID header's value, looked for in the header section only.
fn message_id(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    text.split("\r\n")
        .flat_map(|line| line.split('\n'))
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_string())
        })
}

/// Messages still in the queue: every file under the queue directory but those in `tmp`, which
/// never held an acknowledged message.
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

fn lines(path: &Path) -> Vec<String> {
    // Only whole lines: the client may be writing the last one right now.
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_string).collect()
}

fn first_field(line: String) -> String {
    line.split('\t').next().unwrap_or_default().to_string()
}
