//! Whole mail corpora sent to Moat by real clients arrive in the Maildir byte for byte, apart
//! from the one `Received:` header Moat adds at the top.
//!
//! The corpora are CPython's email test messages and the SpamAssassin public corpus (6,046
//! messages: MIME, 8-bit, lines far over 998 octets, lines starting with a dot, mbox `From `
//! lines, bare CRs), laid out by `scripts/fetch-corpus`. Each message goes to its own recipient,
//! `<corpus name>@localhost` (for example `sa-spam-2-01396@localhost`), so every Maildir must end
//! up holding exactly that one message. What a client sends is the file with its line endings
//! made CRLF ([`smtp_crlf`]); that is what must arrive.
//!
//! The clients are smtplib (the whole of both corpora, plain and over STARTTLS), swaks (STARTTLS
//! and PIPELINING) and a raw BDAT client (`tests/support/send_bdat.py`). swaks is a Perl process
//! per message, about 0.2 s each, so it and the BDAT client get the CPython corpus and every 25th
//! SpamAssassin message rather than all 6,046.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    CorpusMessage, Moat, TempDir, assert_has_hard_cases, cpython_corpus, every_nth,
    first_difference, maildir_new, python, smtp_crlf, spamassassin_corpus, strip_received,
};

/// How long the last message may take to reach its Maildir after the last 250. Delivery to a
/// Maildir runs at hundreds of messages a second, so only a stuck queue reaches this.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);

/// Every how many SpamAssassin messages one is sent with swaks and with BDAT.
const SAMPLE_EVERY: usize = 25;

/// Concurrent swaks processes: enough to keep two cores busy, since each mostly waits.
const SWAKS_PROCESSES: usize = 4;

/// Moat's configuration for these tests: the defaults, with the Maildir route under `data_dir`.
const CONFIG: &str = "";

#[test]
fn cpython_corpus_sent_with_smtplib_arrives_unchanged() {
    let moat = Moat::start(CONFIG);
    let messages = cpython_corpus();

    send_with_python(&moat, "send_smtplib.py", &messages, &[]);

    assert_each_delivered_unchanged(&moat, &messages);
}

#[test]
fn cpython_corpus_sent_with_smtplib_over_starttls_arrives_unchanged() {
    let moat = Moat::start(CONFIG);
    let messages = cpython_corpus();

    send_with_python(&moat, "send_smtplib.py", &messages, &["--starttls"]);

    assert_each_delivered_unchanged(&moat, &messages);
}

#[test]
fn spamassassin_corpus_sent_with_smtplib_in_parallel_sessions_arrives_unchanged() {
    let moat = Moat::start(CONFIG);
    let messages = spamassassin_corpus();

    send_with_python(
        &moat,
        "send_smtplib.py",
        &messages,
        &["--sessions", "8", "--parallel"],
    );

    assert_each_delivered_unchanged(&moat, &messages);
}

#[test]
fn cpython_corpus_and_spamassassin_sample_sent_with_swaks_starttls_pipelining_arrive_unchanged() {
    let moat = Moat::start(CONFIG);
    let work = TempDir::new("swaks");
    let mut messages = cpython_corpus();
    messages.extend(every_nth(&spamassassin_corpus(), SAMPLE_EVERY));
    assert_has_hard_cases(&messages);

    send_with_swaks(&moat, work.path(), &messages);

    assert_each_delivered_unchanged(&moat, &messages);
}

#[test]
fn cpython_corpus_and_spamassassin_sample_sent_in_bdat_chunks_arrive_unchanged() {
    let moat = Moat::start(CONFIG);
    let mut messages = cpython_corpus();
    messages.extend(every_nth(&spamassassin_corpus(), SAMPLE_EVERY));
    assert_has_hard_cases(&messages);

    send_with_python(&moat, "send_bdat.py", &messages, &[]);

    assert_each_delivered_unchanged(&moat, &messages);
}

#[test]
fn cpython_corpus_and_spamassassin_sample_sent_in_pipelined_bdat_over_starttls_arrive_unchanged() {
    let moat = Moat::start(CONFIG);
    let mut messages = cpython_corpus();
    messages.extend(every_nth(&spamassassin_corpus(), SAMPLE_EVERY));
    assert_has_hard_cases(&messages);

    send_with_python(
        &moat,
        "send_bdat.py",
        &messages,
        &["--pipeline", "--starttls"],
    );

    assert_each_delivered_unchanged(&moat, &messages);
}

/// The recipient each message is sent to, which names the Maildir it must arrive in.
fn recipient(message: &CorpusMessage) -> String {
    format!("{}@localhost", message.name)
}

/// Sends `messages` with a script that reads a manifest (send_smtplib.py, send_bdat.py) and
/// asserts that every one got its 250 with a queue id.
fn send_with_python(moat: &Moat, script: &str, messages: &[CorpusMessage], options: &[&str]) {
    let manifest: String = messages
        .iter()
        .map(|m| format!("{}\t{}\n", m.path.display(), recipient(m)))
        .collect();
    let manifest_path = moat.dir().join(format!("{script}.manifest"));
    std::fs::write(&manifest_path, manifest).expect("write the manifest");

    let port = moat.smtp_addr.port().to_string();
    let mut args = vec!["--port", &port];
    args.extend_from_slice(options);
    args.push(manifest_path.to_str().expect("UTF-8 temporary path"));
    let started = Instant::now();
    let output = python(script, &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "{script} {options:?}: {} messages in {:?}",
        messages.len(),
        started.elapsed()
    );

    let queued = stdout.lines().filter(|l| l.starts_with("queued\t")).count();
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("queued\t"))
        .collect();
    assert!(
        output.status.success() && queued == messages.len(),
        "{script} {options:?}: {queued} of {} messages queued; {} refused, the first ones:\n{}\n\
         stderr:\n{}\nMoat's log ends:\n{}",
        messages.len(),
        refused.len(),
        refused
            .iter()
            .take(10)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&output.stderr),
        log_tail(moat),
    );
    let without_id: Vec<&str> = stdout.lines().filter(|l| l.ends_with("\t?")).collect();
    assert!(
        without_id.is_empty(),
        "250 replies without `queued as <id>`: {without_id:?}"
    );
}

