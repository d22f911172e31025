//! Transcript tests: a whole session driven in memory, line by line, with the replies expected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_delivery::{DeliveryConfig, Queue, Route, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::inbound::Inbound;
use super::{Next, Session};
use crate::config::SmtpConfig;
use crate::recipients::{AcceptedDomains, RecipientList};
use crate::session::framing::BareNewline;
use crate::{Shared, listener};

/// A session on one end of an in-memory pipe, and the Maildir root it delivers into.
struct Transcript {
    client: DuplexStream,
    maildir: PathBuf,
    session: tokio::task::JoinHandle<Next>,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moat-transcript-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

async fn start(name: &str, policy: BareNewline) -> Transcript {
    let dir = scratch(name);
    let maildir = dir.join("mail");
    std::fs::create_dir_all(&maildir).expect("create maildir root");
    let mut routes = HashMap::new();
    routes.insert("example.com".to_string(), Route::Maildir(maildir.clone()));
    let delivery = DeliveryConfig {
        hostname: "mx.example.com".into(),
        routes,
        fallback_route: None,
        concurrency: 2,
        retry_schedule: vec![Duration::from_secs(60)],
        max_queue_lifetime: Duration::from_secs(3600),
        timeouts: Timeouts::default(),
    };
    let queue = Queue::start(&dir.join("queue"), delivery).expect("start queue");

    let mut smtp = SmtpConfig::with_hostname("mx.example.com");
    smtp.bare_newline = policy;
    smtp.max_message_size = 1_000;
    let mut domains = AcceptedDomains::new();
    domains.insert("example.com", RecipientList::AcceptAll);
    let content_budget = crate::ContentBudget::new(smtp.max_content_in_memory);
    let shared = Arc::new(Shared {
        smtp,
        domains,
        tls: None,
        queue,
        checks: crate::Checks::default(),
        sessions: listener::SessionCounts::default(),
        content_budget,
        pregreet_passed: Mutex::new(HashMap::new()),
        // Never shut down: the sender half is dropped at once, and the value stays false.
        closing: tokio::sync::watch::channel(false).1,
    });

    let (client, server) = duplex(64 * 1024);
    let peer: SocketAddr = "192.0.2.1:40000".parse().expect("documentation address");
    let session = tokio::spawn(async move {
        let mut inbound = Inbound::new(server, Duration::from_secs(5));
        let mut session = Session::new(shared, peer);
        let next = session.run(&mut inbound).await;
        let _ = inbound.flush().await;
        next
    });
    Transcript {
        client,
        maildir,
        session,
    }
}

impl Transcript {
    /// Sends bytes, then reads replies until `count` final reply lines have arrived.
    async fn exchange(&mut self, send: &[u8], count: usize) -> Vec<String> {
        self.client.write_all(send).await.expect("write to session");
        let mut replies = Vec::new();
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        while replies.len() < count {
            let read = tokio::time::timeout(Duration::from_secs(5), self.client.read(&mut buffer))
                .await
                .expect("reply within 5 s")
                .expect("read from session");
            assert!(read > 0, "session closed; replies so far: {replies:?}");
            text.push_str(&String::from_utf8_lossy(&buffer[..read]));
            while let Some(end) = text.find("\r\n") {
                let line: String = text.drain(..end + 2).collect();
                if line.as_bytes().get(3) == Some(&b' ') {
                    replies.push(line.trim_end().to_string());
                }
            }
        }
        replies
    }

