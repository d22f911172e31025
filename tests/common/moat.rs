//! A real `moat serve` for a test: its configuration, its process and its log.

use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{reap, send_signal};
use super::{STARTUP_DEADLINE, TempDir};

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

    /// Sends SIGTERM and returns at once, so the test can watch the shutdown; [`Moat::stop`]
    /// then reaps the process.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            send_signal(child.id(), "TERM");
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
