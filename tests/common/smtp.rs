//! A line-by-line SMTP client for tests that check the server's replies.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
