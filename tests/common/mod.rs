//! The shared harness of Moat's end-to-end tests: a real `moat serve`, a throwaway Dovecot, the
//! Python helpers in `tests/support/`, and the corpora that `scripts/fetch-corpus` lays out.
//!
//! A test file uses it with `mod common;` and `use common::*;`. Everything runs on loopback, on
//! ports the kernel picked, in a fresh temporary directory that is removed when the test passes
//! and kept (its path printed) when the test fails, so the logs can be read afterwards. Set
//! `MOAT_TEST_KEEP=1` to keep every directory.
//!
//! * [`Moat::start`] writes a configuration around the sections a test gives, starts the binary
//!   and waits until it listens; [`Moat::maildir`] says where the default route delivers.
//! * [`Dovecot::start`] runs a private Dovecot with LMTP, IMAP and POP3 on free ports; every user
//!   exists and has the password [`DOVECOT_PASSWORD`].
//! * [`python`] and [`python_ok`] run a script from `tests/support/`.
//! * [`SmtpConnection`] speaks SMTP line by line for tests that check replies.
//! * [`smtp_crlf`], [`strip_received`] and [`first_difference`] compare what was sent with what
//!   was delivered; [`cpython_corpus`] and [`spamassassin_corpus`] list the test messages.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long Moat or Dovecot may take to start listening. A debug build on a loaded 2-core CI
/// machine starts in well under a second; the margin is for the first start, which generates the
/// self-signed TLS certificate.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// The password of every Dovecot user.
pub const DOVECOT_PASSWORD: &str = "moat-test-password";

