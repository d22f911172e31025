//! Delivery over LMTP to a real Dovecot: messages arrive unchanged, each recipient's LMTP reply
//! counts on its own, a dead primary fails over to the standby, and mail waits in the queue while
//! every host is down.
//!
//! Moat routes `example.com` to a private Dovecot (see [`Dovecot`]) and the messages are read
//! back over IMAP with imaplib and POP3 with poplib. Dovecot's LMTP adds one header at the top,
//! `Return-Path: <reverse-path>` (the harness turns its `Received:` and `Delivered-To:` off), so a
//! message read back must be exactly that line, Moat's `Received:` header, and the message as
//! sent.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    CorpusMessage, DOVECOT_PASSWORD, Dovecot, Moat, SmtpConnection, TempDir, assert_has_hard_cases,
    cpython_corpus, every_nth, first_difference, free_port, python, python_ok, smtp_crlf,
    spamassassin_corpus, strip_received,
};

const DOMAIN: &str = "example.com";
const SENDER: &str = "sender@example.org";
const FAILOVER_USER: &str = "failover@example.com";

/// Every how many SpamAssassin messages one is delivered to Dovecot.
const SAMPLE_EVERY: usize = 25;

/// How long a message may take from its 250 to an IMAP mailbox when a host is up. Failover to a
/// standby costs a refused connection or one `connect_timeout`; only a stuck queue gets near this.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);

/// Moat's configuration with `example.com` routed as `route` and a one-second retry schedule.
fn config(route: &str, command_timeout: &str) -> String {
    format!(
        r#"
[delivery]
retry_schedule = ["1s"]
connect_timeout = "2s"
command_timeout = "{command_timeout}"

[[domain]]
name = "{DOMAIN}"
route = "{route}"
"#
    )
}

fn lmtp_route(hosts: &[SocketAddr]) -> String {
    let hosts: Vec<String> = hosts.iter().map(SocketAddr::to_string).collect();
    format!("lmtp:{}", hosts.join(","))
}

#[test]
fn cpython_corpus_and_spamassassin_sample_read_back_over_imap_are_unchanged() {
    let dovecot = Dovecot::start();
    let moat = Moat::start(&config(&lmtp_route(&[dovecot.lmtp_addr]), "30s"));
    let mut messages = cpython_corpus();
    messages.extend(every_nth(&spamassassin_corpus(), SAMPLE_EVERY));
    assert_has_hard_cases(&messages);

    send_corpus(&moat, &messages);
    let users: Vec<String> = messages.iter().map(address).collect();
    let mailboxes = fetch("imap_fetch.py", dovecot.imap_addr, &users, 1);

    assert_each_arrived_unchanged(&messages, &mailboxes, &moat, &dovecot);
}

#[test]
fn messages_read_back_over_pop3_are_unchanged() {
    let dovecot = Dovecot::start();
    let moat = Moat::start(&config(&lmtp_route(&[dovecot.lmtp_addr]), "30s"));
    // Five CPython messages, and SpamAssassin messages with 8-bit text and with lines of
    // thousands of octets among them.
    let mut messages: Vec<CorpusMessage> = cpython_corpus().into_iter().take(5).collect();
    let spamassassin = spamassassin_corpus();
    let has = |m: &CorpusMessage, test: fn(&[u8]) -> bool| test(&m.raw());
    messages.extend(
        spamassassin
            .iter()
            .filter(|m| has(m, has_8bit))
            .take(3)
            .cloned(),
    );
    messages.extend(
        spamassassin
            .iter()
            .filter(|m| has(m, has_long_line))
            .take(2)
            .cloned(),
    );

    send_corpus(&moat, &messages);
    let users: Vec<String> = messages.iter().map(address).collect();
    let mailboxes = fetch("pop3_fetch.py", dovecot.pop3_addr, &users, 1);

    assert_each_arrived_unchanged(&messages, &mailboxes, &moat, &dovecot);
}

