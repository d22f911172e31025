//! Real Postfix with `check_policy_service` against `moat greylist policy`, for one message end
//! to end: the first attempt is refused with 450 4.7.1, the retry after the delay is accepted,
//! and the message reaches the next hop (smtp-sink) with the X-Greylist header.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{SmtpConnection, TempDir, free_port, wait_until};

#[path = "support/greylist_harness.rs"]
mod harness;
use harness::PolicyProcess;

/// A throwaway Postfix: its own configuration and queue directories, smtpd on a loopback port.
struct Postfix {
    config_dir: PathBuf,
    smtp_port: u16,
}

impl Postfix {
    fn start(dir: &Path, policy_port: u16, relay_port: u16) -> Postfix {
        let config_dir = dir.join("etc");
        let queue_dir = dir.join("queue");
        let data_dir = dir.join("data");
        for path in [&config_dir, &queue_dir, &data_dir] {
            fs::create_dir_all(path).expect("create a Postfix directory");
        }
        let smtp_port = free_port();
        fs::write(
            config_dir.join("main.cf"),
            main_cf(dir, policy_port, relay_port),
        )
        .expect("main.cf");
        fs::write(config_dir.join("master.cf"), master_cf(smtp_port)).expect("master.cf");
        // Postfix's data directory belongs to its mail owner.
        let _ = Command::new("chown")
            .args(["postfix:postfix"])
            .arg(&data_dir)
            .status();

        let status = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&config_dir)
            .arg("start")
            .stdin(Stdio::null())
            .status()
            .expect("run postfix (Debian package postfix; scripts/setup installs it)");
        assert!(
            status.success(),
            "postfix start failed; maillog:\n{}",
            maillog(dir)
        );
        wait_until(Duration::from_secs(20), "Postfix smtpd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_ok()
        });
        Postfix {
            config_dir,
            smtp_port,
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn maillog(dir: &Path) -> String {
    fs::read_to_string(dir.join("maillog")).unwrap_or_default()
}

fn main_cf(dir: &Path, policy_port: u16, relay_port: u16) -> String {
    let dir = dir.display();
    format!(
        "\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.rcpt.example
mydestination =
mynetworks =
relay_domains = rcpt.example
relayhost = [127.0.0.1]:{relay_port}
alias_maps =
alias_database =
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{policy_port}
smtpd_policy_service_timeout = 10s
smtpd_delay_reject = yes
"
    )
}

fn master_cf(smtp_port: u16) -> String {
    format!(
        "\
127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
showq     unix n - n - - showq
postlog   unix-dgram n - n - 1 postlogd
"
    )
}

/// smtp-sink as the next hop, dumping each message into a directory.
struct Sink {
    child: Child,
    port: u16,
    dump_dir: PathBuf,
}

impl Sink {
    fn start(dir: &Path) -> Sink {
        let dump_dir = dir.join("sink");
        fs::create_dir_all(&dump_dir).expect("create the dump directory");
        let _ = Command::new("chown").arg("nobody").arg(&dump_dir).status();
        let port = free_port();
        let child = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/%M.", dump_dir.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        wait_until(Duration::from_secs(10), "smtp-sink to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sink {
            child,
            port,
            dump_dir,
        }
    }

    fn messages(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dump_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SMTP transaction up to RCPT; returns the RCPT reply's code and text.
fn try_rcpt(port: u16) -> (u16, String, SmtpConnection) {
    let addr = format!("127.0.0.1:{port}").parse().expect("an address");
    let mut smtp = SmtpConnection::connect(addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO mx1.sender.example").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<alice@sender.example>").code, 250);
    let reply = smtp.command("RCPT TO:<bob@rcpt.example>");
    (reply.code, reply.text(), smtp)
}

#[test]
fn postfix_defers_the_first_attempt_and_accepts_the_retry_after_the_delay() {
    let dir = TempDir::new("greylist-postfix");
    let policy_dir = dir.path().join("moat");
    fs::create_dir_all(&policy_dir).expect("create the policy directory");
    let moat = PolicyProcess::start(
        &policy_dir,
        "delay = \"2s\"\nretry_window = \"1h\"\nhostname = \"mx.rcpt.example\"",
    );
    let sink = Sink::start(dir.path());
    let postfix = Postfix::start(dir.path(), moat.addr.port(), sink.port);

    let (code, text, mut smtp) = try_rcpt(postfix.smtp_port);
    assert_eq!(code, 450, "{text}\nmaillog:\n{}", maillog(dir.path()));
    assert!(text.starts_with("4.7.1 "), "{text}");
    assert!(
        text.contains("Greylisted, please try again in 2 seconds"),
        "{text}"
    );
    let _ = smtp.command("QUIT");

    thread::sleep(Duration::from_millis(2_200));
    let (code, text, mut smtp) = try_rcpt(postfix.smtp_port);
    assert_eq!(code, 250, "{text}\nmaillog:\n{}", maillog(dir.path()));
    assert_eq!(smtp.command("DATA").code, 354);
    let body = "From: alice@sender.example\r\nTo: bob@rcpt.example\r\n\
                Subject: greylisted\r\n\r\nhello\r\n.";
    let reply = smtp.command(body);
    assert_eq!(reply.code, 250, "{}", reply.text());
    let _ = smtp.command("QUIT");

    wait_until(Duration::from_secs(20), "the message at smtp-sink", || {
        !sink.messages().is_empty()
    });
    let message = sink.messages().remove(0);
    assert!(message.contains("X-Greylist: delayed "), "{message}");
    assert!(message.contains("by Moat at mx.rcpt.example"), "{message}");
    assert!(message.contains("Subject: greylisted"), "{message}");
}