    /// The Maildir files delivered to `local@example.com`, waiting up to 5 s for `count`.
    async fn delivered(&self, local: &str, count: usize) -> Vec<Vec<u8>> {
        let new = self.maildir.join("example.com").join(local).join("new");
        for _ in 0..100 {
            let files: Vec<_> = std::fs::read_dir(&new)
                .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_default();
            if files.len() >= count {
                return files
                    .iter()
                    .map(|path| std::fs::read(path).expect("read mail"))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{count} message(s) for {local} not delivered within 5 s");
    }
}

/// The content after the Received header Moat adds.
fn without_trace(message: &[u8]) -> &[u8] {
    let mut index = 0;
    loop {
        let end = message[index..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("header line")
            + index
            + 2;
        index = end;
        if !matches!(message.get(index), Some(b' ' | b'\t')) {
            return &message[index..];
        }
    }
}

fn code(reply: &str) -> &str {
    &reply[..reply.len().min(9)]
}

#[tokio::test]
async fn a_pipelined_transaction_is_answered_in_order_and_delivered() {
    let mut transcript = start("pipelined", BareNewline::Reject).await;
    let replies = transcript
        .exchange(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", 4)
        .await;
    let codes: Vec<_> = replies.iter().map(|reply| &reply[..3]).collect();
    assert_eq!(codes, ["250", "250", "250", "354"]);

    let replies = transcript
        .exchange(b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n", 2)
        .await;
    assert!(
        replies[0].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    assert_eq!(replies[1], "221 2.0.0 Bye");
    let mail = transcript.delivered("b", 1).await;
    assert_eq!(without_trace(&mail[0]), b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(transcript.session.await.expect("session ends"), Next::Close);
}

#[tokio::test]
async fn an_empty_message_ends_at_the_first_dot() {
    let mut transcript = start("empty", BareNewline::Reject).await;
    transcript.exchange(b"EHLO c.example.org\r\n", 1).await;
    let replies = transcript
        .exchange(b"MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", 3)
        .await;
    assert_eq!(code(&replies[2]), "354 End d");
    let replies = transcript.exchange(b".\r\n", 1).await;
    assert!(replies[0].starts_with("250 2.0.0"), "{replies:?}");
    let mail = transcript.delivered("b", 1).await;
    assert!(without_trace(&mail[0]).is_empty());
}

#[tokio::test]
async fn bdat_chunks_are_joined_even_when_crlf_is_split_between_them() {
    let mut transcript = start("bdat", BareNewline::Reject).await;
    transcript
        .exchange(
            b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n",
            3,
        )
        .await;
    let replies = transcript.exchange(b"BDAT 13\r\nSubject: x\r\n\r", 1).await;
    assert_eq!(replies[0], "250 2.0.0 13 octets received");
    let replies = transcript.exchange(b"BDAT 8 LAST\r\n\n.body\r\n", 1).await;
    assert!(
        replies[0].starts_with("250 2.0.0 Ok: queued as"),
        "{replies:?}"
    );
    let mail = transcript.delivered("b", 1).await;
    assert_eq!(without_trace(&mail[0]), b"Subject: x\r\n\r\n.body\r\n");
}

#[tokio::test]
async fn a_bare_lf_in_data_is_refused_and_the_session_closed() {
    let mut transcript = start("bare-lf", BareNewline::Reject).await;
    transcript.exchange(b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", 4).await;
    let replies = transcript
        .exchange(b"a\n.\nMAIL FROM:<x@example.org>\r\n", 1)
        .await;
    assert_eq!(
        replies[0],
        "521 5.5.2 mx.example.com Error: bare <LF> received"
    );
    assert_eq!(transcript.session.await.expect("session ends"), Next::Close);
}

#[tokio::test]
async fn normalize_never_lets_a_second_message_through() {
    let mut transcript = start("smuggle", BareNewline::Normalize).await;
    transcript.exchange(b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", 4).await;
    let smuggled = b"Subject: one\r\n\r\nbody\n.\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n";
    let replies = transcript.exchange(smuggled, 1).await;
    assert!(
        replies[0].starts_with("250 2.0.0 Ok: queued as"),
        "{replies:?}"
    );
    let replies = transcript.exchange(b"NOOP\r\n", 1).await;
    assert_eq!(replies[0], "250 2.0.0 Ok");
    let mail = transcript.delivered("b", 1).await;
    assert!(without_trace(&mail[0]).ends_with(b"DATA\r\n\r\nsmuggled\r\n"));
    assert!(
        !transcript.maildir.join("example.com/c").exists(),
        "a smuggled message was delivered"
    );
}

#[tokio::test]
async fn an_oversized_message_is_read_to_its_end_then_refused() {
    let mut transcript = start("too-big", BareNewline::Reject).await;
    transcript.exchange(b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n", 4).await;
    let mut big = vec![b'x'; 2_000];
    big.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let replies = transcript.exchange(&big, 2).await;
    assert_eq!(
        replies[0],
        "552 5.3.4 Message size exceeds fixed limit of 1000 octets"
    );
    assert_eq!(replies[1], "250 2.0.0 Ok");
}

#[tokio::test]
async fn a_bdat_line_that_cannot_be_parsed_closes_the_session() {
    let mut transcript = start("bdat-syntax", BareNewline::Reject).await;
    transcript
        .exchange(
            b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n",
            3,
        )
        .await;
    let replies = transcript
        .exchange(b"BDAT 10 FOO\r\nQUIT\r\nQUIT\r\n", 1)
        .await;
    assert!(replies[0].starts_with("501 5.5.4"), "{replies:?}");
    assert_eq!(transcript.session.await.expect("session ends"), Next::Close);
}

#[tokio::test]
async fn control_characters_in_addresses_are_refused() {
    let mut transcript = start("control", BareNewline::Reject).await;
    transcript
        .exchange(b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\n", 2)
        .await;
    let replies = transcript
        .exchange(b"RCPT TO:<\"nul\x00\"@example.com>\r\n", 1)
        .await;
    assert_eq!(replies[0], "501 5.1.3 Bad recipient address syntax");
}
