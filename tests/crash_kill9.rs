//! Crash safety: Moat is killed with SIGKILL in the middle of a load and restarted on the same
//! data directory, and every message it had answered 250 is then delivered.
//!
//! The client is `tests/support/send_numbered.py`: each message has its own Message-ID, and the
//! client writes down each Message-ID the moment its 250 arrives. After the restart and the
//! drain, every one of those must be in the Maildir. Messages whose transaction was cut by the
//! kill carry no promise; the report counts those that arrived anyway.
//!
//! Duplicates are allowed and printed, not failed, up to one per delivery that could have been
//! in flight at each kill: a delivery that reached the Maildir just before the kill is made again
//! after the restart, because its queue file was not removed yet. More duplicates than that
//! would mean the restart redelivers mail it had finished with, and the test fails.
//!
//! The tests kill at different moments: early in the load, in its middle, and twice in a row
//! (the second time as soon as the restarted Moat listens, having just read its queue back,
//! while the clients reconnect). Deadlines, not timings, bound them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Moat, files_in, queued_messages, repo_root};

/// Messages the client sends in each test.
const MESSAGES: usize = 3_000;
/// Client sessions in parallel.
const SESSIONS: usize = 8;
/// Delivery concurrency configured in Moat: the most deliveries one kill can cut, and so the
/// most duplicates one kill may cause.
const DELIVERY_CONCURRENCY: usize = 20;
/// Time allowed for the whole test: only a stuck server reaches it.
const DEADLINE: Duration = Duration::from_secs(600);

const DOMAIN: &str = "example.com";
const LOCAL_PART: &str = "crash";

#[test]
fn acknowledged_messages_survive_a_kill_early_in_the_load() {
    crash_during_load("early", &[Kill::AfterAcks(MESSAGES / 20)]);
}

#[test]
fn acknowledged_messages_survive_a_kill_in_the_middle_of_the_load() {
    crash_during_load("middle", &[Kill::AfterAcks(MESSAGES / 2)]);
}

#[test]
fn acknowledged_messages_survive_a_second_kill_during_recovery() {
    crash_during_load(
        "twice",
        &[Kill::AfterAcks(MESSAGES / 3), Kill::AsSoonAsListening],
    );
}

/// The moment of a kill.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once the client has recorded this many 250 replies in all.
    AfterAcks(usize),
    /// As soon as the restarted Moat listens, while the clients reconnect and the messages it
    /// read back from its queue are being delivered again.
    AsSoonAsListening,
}

fn crash_during_load(name: &str, kills: &[Kill]) {
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
    let maildir = moat.maildir(DOMAIN, LOCAL_PART);
    let queue = moat.data_dir.join("queue");
    let work = moat.dir().join("client");
    fs::create_dir_all(&work).expect("create the client's folder");
    let acked_file = work.join("acked");
    let failed_file = work.join("failed");
    let port_file = work.join("port");
    write_port(&port_file, &moat);
    let mut client = start_client(name, &port_file, &acked_file, &failed_file);

    for kill in kills {
        if let Kill::AfterAcks(count) = *kill {
            while lines(&acked_file).len() < count {
                assert!(
                    Instant::now() < deadline,
                    "{name}: {} of {count} acks before the deadline\n{}",
                    lines(&acked_file).len(),
                    log_tail(&moat)
                );
                let ended = client.try_wait().expect("client status");
                assert!(ended.is_none(), "{name}: client ended early: {ended:?}");
                thread::sleep(Duration::from_millis(20));
            }
        }
        let acked_at_kill = lines(&acked_file).len();
        moat.kill9();
        eprintln!(
            "{name}: killed ({kill:?}) with {acked_at_kill} messages acknowledged and {} queued",
            queued_messages(&queue).len()
        );

        // The client keeps retrying refused connections while Moat is down, and reads the new
        // port from the file before each connection.
        moat.restart();
        write_port(&port_file, &moat);
    }

    let status = wait_for(&mut client, deadline);
    assert!(
        status.success(),
        "{name}: client did not send all messages: {status}\n{}",
        log_tail(&moat)
    );

    let acked: BTreeSet<String> = lines(&acked_file).into_iter().map(first_field).collect();
    let failed: BTreeSet<String> = lines(&failed_file).into_iter().map(first_field).collect();
    let delivered = wait_until_delivered(&maildir, &queue, &acked, deadline);
    report_and_judge(name, kills.len(), &acked, &failed, &delivered, &moat);
    assert!(
        queued_messages(&queue).is_empty(),
        "{name}: messages left in the queue"
    );
}

/// Prints what happened to every message, then fails on a lost message, a stranger or too many
/// duplicates.
fn report_and_judge(
    name: &str,
    kills: usize,
    acked: &BTreeSet<String>,
    failed: &BTreeSet<String>,
    delivered: &BTreeMap<String, usize>,
    moat: &Moat,
) {
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let duplicates: Vec<(&String, &usize)> =
        delivered.iter().filter(|(_, count)| **count > 1).collect();
    let cut_but_delivered = failed
        .iter()
        .filter(|id| delivered.contains_key(*id))
        .count();
    let strangers: Vec<&String> = delivered
        .keys()
        .filter(|id| !acked.contains(*id) && !failed.contains(*id))
        .collect();

    // Report first, so that a failure shows the whole picture.
    eprintln!(
        "{name}: {} acknowledged, {} cut by a kill ({cut_but_delivered} of them delivered \
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
        "{name}: acknowledged, not delivered: {missing:?}\n{}",
        log_tail(moat)
    );
    assert!(
        strangers.is_empty(),
        "{name}: delivered but never sent: {strangers:?}"
    );
    let allowed = DELIVERY_CONCURRENCY * kills;
    assert!(
        duplicates.len() <= allowed,
        "{name}: {} duplicates after {kills} kills; at most {allowed} deliveries could be in \
         flight",
        duplicates.len()
    );
}

fn write_port(port_file: &Path, moat: &Moat) {
    // Written whole to a new file and renamed, so the client never reads half a number.
    let fresh = port_file.with_extension("new");
    fs::write(&fresh, moat.smtp_addr.port().to_string()).expect("write the port file");
    fs::rename(&fresh, port_file).expect("rename the port file");
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

/// The complete lines of a file the client may be writing to at this moment.
fn lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_string).collect()
}

fn first_field(line: String) -> String {
    line.split('\t').next().unwrap_or_default().to_string()
}

/// The last lines of Moat's log: the whole log has a line per delivery, too many for a panic
/// message. The harness keeps the directory with the full log when a test fails.
fn log_tail(moat: &Moat) -> String {
    let log = moat.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
