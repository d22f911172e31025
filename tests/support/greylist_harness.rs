//! Shared by the greylist end-to-end tests (`#[path = "support/greylist_harness.rs"] mod
//! harness;`): a real `moat greylist policy` process, a line-by-line policy client, and
//! Postfix-style requests.

// Each test binary uses only part of the harness.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long `moat greylist policy` may take to listen.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// The baseline request of the cases file: `(name, value)` pairs as Postfix sends them.
pub fn postfix_request(
    client: &str,
    sender: &str,
    recipient: &str,
    instance: &str,
) -> Vec<(String, String)> {
    let pairs = [
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", client),
        ("client_name", "mx1.sender.example"),
        ("reverse_client_name", "mx1.sender.example"),
        ("helo_name", "mx1.sender.example"),
        ("sender", sender),
        ("recipient", recipient),
        ("recipient_count", "0"),
        ("queue_id", ""),
        ("instance", instance),
        ("size", "0"),
        ("etrn_domain", ""),
        ("stress", ""),
        ("sasl_method", ""),
        ("sasl_username", ""),
        ("sasl_sender", ""),
        ("ccert_subject", ""),
        ("ccert_issuer", ""),
        ("ccert_fingerprint", ""),
        ("encryption_protocol", ""),
        ("encryption_cipher", ""),
        ("encryption_keysize", "0"),
    ];
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The request as bytes on the wire, each line ending in `eol`, with the blank line after.
pub fn wire(request: &[(String, String)], eol: &str) -> Vec<u8> {
    let mut bytes = String::new();
    for (name, value) in request {
        bytes.push_str(&format!("{name}={value}{eol}"));
    }
    bytes.push_str(eol);
    bytes.into_bytes()
}

/// A connection to a policy server that sends requests and reads replies.
pub struct PolicyClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl PolicyClient {
    /// Connects with a 30 s read timeout.
    pub fn connect(addr: SocketAddr) -> PolicyClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        let writer = stream.try_clone().expect("clone a TCP stream");
        PolicyClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends bytes as given.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the policy server");
    }

    /// Reads one reply: the lines up to the blank line, joined with `\n`.
    ///
    /// # Panics
    /// If the server closes the connection first.
    pub fn read_reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a reply line");
            assert!(
                n > 0,
                "the policy server closed the connection; lines so far: {lines:?}"
            );
            assert!(line.ends_with('\n'), "a reply line without LF: {line:?}");
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                return lines.join("\n");
            }
            lines.push(line.to_owned());
        }
    }

    /// Sends a request with LF line ends and returns the reply's action (without `action=`).
    pub fn ask(&mut self, request: &[(String, String)]) -> String {
        self.send(&wire(request, "\n"));
        let reply = self.read_reply();
        reply
            .strip_prefix("action=")
            .unwrap_or_else(|| panic!("not an action reply: {reply:?}"))
            .to_owned()
    }

    /// Whether the server closed the connection without sending anything more.
    pub fn closed_without_reply(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(_) => false,
        }
    }
}

/// A running `moat greylist policy` with its own data directory and log.
pub struct PolicyProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl PolicyProcess {
    /// Writes `config` (the body of `[greylist]`) into `dir` and starts the policy service with
    /// data in `dir/data`.
    pub fn start(dir: &Path, greylist_section: &str) -> PolicyProcess {
        let config_path = dir.join("moat.toml");
        fs::write(&config_path, format!("[greylist]\n{greylist_section}\n")).expect("write config");
        let data_dir = dir.join("data");
        let log_path = dir.join("moat-greylist.log");
        let mut process = PolicyProcess {
            addr: "127.0.0.1:0".parse().expect("an address"),
            data_dir,
            config_path,
            log_path,
            child: None,
        };
        process.launch("127.0.0.1:0");
        process
    }

    /// Starts the process again on the same port, configuration and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running process");
        let listen = self.addr.to_string();
        self.launch(&listen);
    }

    fn launch(&mut self, listen: &str) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the log");
        let before = fs::read_to_string(&self.log_path).unwrap_or_default().len();
        let child = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(["greylist", "policy", "--listen", listen, "--config"])
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env(
                "RUST_LOG",
                std::env::var("MOAT_TEST_RUST_LOG").unwrap_or("info".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start moat greylist policy");
        self.child = Some(child);

        let start = Instant::now();
        loop {
            let log = fs::read_to_string(&self.log_path).unwrap_or_default();
            let fresh = log.get(before..).unwrap_or("");
            if let Some(addr) = fresh
                .lines()
                .filter(|l| l.contains("greylist policy listening"))
                .find_map(|l| l.split("addr=").nth(1))
            {
                self.addr = addr.trim().parse().expect("a logged address");
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("moat greylist policy exited with {status}; log:\n{log}");
            }
            assert!(
                start.elapsed() < STARTUP_DEADLINE,
                "no listening line; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connected client.
    pub fn client(&self) -> PolicyClient {
        PolicyClient::connect(self.addr)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("moat greylist policy ignored SIGTERM; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for PolicyProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("moat greylist policy log:\n{}", self.log());
        }
        self.kill9();
    }
}
