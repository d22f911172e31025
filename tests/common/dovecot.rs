//! A private Dovecot for a test: LMTP to deliver into, IMAP and POP3 to read the mail back.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::fs::set_mode;
use super::process::{reap, send_signal};
use super::{STARTUP_DEADLINE, TempDir, free_port, wait_until};

/// The password of every Dovecot user.
pub const DOVECOT_PASSWORD: &str = "moat-test-password";

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