/// One LMTP transaction for four recipients, the second of which Dovecot cannot store (its home
/// is read-only), so that after the data Dovecot replies 250, 451, 250, 250. Moat must take each
/// reply for its own recipient: three copies delivered once, and the second recipient's delivered
/// by a later attempt once its home is writable, without sending the others a second copy.
#[test]
fn a_message_to_several_recipients_gets_one_lmtp_reply_per_recipient() {
    let dovecot = Dovecot::start();
    let moat = Moat::start(&config(&lmtp_route(&[dovecot.lmtp_addr]), "30s"));
    let locked = "locked@example.com";
    let others = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let locked_home = dovecot.home(locked);
    fs::create_dir_all(&locked_home).expect("create the locked user's home");
    set_mode(&locked_home, 0o555);
    let message = test_message("four recipients");

    send(&moat, &[others[0], locked, others[1], others[2]], &message);
    let delivered = fetch("imap_fetch.py", dovecot.imap_addr, &others, 1);
    // Dovecot logs "save failed" for each attempt that met the read-only home.
    let failed_save = format!("lmtp({locked})");
    wait_for_log(
        &dovecot,
        "two failed attempts for the locked recipient",
        |log| {
            log.lines()
                .filter(|l| l.contains(&failed_save) && l.contains("save failed"))
                .count()
                >= 2
        },
    );
    set_mode(&locked_home, 0o777);
    let late = fetch("imap_fetch.py", dovecot.imap_addr, &[locked], 1);
    // Time for a wrong second copy to the others to arrive, if Moat sent one with the retries.
    thread::sleep(Duration::from_secs(3));
    let after = fetch("imap_fetch.py", dovecot.imap_addr, &others, 1);

    for user in others {
        assert_eq!(
            delivered[user].len(),
            1,
            "copies for {user} right after sending"
        );
        assert_eq!(
            after[user].len(),
            1,
            "copies for {user} after the retries: sent twice?"
        );
        assert_unchanged(user, &message, &delivered[user][0]);
    }
    assert_eq!(
        late[locked].len(),
        1,
        "copies for {locked}, whose home was read-only at first"
    );
    assert_unchanged(locked, &message, &late[locked][0]);
}

#[test]
fn mail_fails_over_to_the_standby_when_nothing_listens_on_the_primary() {
    let standby = Dovecot::start();
    let nothing = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let moat = Moat::start(&config(&lmtp_route(&[nothing, standby.lmtp_addr]), "30s"));
    let message = test_message("primary refuses connections");

    send(&moat, &[FAILOVER_USER], &message);

    assert_arrived_once(&standby, FAILOVER_USER, &message);
}

#[test]
fn mail_fails_over_to_the_standby_when_the_primary_dovecot_is_stopped() {
    let mut primary = Dovecot::start();
    let standby = Dovecot::start();
    primary.stop();
    let route = lmtp_route(&[primary.lmtp_addr, standby.lmtp_addr]);
    let moat = Moat::start(&config(&route, "30s"));
    let message = test_message("primary stopped");

    send(&moat, &[FAILOVER_USER], &message);

    assert_arrived_once(&standby, FAILOVER_USER, &message);
}

/// The primary accepts the connection and never says a word; after `command_timeout` Moat must
/// give up on it and use the standby.
#[test]
fn mail_fails_over_to_the_standby_when_the_primary_never_greets() {
    let (primary, connections) = fake_primary(b"");
    let standby = Dovecot::start();
    let route = lmtp_route(&[primary, standby.lmtp_addr]);
    let moat = Moat::start(&config(&route, "2s"));
    let message = test_message("primary never greets");

    send(&moat, &[FAILOVER_USER], &message);

    assert_arrived_once(&standby, FAILOVER_USER, &message);
    assert!(
        connections.try_recv().is_ok(),
        "Moat never tried the primary"
    );
}

/// The primary greets with 421, as a server shutting down does (RFC 5321 section 3.8).
#[test]
fn mail_fails_over_to_the_standby_when_the_primary_greets_with_421() {
    let (primary, connections) = fake_primary(b"421 4.3.2 lmtp.example.com shutting down\r\n");
    let standby = Dovecot::start();
    let route = lmtp_route(&[primary, standby.lmtp_addr]);
    let moat = Moat::start(&config(&route, "30s"));
    let message = test_message("primary greets with 421");

    send(&moat, &[FAILOVER_USER], &message);

    assert_arrived_once(&standby, FAILOVER_USER, &message);
    assert!(
        connections.try_recv().is_ok(),
        "Moat never tried the primary"
    );
}

