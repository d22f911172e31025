//! Other programs of a test: free ports, polling until something holds, signals, and the
//! Python helpers in `tests/support/`.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::repo_root;

/// How long Moat or Dovecot may take to start listening. A debug build on a loaded 2-core CI
/// machine starts in well under a second; the margin is for the first start, which generates the
/// self-signed TLS certificate.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

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

/// Sends `signal` (a name such as `TERM`) to a process with the `kill` command; std only kills.
pub(super) fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` to exit, sending SIGKILL if it has not after `grace`.
pub(super) fn reap(child: &mut Child, grace: Duration) -> ExitStatus {
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
