//! A private clamd for the content tests: Debian's clamav-daemon run in the foreground with
//! its own clamd.conf in a temporary directory, listening on a free loopback port and a Unix
//! socket there, with only the signature files the test wrote. No official database is ever
//! downloaded (freshclam is never run): clamd starts in well under a second on a small
//! `.hdb`/`.ndb` set.
//!
//! A test file includes it with `#[path = "support/content_clamd.rs"] mod clamd;`, after
//! `mod common;`.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{TempDir, free_port};

/// How long clamd may take to answer PING after its start. It takes well under a second with
/// a handful of signatures; the margin is for a loaded CI machine.
pub const CLAMD_STARTUP: Duration = Duration::from_secs(30);

/// A running clamd.
pub struct Clamd {
    /// Its TCP address on loopback.
    pub tcp: SocketAddr,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// The directory its signatures are read from.
    pub database: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

impl Clamd {
    /// Starts clamd on the signatures that `write_signatures` puts into the database
    /// directory, with `extra` lines appended to clamd.conf (`StreamMaxLength 1K`, say), and
    /// waits until it answers PING.
    ///
    /// # Panics
    /// When clamd is not installed (scripts/setup installs it), exits, or does not answer in
    /// time; the message holds its log.
    pub fn start(write_signatures: impl FnOnce(&Path), extra: &str) -> Clamd {
        let dir = TempDir::new("clamd");
        let database = dir.path().join("db");
        write_signatures(&database);
        let socket = dir.path().join("clamd.sock");
        let port = free_port();
        let log = dir.path().join("clamd.log");
        let config = dir.path().join("clamd.conf");
        fs::write(
            &config,
            format!(
                "Foreground yes\n\
LogFile {log}\n\
LogTime yes\n\
PidFile {dir}/clamd.pid\n\
TemporaryDirectory {dir}\n\
DatabaseDirectory {database}\n\
LocalSocket {socket}\n\
TCPSocket {port}\n\
TCPAddr 127.0.0.1\n\
# The database never changes under the tests: no reload checks.\n\
SelfCheck 0\n\
{extra}\n",
                log = log.display(),
                dir = dir.path().display(),
                database = database.display(),
                socket = socket.display(),
            ),
        )
        .expect("write clamd.conf");

        let program = clamd_program();
        let output = fs::File::create(dir.path().join("clamd.out")).expect("create clamd.out");
        let child = Command::new(&program)
            .arg("--config-file")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone a file handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (scripts/setup installs clamav-daemon)",
                    program.display()
                )
            });

        let mut clamd = Clamd {
            tcp: SocketAddr::from(([127, 0, 0, 1], port)),
            socket,
            database,
            child: Some(child),
            log,
            dir,
        };
        clamd.wait_until_ready();
        clamd
    }

    fn wait_until_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.ping_tcp() && self.ping_socket() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!("clamd exited with {status}; its output:\n{}", self.output());
            }
            assert!(
                start.elapsed() < CLAMD_STARTUP,
                "clamd did not answer PING within {CLAMD_STARTUP:?}; its output:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether clamd answers PONG on its TCP socket.
    pub fn ping_tcp(&self) -> bool {
        let Ok(stream) = TcpStream::connect_timeout(&self.tcp, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        ping(stream)
    }

    /// Whether clamd answers PONG on its Unix socket.
    pub fn ping_socket(&self) -> bool {
        let Ok(stream) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        ping(stream)
    }

    /// The process id, while clamd runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops clamd (SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes clamd (SIGSTOP): it keeps its sockets, so connections are accepted by the
    /// kernel, but it answers nothing: a clamd that is too slow.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen clamd run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().expect("clamd is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// What clamd wrote to its log and to stdout and stderr.
    pub fn output(&self) -> String {
        let mut text = String::new();
        for file in [self.log.clone(), self.dir.path().join("clamd.out")] {
            text.push_str(&String::from_utf8_lossy(
                &fs::read(&file).unwrap_or_default(),
            ));
        }
        text
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("clamd's output:\n{}", self.output());
        }
        if self.child.is_some() {
            // A frozen clamd must be woken to die cleanly; SIGKILL works either way.
            self.stop();
        }
    }
}

/// Debian installs clamd in /usr/sbin, which a non-root PATH may lack.
fn clamd_program() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/clamd");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("clamd")
    }
}

fn ping(mut stream: impl Read + Write) -> bool {
    if stream.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply.starts_with(b"PONG")
}

/// Whether clamd is installed, for a clear message before anything starts.
pub fn installed() -> bool {
    clamd_program().exists()
        || Command::new("clamd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}