/// A primary LMTP host that writes `greeting` to each connection and then keeps it open without
/// a word more. Returns its address and a channel that gets one message per connection.
fn fake_primary(greeting: &'static [u8]) -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake LMTP server");
    let addr = listener.local_addr().expect("the fake server's address");
    let (connected, connections) = mpsc::channel();
    thread::spawn(move || {
        let mut open = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(greeting);
            open.push(stream);
            let _ = connected.send(());
        }
    });
    (addr, connections)
}

#[test]
fn mail_waits_in_the_queue_while_primary_and_standby_are_down_and_arrives_when_one_returns() {
    let mut primary = Dovecot::start();
    let mut standby = Dovecot::start();
    primary.stop();
    standby.stop();
    let route = lmtp_route(&[primary.lmtp_addr, standby.lmtp_addr]);
    let moat = Moat::start(&config(&route, "30s"));
    let user = "patient@example.com";
    let message = test_message("both hosts down");

    send(&moat, &[user], &message);
    // Three attempts at one-second intervals find both hosts down.
    thread::sleep(Duration::from_secs(4));
    let stored_while_down = [&primary, &standby].map(|d| maildir_files(&d.home(user)).len());
    standby.resume();

    assert_eq!(
        stored_while_down,
        [0, 0],
        "messages stored while both were down"
    );
    assert_arrived_once(&standby, user, &message);
    let log = moat.log();
    assert!(
        !log.to_lowercase().contains("bounce"),
        "Moat bounced the message:\n{log}"
    );
}

/// Waits until `user` has a message at `dovecot` and asserts it is the only one, unchanged.
fn assert_arrived_once(dovecot: &Dovecot, user: &str, message: &[u8]) {
    let mailboxes = fetch("imap_fetch.py", dovecot.imap_addr, &[user], 1);
    let copies = &mailboxes[user];
    assert_eq!(
        copies.len(),
        1,
        "copies for {user} at {}",
        dovecot.lmtp_addr
    );
    assert_unchanged(user, message, &copies[0]);
}

// ---------------------------------------------------------------------------------------------

/// The address a corpus message is sent to, which names the Dovecot user it must arrive at.
fn address(message: &CorpusMessage) -> String {
    format!("{}@{DOMAIN}", message.name)
}