/// The repository root, where `tests/`, `scripts/` and `.corpus/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback TCP port that was free a moment ago.
///
/// Prefer `127.0.0.1:0` in a configuration where the program reports the port it bound; use this
/// only for programs that need a number up front (Dovecot), or for a port nobody listens on.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// Polls `condition` every 50 ms until it holds, and panics with `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A directory under the system temporary directory, removed on drop unless the test failed.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/moat-test-<label>-<pid>-<n>`, readable by all so that Dovecot's mail user
    /// can reach the mail directories inside it.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("moat-test-{label}-{}-{n}-{nanos}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    set_mode(&path, 0o755);
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temporary directory {}: {e}", path.display()),
            }
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("MOAT_TEST_KEEP").is_some() {
            eprintln!("kept test directory {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

/// Sends `signal` (a name such as `TERM`) to a process with the `kill` command; std only kills.
fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` to exit, sending SIGKILL if it has not after `grace`.
fn reap(child: &mut Child, grace: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if start.elapsed() > grace {
            let _ = child.kill();
            return child.wait().expect("wait for a killed child");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Moat

/// A running `moat serve` with its own data directory, configuration file and log.
///
/// The configuration is the caller's TOML with three things merged in (see [`Moat::start`]);
/// `cat` the file at [`Moat::config_path`] to see the result.
pub struct Moat {
    /// The first SMTP listener's address, as Moat logged it.
    pub smtp_addr: SocketAddr,
    /// Every listener's address, in the order Moat logged them.
    pub listeners: Vec<SocketAddr>,
    /// `data_dir` of the configuration: the queue, the TLS certificate, the default Maildir.
    pub data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    expected_listeners: usize,
    child: Option<Child>,
    dir: TempDir,
}

impl Moat {
    /// Starts Moat with `config`, the body of a configuration file, and waits until it listens.
    ///
    /// The harness adds to that body:
    /// * `data_dir = "<fresh temporary directory>"` at the top. In the body, the word `DATA_DIR`
    ///   stands for that directory and `MAILDIR_ROOT` for `DATA_DIR/mail`, the root that
    ///   [`Moat::maildir`] reads: `route = "maildir:MAILDIR_ROOT"` (plain words, so that the body
    ///   can be a `format!` string);
    /// * in `[smtp]` (created at the end if the body has none), `listen = ["127.0.0.1:0"]` and
    ///   `pregreet_wait = "0s"`, each only if the body does not set that key itself.
    ///
    /// So `Moat::start("")` accepts mail for `localhost` into [`Moat::maildir`], and a test of
    /// the pregreet delay writes `[smtp]` with its own `pregreet_wait`. The body must not set
    /// `data_dir`. The process runs in the temporary directory with `NO_COLOR=1` and
    /// `RUST_LOG=info`; set `MOAT_TEST_RUST_LOG` for another filter, one that keeps the info
    /// lines of the listeners. (A `RUST_LOG` of the caller's is ignored: `RUST_LOG=warn` would
    /// hide the line the harness waits for.)
    ///
    /// # Panics
    ///
    /// If Moat exits or does not log its listeners within [`STARTUP_DEADLINE`]; the panic
    /// message holds the log.
    pub fn start(config: &str) -> Moat {
        let dir = TempDir::new("moat");
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).expect("create Moat's data directory");
        let config_path = dir.path().join("moat.toml");
        let (body, expected_listeners) = compose_config(config, &data_dir);
        fs::write(&config_path, body).expect("write Moat's configuration");

        let mut moat = Moat {
            smtp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            data_dir,
            log_path: dir.path().join("moat.log"),
            config_path,
            expected_listeners,
            child: None,
            dir,
        };
        moat.spawn();
        moat
    }

    /// The Maildir of `local@domain` under `MAILDIR_ROOT`, the root of the default route (and
    /// of any `route = "maildir:MAILDIR_ROOT"`).
    pub fn maildir(&self, domain: &str, local: &str) -> PathBuf {
        self.data_dir
            .join("mail")
            .join(domain.to_lowercase())
            .join(local.to_lowercase())
    }

    /// Everything Moat wrote to stderr and stdout so far, over all its starts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The configuration file as written.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding the configuration, the log and `data_dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while Moat runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills Moat with SIGKILL, as a power cut would, and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks Moat to stop with SIGTERM and returns its exit status (SIGKILL after 20 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        send_signal(child.id(), "TERM");
        Some(reap(&mut child, Duration::from_secs(20)))
    }

    /// Stops Moat (SIGTERM) if it runs and starts it again with the same configuration and data
    /// directory. It listens on a new port: read [`Moat::smtp_addr`] again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open Moat's log file");
        let log_offset = log.metadata().map_or(0, |m| m.len()) as usize;
        let rust_log = std::env::var("MOAT_TEST_RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let child = Command::new(env!("CARGO_BIN_EXE_moat"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn target/debug/moat serve");
        self.child = Some(child);

        let start = Instant::now();
        loop {
            let log = self.log();
            let listeners = parse_listeners(log.get(log_offset..).unwrap_or(""));
            if listeners.len() >= self.expected_listeners {
                self.smtp_addr = listeners[0];
                self.listeners = listeners;
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!("moat serve exited with {status} before listening; its log:\n{log}");
            }
            if start.elapsed() > STARTUP_DEADLINE {
                panic!("moat serve did not log `listening ... addr=` in time; its log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("Moat's log is {}", self.log_path.display());
        }
    }
}

/// Adds `data_dir`, `[smtp] listen` and `[smtp] pregreet_wait` to a test's configuration body,
/// and counts the listeners Moat will announce.
fn compose_config(body: &str, data_dir: &Path) -> (String, usize) {
    let data_dir = data_dir
        .to_str()
        .expect("temporary directory path is UTF-8");
    let body = body
        .replace("MAILDIR_ROOT", &format!("{data_dir}/mail"))
        .replace("DATA_DIR", data_dir);

    // Find the [smtp] table and the keys it sets.
    let mut in_smtp = false;
    let mut smtp_line = None;
    let mut listen_value = None;
    let mut has_pregreet = false;
    for (index, line) in body.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_smtp = line == "[smtp]";
            if in_smtp {
                smtp_line = Some(index);
            }
            continue;
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if in_smtp && key == "listen" {
            listen_value = line.split_once('=').map(|(_, v)| v.to_owned());
        }
        has_pregreet |= in_smtp && key == "pregreet_wait";
    }

    let mut added = String::new();
    if listen_value.is_none() {
        added.push_str("listen = [\"127.0.0.1:0\"]\n");
    }
    if !has_pregreet {
        added.push_str("pregreet_wait = \"0s\"\n");
    }
    let expected_listeners = listen_value
        .map_or(1, |v| v.matches('"').count() / 2)
        .max(1);

    let mut out = format!("data_dir = \"{data_dir}\"\n");
    match smtp_line {
        Some(smtp_line) => {
            for (index, line) in body.lines().enumerate() {
                out.push_str(line);
                out.push('\n');
                if index == smtp_line {
                    out.push_str(&added);
                }
            }
        }
        None => {
            out.push_str(&body);
            out.push_str("\n[smtp]\n");
            out.push_str(&added);
        }
    }
    (out, expected_listeners)
}

/// The addresses of Moat's SMTP listeners in its log. Other services (the DNSBL server) log
/// `<name> listening` and are not counted.
fn parse_listeners(log: &str) -> Vec<SocketAddr> {
    service_addrs(log, "smtp")
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ parameters m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Dovecot

/// A private Dovecot (LMTP, IMAP, POP3 on loopback) with its configuration, sockets, log and
/// mail in a temporary directory.
///
/// Every user exists (static userdb) with the password [`DOVECOT_PASSWORD`]; user names are the
/// full address given to LMTP, for example `alice@example.com`. Mail is stored as the system user
/// `nobody` when the tests run as root (Dovecot refuses uid 0 as a mail user), else as the
/// current user. IMAP and POP3 take plaintext logins; there is no TLS.
///
/// Dovecot's LMTP adds exactly one header at the top of each message it stores,
/// `Return-Path: <reverse-path>`: this configuration turns off its `Received:` header
/// (`lmtp_add_received_header = no`) and its `Delivered-To:` header
/// (`lmtp_hdr_delivery_address = none`). IMAP returns a NUL byte in a message as 0x80.
pub struct Dovecot {
    /// The LMTP listener.
    pub lmtp_addr: SocketAddr,
    /// The IMAP listener (plaintext).
    pub imap_addr: SocketAddr,
    /// The POP3 listener (plaintext).
    pub pop3_addr: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Dovecot {
    /// Starts Dovecot and waits until LMTP, IMAP and POP3 accept connections.
    ///
    /// # Panics
    ///
    /// If Dovecot exits or its ports do not open within [`STARTUP_DEADLINE`]; the panic message
    /// holds its log.
    pub fn start() -> Dovecot {
        let dir = TempDir::new("dovecot");
        let home = dir.path().join("home");
        fs::create_dir(&home).expect("create Dovecot's home directory");
        // The mail user creates each user's home in here.
        set_mode(&home, 0o777);

        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (lmtp, imap, pop3) = (free_port(), free_port(), free_port());
        let config_path = dir.path().join("dovecot.conf");
        let log_path = dir.path().join("dovecot.log");
        let config = dovecot_config(dir.path(), &home, &log_path, lmtp, imap, pop3);
        fs::write(&config_path, config).expect("write dovecot.conf");

        let mut dovecot = Dovecot {
            lmtp_addr: loopback(lmtp),
            imap_addr: loopback(imap),
            pop3_addr: loopback(pop3),
            config_path,
            log_path,
            child: None,
            dir,
        };
        dovecot.resume();
        dovecot
    }

    /// Stops Dovecot (SIGTERM) and waits until its ports are closed. Its mail stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(child.id(), "TERM");
        reap(&mut child, Duration::from_secs(10));
        let addrs = [self.lmtp_addr, self.imap_addr, self.pop3_addr];
        wait_until(Duration::from_secs(10), "Dovecot's ports to close", || {
            addrs.iter().all(|a| TcpStream::connect(a).is_err())
        });
    }

    /// Starts a stopped Dovecot again on the same ports, with the same mail.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Dovecot is already running");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dovecot (run scripts/setup to install dovecot-lmtpd and friends)");
        self.child = Some(child);

        let addrs = [self.lmtp_addr, self.imap_addr, self.pop3_addr];
        let start = Instant::now();
        while !addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.take().and_then(|mut c| c.stderr.take()) {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!(
                    "dovecot exited with {status}: {stderr}\nits log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < STARTUP_DEADLINE,
                "Dovecot did not open its ports in time; its log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The log lines that report an error, a fatal condition or a panic.
    pub fn log_errors(&self) -> Vec<String> {
        let bad = [" Error: ", " Fatal: ", " Panic: "];
        self.log()
            .lines()
            .filter(|l| bad.iter().any(|b| l.contains(b)))
            .map(str::to_owned)
            .collect()
    }

    /// The directory holding user `user`'s home (`<home>/<user>/Maildir`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user.to_lowercase())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "TERM");
            reap(&mut child, Duration::from_secs(10));
        }
        if thread::panicking() {
            eprintln!("Dovecot's log is {}", self.log_path.display());
        }
    }
}

fn dovecot_config(dir: &Path, home: &Path, log: &Path, lmtp: u16, imap: u16, pop3: u16) -> String {
    let (dir, home, log) = (dir.display(), home.display(), log.display());

    // Dovecot refuses uid 0 as a mail user, and its own processes need unprivileged users.
    let (mail_user, mail_group, internal) = if current_uid() == 0 {
        ("nobody".to_owned(), "nogroup".to_owned(), String::new())
    } else {
        let me = command_output("id", &["-un"]);
        let group = command_output("id", &["-gn"]);
        let internal = format!("default_internal_user = {me}\ndefault_login_user = {me}\n");
        (me, group, internal)
    };

    format!(
        "\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {log}
{internal}listen = 127.0.0.1
protocols = lmtp imap pop3
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = static
  args = password={DOVECOT_PASSWORD}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={home}/%Lu
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
protocol lmtp {{
  lmtp_add_received_header = no
  lmtp_hdr_delivery_address = none
}}
pop3_uidl_format = %08Xu%08Xv
"
    )
}

fn current_uid() -> u32 {
    command_output("id", &["-u"])
        .parse()
        .expect("`id -u` prints a number")
}

fn command_output(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .expect("run a system command");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Python helpers

/// Runs `python3 tests/support/<script> <args>` and returns its output, whatever its status.
///
/// `MOAT_TEST_PYTHON` names another interpreter.
pub fn python<I, S>(script: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let interpreter = std::env::var("MOAT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    Command::new(&interpreter)
        .arg(repo_root().join("tests/support").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter} {script}: {e}"))
}

/// Like [`python`], but panics with the script's stderr unless it exits 0; returns its stdout.
pub fn python_ok<I, S>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = python(script, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------------------------
// A line-by-line SMTP client

/// One SMTP reply: the code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text after the code and separator on each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined with newlines, for assertions and messages.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A plaintext SMTP connection that sends lines and reads replies, for tests of the dialogue.
pub struct SmtpConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpConnection {
    /// Connects with a 30 s read timeout; the greeting is not read (see [`Self::read_reply`]).
    pub fn connect(addr: SocketAddr) -> SmtpConnection {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        let writer = stream.try_clone().expect("clone a TCP stream");
        SmtpConnection {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends `line` with CRLF appended and reads the reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Sends bytes exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the SMTP server");
    }

    /// Reads one reply, single- or multi-line.
    ///
    /// # Panics
    ///
    /// If the server closes the connection or sends something that is not a reply line.
    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a reply line");
            assert!(
                n > 0,
                "the server closed the connection; lines so far: {lines:?}"
            );
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let code = code.unwrap_or_else(|| panic!("not an SMTP reply line: {line:?}"));
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, lines };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing sent and delivered messages

/// A message as it travels over SMTP when a client sends the file `raw`: every CRLF, bare LF and
/// bare CR becomes CRLF (as smtplib does for text), and a final CRLF is added if missing, since
/// `CRLF . CRLF` ends the data and its first CRLF belongs to the last line.
pub fn smtp_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits off the first header field of `delivered`: its first line and the continuation lines
/// after it (lines starting with a space or a tab). Returns `(header, rest)`, or an explanation
/// when the first field is not a `Received:` header ending in CRLF.
pub fn strip_received(delivered: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let start = String::from_utf8_lossy(&delivered[..delivered.len().min(120)]).into_owned();
    if !delivered.starts_with(b"Received:") {
        return Err(format!(
            "does not start with a Received: header but with {start:?}"
        ));
    }
    let mut end = 0;
    loop {
        let Some(eol) = delivered[end..].windows(2).position(|w| w == b"\r\n") else {
            return Err(format!(
                "the Received: header has no CRLF ending: {start:?}"
            ));
        };
        end += eol + 2;
        if !matches!(delivered.get(end), Some(b' ' | b'\t')) {
            return Ok(delivered.split_at(end));
        }
    }
}

/// Where two byte strings first differ, with some bytes of context from each; `None` if equal.
pub fn first_difference(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let at = expected.iter().zip(actual).position(|(a, b)| a != b);
    let at = at.unwrap_or(expected.len().min(actual.len()));
    let context = |bytes: &[u8]| {
        let from = at.saturating_sub(40);
        let to = (at + 40).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..to]).into_owned()
    };
    Some(format!(
        "expected {} bytes, got {}; first difference at byte {at}: expected ...{:?}..., got ...{:?}...",
        expected.len(),
        actual.len(),
        context(expected),
        context(actual),
    ))
}

/// The files in `<maildir>/new`, sorted by name; none if it does not exist yet.
pub fn maildir_new(maildir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Corpora

/// One test message from a corpus.
#[derive(Debug, Clone)]
pub struct CorpusMessage {
    /// A name unique over all corpora, usable as an address's local part: `cpython-msg_01`,
    /// `sa-easy-ham-1-00001`.
    pub name: String,
    /// The raw message file.
    pub path: PathBuf,
}

impl CorpusMessage {
    /// The file's bytes, unchanged.
    pub fn raw(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()))
    }
}

/// CPython's email test messages (`test/test_email/data/msg_*.txt`, 48 in CPython 3.11), from
/// `.corpus/cpython/`.
pub fn cpython_corpus() -> Vec<CorpusMessage> {
    let dir = corpus_dir("cpython");
    let mut messages: Vec<CorpusMessage> = list_dir(&dir)
        .into_iter()
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?;
            let stem = file.strip_prefix("msg_")?.strip_suffix(".txt")?;
            Some(CorpusMessage {
                name: format!("cpython-msg_{stem}"),
                path,
            })
        })
        .collect();
    messages.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        messages.len() >= 40,
        "only {} messages in {}",
        messages.len(),
        dir.display()
    );
    messages
}

