//! The raw SMTP client of the refusal tests (`tests/smtp_refusals_*.rs`) and the assertions they
//! share. Bytes go out exactly as given, so bare LFs, pipelined batches and BDAT chunks reach the
//! server as the test wrote them; replies, silence and the close are checked.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use super::{Moat, Reply, maildir_new, wait_until};

/// The server's name in these tests, so that replies naming it can be recognised.
pub const HOST: &str = "mx.example.com";

/// The reverse-path of every test transaction.
pub const SENDER: &str = "sender@example.org";

/// The longest wait for a reply or for the server to close. Every timeout under test is 1 or 2
/// seconds, so only a server that hangs reaches it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a delivery to the Maildir may take after the 250; it is normally a few milliseconds.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

/// How long the client waits to be sure the server sends nothing.
pub const QUIET: Duration = Duration::from_millis(300);

/// Starts Moat with the name [`HOST`] and `smtp` as the body of its `[smtp]` table.
pub fn start(smtp: &str) -> Moat {
    Moat::start(&format!("hostname = \"{HOST}\"\n\n[smtp]\n{smtp}\n"))
}

/// Asserts the reply code and that every line carries the enhanced status code (RFC 2034
/// section 4 repeats it on each line); `""` for replies that carry none.
pub fn assert_reply(reply: &Reply, code: u16, status: &str) {
    assert_eq!(reply.code, code, "unexpected reply {reply:?}");
    if status.is_empty() {
        return;
    }
    for line in &reply.lines {
        assert!(
            line.strip_prefix(status)
                .is_some_and(|rest| rest.starts_with(' ')),
            "reply {code} does not carry {status} on every line: {reply:?}"
        );
    }
}

/// Asserts a 250 that names the queue id the message was spooled under.
pub fn assert_queued(reply: &Reply) {
    assert_reply(reply, 250, "2.0.0");
    let id = reply.lines[0].strip_prefix("2.0.0 Ok: queued as ");
    assert!(
        id.is_some_and(|id| !id.is_empty()),
        "no queue id in {reply:?}"
    );
}

/// Waits until `local@localhost` has `count` messages and returns them.
pub fn wait_for_messages(moat: &Moat, local: &str, count: usize) -> Vec<PathBuf> {
    let maildir = moat.maildir("localhost", local);
    let what = format!("{count} message(s) in {}", maildir.display());
    wait_until(DELIVERY_DEADLINE, &what, || {
        maildir_new(&maildir).len() >= count
    });
    maildir_new(&maildir)
}

/// Every message delivered under the Maildir root, for any domain and user.
pub fn all_delivered(moat: &Moat) -> Vec<PathBuf> {
    let subdirectories = |dir: PathBuf| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    subdirectories(moat.data_dir.join("mail"))
        .into_iter()
        .flat_map(subdirectories)
        .flat_map(|maildir| maildir_new(&maildir))
        .collect()
}

/// A raw SMTP client: bytes go out exactly as given; replies, silence and the close are checked.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects without reading the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        let writer = stream.try_clone().expect("clone a TCP stream");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Connects, reads the 220 greeting and says EHLO.
    pub fn greeted(moat: &Moat) -> Client {
        let mut client = Client::connect(moat.smtp_addr);
        assert_reply(&client.reply(), 220, "");
        client.expect("EHLO client.example.com", 250, "");
        client
    }

    /// A greeted client with MAIL from [`SENDER`] and one accepted recipient.
    pub fn in_transaction(moat: &Moat, recipient: &str) -> Client {
        let mut client = Client::greeted(moat);
        client.mail();
        let rcpt = format!("RCPT TO:<{recipient}>");
        client.expect(&rcpt, 250, "2.1.5");
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to the SMTP server");
    }

    /// Sends `line` with CRLF and reads the reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line` and asserts the reply's code and enhanced status, as [`assert_reply`].
    pub fn expect(&mut self, line: &str, code: u16, status: &str) {
        let reply = self.command(line);
        assert_reply(&reply, code, status);
    }

    /// Opens a transaction with MAIL from [`SENDER`].
    pub fn mail(&mut self) {
        self.expect(&format!("MAIL FROM:<{SENDER}>"), 250, "2.1.0");
    }

    /// Reads one reply, single- or multi-line; panics if the server closes or stays silent.
    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line);
            let read = read.unwrap_or_else(|e| panic!("read a reply line: {e}; so far {lines:?}"));
            assert!(
                read > 0,
                "the server closed the connection; lines so far: {lines:?}"
            );
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line.get(..3).and_then(|code| code.parse::<u16>().ok());
            let code = code.unwrap_or_else(|| panic!("not an SMTP reply line: {line:?}"));
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, lines };
            }
        }
    }

    /// Whether the server sends nothing for [`QUIET`].
    pub fn is_quiet(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(QUIET))
            .expect("set a read timeout");
        let quiet = match self.reader.fill_buf() {
            Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            Ok(_) => false,
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set a read timeout");
        quiet
    }

    /// Asserts that the server closes the connection with nothing more to say.
    pub fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "more after the last reply: {rest:?}"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(rest.is_empty(), "more after the last reply: {rest:?}");
            }
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}