/// Sends each corpus message to its own address with send_smtplib.py and asserts every 250.
fn send_corpus(moat: &Moat, messages: &[CorpusMessage]) {
    let manifest: String = messages
        .iter()
        .map(|m| format!("{}\t{}\n", m.path.display(), address(m)))
        .collect();
    let manifest_path = moat.dir().join("manifest");
    fs::write(&manifest_path, manifest).expect("write the manifest");
    let port = moat.smtp_addr.port().to_string();
    let manifest_arg = manifest_path.to_str().expect("UTF-8 temporary path");
    let args = [
        "--port",
        &port,
        "--mail-from",
        SENDER,
        "--sessions",
        "2",
        manifest_arg,
    ];
    let output = python("send_smtplib.py", args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("queued\t"))
        .collect();
    assert!(
        output.status.success() && refused.is_empty(),
        "send_smtplib.py did not get a 250 for every message; refused:\n{}\nstderr:\n{}",
        refused.join("\n"),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// A small message with CRLF line endings, a dot line and a non-ASCII subject in UTF-8.
fn test_message(subject: &str) -> Vec<u8> {
    format!(
        "From: {SENDER}\r\nTo: undisclosed-recipients:;\r\nSubject: {subject} \u{2014} caf\u{e9}\r\n\
         Message-ID: <{}.{}@client.example.org>\r\n\r\nFirst line.\r\n.leading dot\r\nLast line.\r\n",
        std::process::id(),
        subject.replace(' ', "-"),
    )
    .into_bytes()
}

/// Sends `message` (CRLF line endings) to `recipients` in one SMTP transaction.
fn send(moat: &Moat, recipients: &[&str], message: &[u8]) {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220, "greeting");
    assert_eq!(smtp.command("EHLO client.example.org").code, 250, "EHLO");
    let reply = smtp.command(&format!("MAIL FROM:<{SENDER}> BODY=8BITMIME"));
    assert_eq!(reply.code, 250, "MAIL FROM: {}", reply.text());
    for rcpt in recipients {
        let reply = smtp.command(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(reply.code, 250, "RCPT TO:<{rcpt}>: {}", reply.text());
    }
    let reply = smtp.command("DATA");
    assert_eq!(reply.code, 354, "DATA: {}", reply.text());
    let mut data = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    smtp.send_raw(&data);
    let reply = smtp.read_reply();
    assert!(
        reply.code == 250 && reply.text().contains("queued as"),
        "reply to the end of data: {} {}",
        reply.code,
        reply.text()
    );
    smtp.command("QUIT");
}

/// Runs imap_fetch.py or pop3_fetch.py for `users`, waiting until each has `wait_for` messages,
/// and returns each user's messages in mailbox order.
fn fetch<S: AsRef<str>>(
    script: &str,
    server: SocketAddr,
    users: &[S],
    wait_for: usize,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let out = TempDir::new("fetch");
    let port = server.port().to_string();
    let timeout = DELIVERY_DEADLINE.as_secs().to_string();
    let wait_for = wait_for.to_string();
    let out_dir = out
        .path()
        .to_str()
        .expect("UTF-8 temporary path")
        .to_owned();
    let mut args = vec![
        "--port",
        &port,
        "--password",
        DOVECOT_PASSWORD,
        "--out",
        &out_dir,
    ];
    args.extend(["--wait-for", &wait_for, "--timeout", &timeout]);
    for user in users {
        args.extend(["--user", user.as_ref()]);
    }
    python_ok(script, &args);

    let mut mailboxes = BTreeMap::new();
    for user in users {
        let messages = sorted_files(&out.path().join(user.as_ref()))
            .iter()
            .map(|f| fs::read(f).expect("read a fetched message"))
            .collect();
        mailboxes.insert(user.as_ref().to_owned(), messages);
    }
    mailboxes
}

/// Asserts that each corpus message arrived once at its own address, unchanged, and that
/// Dovecot logged no error.
fn assert_each_arrived_unchanged(
    messages: &[CorpusMessage],
    mailboxes: &BTreeMap<String, Vec<Vec<u8>>>,
    moat: &Moat,
    dovecot: &Dovecot,
) {
    let failures: Vec<String> = messages
        .iter()
        .filter_map(|m| {
            let user = address(m);
            let name = format!("{} ({})", m.name, m.path.display());
            match mailboxes[&user].as_slice() {
                [one] => check_unchanged(&user, &smtp_crlf(&m.raw()), one)
                    .err()
                    .map(|e| format!("{name}: {e}")),
                other => Some(format!(
                    "{name}: {} messages at {user}, expected 1",
                    other.len()
                )),
            }
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} messages did not arrive unchanged; the first ones:\n{}\nMoat's log ends:\n{}",
        failures.len(),
        messages.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&moat.log()),
    );
    assert_eq!(
        dovecot.log_errors(),
        Vec::<String>::new(),
        "errors in Dovecot's log"
    );
}

fn assert_unchanged(user: &str, sent: &[u8], read_back: &[u8]) {
    if let Err(e) = check_unchanged(user, sent, read_back) {
        panic!("{e}");
    }
}

/// Checks that `read_back` is Dovecot's Return-Path line, a Received header and `sent`.
fn check_unchanged(user: &str, sent: &[u8], read_back: &[u8]) -> Result<(), String> {
    let return_path = format!("Return-Path: <{SENDER}>\r\n");
    let Some(rest) = read_back.strip_prefix(return_path.as_bytes()) else {
        let start = String::from_utf8_lossy(&read_back[..read_back.len().min(80)]).into_owned();
        return Err(format!(
            "{user}: expected {return_path:?} first, found {start:?}"
        ));
    };
    let (_received, content) = strip_received(rest).map_err(|e| format!("{user}: {e}"))?;
    match first_difference(sent, content) {
        None => Ok(()),
        Some(difference) => Err(format!("{user}: {difference}")),
    }
}

fn has_8bit(raw: &[u8]) -> bool {
    raw.iter().any(|&b| b >= 0x80)
}

fn has_long_line(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').any(|line| line.len() > 2_000)
}

fn wait_for_log(dovecot: &Dovecot, what: &str, condition: impl Fn(&str) -> bool) {
    let started = Instant::now();
    while !condition(&dovecot.log()) {
        assert!(
            started.elapsed() < DELIVERY_DEADLINE,
            "Dovecot's log does not show {what}:\n{}",
            dovecot.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The messages in a Maildir's `new/` and `cur/`.
fn maildir_files(home: &Path) -> Vec<PathBuf> {
    ["new", "cur"]
        .iter()
        .flat_map(|d| sorted_files(&home.join("Maildir").join(d)))
        .collect()
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