/// Sends each message with its own swaks process, over STARTTLS and with PIPELINING.
///
/// swaks normally rewrites the data it sends (it expands `%DATE%`-style tokens and `\n`, drops an
/// mbox `From ` line and adds a blank line at the end), so the exact bytes to send go in a file
/// with `--no-data-fixup`: CRLF line endings, dot-stuffed, ending with the `.` line (swaks
/// appends the CRLF after it). swaks 20201014 cannot add BODY=8BITMIME, so 8-bit messages go
/// without it.
fn send_with_swaks(moat: &Moat, work: &Path, messages: &[CorpusMessage]) {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = (0..SWAKS_PROCESSES)
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(message) = messages.get(index) else {
                            return failures;
                        };
                        if let Err(failure) = swaks(moat, work, message) {
                            failures.push(failure);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("swaks worker panicked"))
            .collect()
    });
    eprintln!(
        "swaks: {} messages in {:?}",
        messages.len(),
        started.elapsed()
    );

    assert!(
        failures.is_empty(),
        "swaks failed for {} of {} messages; the first ones:\n{}\nMoat's log ends:\n{}",
        failures.len(),
        messages.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n"),
        log_tail(moat),
    );
}

fn swaks(moat: &Moat, work: &Path, message: &CorpusMessage) -> Result<(), String> {
    let mut data = dot_stuff(&smtp_crlf(&message.raw()));
    data.push(b'.');
    let data_path = work.join(format!("{}.data", message.name));
    std::fs::write(&data_path, data).expect("write swaks's data file");

    let output = Command::new("swaks")
        .args(["--server", &moat.smtp_addr.ip().to_string()])
        .args(["--port", &moat.smtp_addr.port().to_string()])
        .args([
            "--ehlo",
            "client.example.com",
            "--from",
            "sender@example.com",
        ])
        .args(["--to", &recipient(message)])
        .args(["--tls", "--pipeline", "--no-data-fixup"])
        .arg("--data")
        .arg(format!("@{}", data_path.display()))
        .output()
        .map_err(|e| format!("cannot run swaks (run scripts/setup): {e}"))?;
    let transcript = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && transcript.contains("250 2.0.0 Ok: queued as ") {
        return Ok(());
    }
    Err(format!(
        "{} ({}): swaks exited with {}; transcript without the data:\n{}{}",
        message.name,
        message.path.display(),
        output.status,
        transcript
            .lines()
            .filter(|l| !l.starts_with(" > "))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&output.stderr),
    ))
}

/// Doubles the dot that starts a line (RFC 5321 section 4.5.2); `crlf` has CRLF line endings.
fn dot_stuff(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len() + 16);
    let mut line_start = true;
    for &byte in crlf {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n';
    }
    out
}

/// Waits until each message's Maildir holds a file, then asserts that it holds exactly one, and
/// that it is the message as sent with one `Received:` header before it.
fn assert_each_delivered_unchanged(moat: &Moat, messages: &[CorpusMessage]) {
    let started = Instant::now();
    let maildir = |m: &CorpusMessage| moat.maildir("localhost", &m.name);
    let mut pending: Vec<&CorpusMessage> = messages.iter().collect();
    while !pending.is_empty() && started.elapsed() < DELIVERY_DEADLINE {
        pending.retain(|m| maildir_new(&maildir(m)).is_empty());
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "delivered {} messages in {:?}",
        messages.len(),
        started.elapsed()
    );
    let pending_names: Vec<&str> = pending.iter().take(10).map(|m| m.name.as_str()).collect();
    assert!(
        pending.is_empty(),
        "{} of {} messages not delivered after {DELIVERY_DEADLINE:?}, among them {pending_names:?}\n\
         Moat's log ends:\n{}",
        pending.len(),
        messages.len(),
        log_tail(moat),
    );

    let failures: Vec<String> = messages
        .iter()
        .filter_map(|m| check_delivery(m, &maildir_new(&maildir(m))).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} messages did not arrive unchanged; the first ones:\n{}",
        failures.len(),
        messages.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

fn check_delivery(message: &CorpusMessage, files: &[PathBuf]) -> Result<(), String> {
    let name = format!("{} ({})", message.name, message.path.display());
    let [file] = files else {
        return Err(format!(
            "{name}: expected one file in the Maildir, found {files:?}"
        ));
    };
    let delivered = std::fs::read(file).map_err(|e| format!("{name}: {}: {e}", file.display()))?;
    let (_received, content) = strip_received(&delivered).map_err(|e| format!("{name}: {e}"))?;
    match first_difference(&smtp_crlf(&message.raw()), content) {
        None => Ok(()),
        Some(difference) => Err(format!(
            "{name}, delivered as {}: {difference}",
            file.display()
        )),
    }
}

/// The last 40 lines of Moat's log, for failure messages.
fn log_tail(moat: &Moat) -> String {
    let log = moat.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