/// The SpamAssassin public corpus (6,046 messages in five groups), from `.corpus/spamassassin/`,
/// sorted by group and number.
pub fn spamassassin_corpus() -> Vec<CorpusMessage> {
    let dir = corpus_dir("spamassassin");
    let mut messages = Vec::new();
    for group in list_dir(&dir).into_iter().filter(|p| p.is_dir()) {
        let group_name = group
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("")
            .to_owned();
        for path in list_dir(&group) {
            let Some(id) = path.file_name().and_then(OsStr::to_str) else {
                continue;
            };
            let Some(id) = id.strip_suffix(".eml") else {
                continue;
            };
            messages.push(CorpusMessage {
                name: format!("sa-{group_name}-{id}"),
                path,
            });
        }
    }
    messages.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        messages.len(),
        6046,
        "the SpamAssassin corpus in {} is incomplete",
        dir.display()
    );
    messages
}

/// Every `n`th message, starting with the first: a deterministic sample.
pub fn every_nth(messages: &[CorpusMessage], n: usize) -> Vec<CorpusMessage> {
    messages.iter().step_by(n).cloned().collect()
}

/// Asserts that `messages` hold each case a transport tends to get wrong: 8-bit bytes, a line
/// over the 998 octets of RFC 5322, a line that starts with a dot, a bare CR. A sample that lost
/// one of them would pass without testing it.
pub fn assert_has_hard_cases(messages: &[CorpusMessage]) {
    fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
        raw.split(|&b| b == b'\n')
    }
    type Case = (&'static str, fn(&[u8]) -> bool);
    let cases: [Case; 4] = [
        ("8-bit bytes", |raw| raw.iter().any(|&b| b >= 0x80)),
        ("a line over 998 octets", |raw| {
            lines(raw).any(|l| l.len() > 999)
        }),
        ("a line starting with a dot", |raw| {
            lines(raw).any(|l| l.starts_with(b"."))
        }),
        ("a bare CR", |raw| {
            raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
        }),
    ];
    let raws: Vec<Vec<u8>> = messages.iter().map(CorpusMessage::raw).collect();
    for (case, test) in cases {
        assert!(
            raws.iter().any(|raw| test(raw)),
            "no message in the sample has {case}"
        );
    }
}

fn corpus_dir(name: &str) -> PathBuf {
    let dir = repo_root().join(".corpus").join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-corpus first",
        dir.display()
    );
    dir
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
}

/// Writes `contents` to a new file `name` in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_ref())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The addresses Moat logged for a service, as `dnsbl listening addr=...`, with colour codes
/// and quotes removed.
pub fn service_addrs(log: &str, service: &str) -> Vec<SocketAddr> {
    let marker = format!("{service} listening");
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains(&marker))
        .filter_map(|line| {
            let (_, rest) = line.split_once("addr=")?;
            let value = rest.split_whitespace().next()?;
            value.trim_matches(|c| c == '"' || c == ',').parse().ok()
        })
        .collect()
}
