//! The SMTP/LMTP client against a scripted server over loopback: each test is a transcript of
//! the lines the client must send and the replies it gets, then the results it reports.

#[path = "support/transcript_server.rs"]
mod transcript_server;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use moat_delivery::transport::RecipientResult;
use moat_delivery::transport::smtp::{Connection, Protocol, Stage, Timeouts, TransportError};
use moat_delivery::{BodyType, Envelope};

use transcript_server::{finished, server};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    command: Duration::from_secs(5),
    data: Duration::from_secs(5),
};

const EHLO_PIPELINING: &[&str] = &[
    "S: 220 lmtp.example.com ESMTP",
    "C: EHLO mx.example.com",
    "S: 250-lmtp.example.com",
    "S: 250-PIPELINING",
    "S: 250-SIZE 10240000",
    "S: 250-8BITMIME",
    "S: 250 SMTPUTF8",
];

fn with_ehlo(rest: &[&'static str]) -> Vec<&'static str> {
    EHLO_PIPELINING.iter().chain(rest).copied().collect()
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        reverse_path: "alice@example.org".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        smtputf8: false,
        body: BodyType::EightBitMime,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        helo: "client.example.org".into(),
        received_at: 1_700_000_000,
    }
}

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

fn delivered(reply: &str) -> RecipientResult {
    RecipientResult::Delivered {
        reply: reply.into(),
    }
}

#[tokio::test]
async fn pipelines_mail_rcpt_and_data_then_quits() {
    // No server line between MAIL, RCPT and DATA: a client that waited for each reply
    // would hang here and time out.
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 354 End data with <CR><LF>.<CR><LF>",
        "C: Subject: test",
        "C: ",
        "C: hello",
        "C: .",
        "S: 250 2.0.0 Ok: queued as 12345",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]))
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    assert_eq!(connection.host(), host);
    let results = connection
        .send(&envelope(&["bob@example.com"]), MESSAGE)
        .await
        .expect("send");
    assert_eq!(results, [delivered("250 2.0.0 Ok: queued as 12345")]);
    assert!(connection.is_usable());
    connection.quit().await;
    finished(task).await;
}

#[tokio::test]
async fn dot_stuffs_lines_that_begin_with_a_dot() {
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=31 BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 354 go ahead",
        "C: Subject: dots",
        "C: ",
        "C: ..foo",
        "C: ..",
        "C: end",
        "C: .",
        "S: 250 2.0.0 Ok",
    ]))
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    // The last line lacks its CRLF: the client must add one before the final dot.
    let message = b"Subject: dots\r\n\r\n.foo\r\n.\r\nend";
    let results = connection
        .send(&envelope(&["bob@example.com"]), message)
        .await
        .expect("send");
    assert_eq!(results, [delivered("250 2.0.0 Ok")]);
    finished(task).await;
}

#[tokio::test]
async fn lmtp_gives_each_accepted_recipient_its_own_final_reply() {
    let (host, task) = server(vec![
        "S: 220 lmtp.example.com LMTP",
        "C: LHLO mx.example.com",
        "S: 250-lmtp.example.com",
        "S: 250-PIPELINING",
        "S: 250 8BITMIME",
        "C: MAIL FROM:<alice@example.org> BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: RCPT TO:<carol@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 250 2.1.5 Ok",
        "S: 354 go ahead",
        "C: Subject: test",
        "C: ",
        "C: hello",
        "C: .",
        "S: 250 2.0.0 <bob@example.com> Saved",
        "S: 452 4.2.2 <carol@example.com> Mailbox full",
    ])
    .await;

    let mut connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let envelope = envelope(&["bob@example.com", "carol@example.com"]);
    let results = connection.send(&envelope, MESSAGE).await.expect("send");
    assert_eq!(
        results,
        [
            delivered("250 2.0.0 <bob@example.com> Saved"),
            RecipientResult::Deferred {
                reason: "452 4.2.2 <carol@example.com> Mailbox full".into()
            },
        ]
    );
    assert!(connection.is_usable());
    finished(task).await;
}

#[tokio::test]
async fn keeps_lmtp_replies_already_given_when_the_session_drops() {
    let (host, task) = server(vec![
        "S: 220 lmtp.example.com LMTP",
        "C: LHLO mx.example.com",
        "S: 250 lmtp.example.com",
        "C: MAIL FROM:<alice@example.org>",
        "S: 250 2.1.0 Ok",
        "C: RCPT TO:<bob@example.com>",
        "S: 250 2.1.5 Ok",
        "C: RCPT TO:<carol@example.com>",
        "S: 250 2.1.5 Ok",
        "C: DATA",
        "S: 354 go ahead",
        "C: Subject: test",
        "C: ",
        "C: hello",
        "C: .",
        "S: 250 2.0.0 Saved",
        // The server ends here and the connection closes before carol's reply.
    ])
    .await;

    let mut connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let envelope = envelope(&["bob@example.com", "carol@example.com"]);
    let results = connection
        .send(&envelope, MESSAGE)
        .await
        .expect("partial results");
    assert_eq!(results[0], delivered("250 2.0.0 Saved"));
    let RecipientResult::Deferred { reason } = &results[1] else {
        panic!("the second recipient should be deferred: {results:?}");
    };
    assert!(
        reason.starts_with("4.4.2 lmtp session failed after the final dot: "),
        "{reason}"
    );
    assert!(!connection.is_usable());
    finished(task).await;
}

#[tokio::test]
async fn reports_a_refused_rcpt_among_accepted_ones() {
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: RCPT TO:<nobody@example.com>",
        "C: RCPT TO:<carol@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 550-5.1.1 <nobody@example.com>: Recipient address rejected:",
        "S: 550 5.1.1 User unknown in local recipient table",
        "S: 250 2.1.5 Ok",
        "S: 354 go ahead",
        "C: Subject: test",
        "C: ",
        "C: hello",
        "C: .",
        "S: 250 2.0.0 Ok",
    ]))
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let envelope = envelope(&["bob@example.com", "nobody@example.com", "carol@example.com"]);
    let results = connection.send(&envelope, MESSAGE).await.expect("send");
    assert_eq!(
        results,
        [
            delivered("250 2.0.0 Ok"),
            RecipientResult::Failed {
                reason: "550 5.1.1 <nobody@example.com>: Recipient address rejected: \
                         User unknown in local recipient table"
                    .into()
            },
            delivered("250 2.0.0 Ok"),
        ]
    );
    finished(task).await;
}

#[tokio::test]
async fn a_refused_mail_from_applies_to_every_recipient_and_the_session_goes_on() {
    // Without PIPELINING: the client stops at the refused MAIL and sends no RCPT.
    let (host, task) = server(vec![
        "S: 220 mx.example.net ESMTP",
        "C: EHLO mx.example.com",
        "S: 250 mx.example.net",
        "C: MAIL FROM:<alice@example.org>",
        "S: 550 5.7.1 Sender rejected",
        "C: MAIL FROM:<alice@example.org>",
        "S: 250 2.1.0 Ok",
        "C: RCPT TO:<bob@example.com>",
        "S: 451 4.3.0 Try later",
        "C: RSET",
        "S: 250 2.0.0 Ok",
    ])
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let both = envelope(&["bob@example.com", "carol@example.com"]);
    let refused = RecipientResult::Failed {
        reason: "550 5.7.1 Sender rejected".into(),
    };
    let results = connection.send(&both, MESSAGE).await.expect("send");
    assert_eq!(results, [refused.clone(), refused]);

    // No recipient accepted: RSET instead of DATA, and the connection stays usable.
    let results = connection
        .send(&envelope(&["bob@example.com"]), MESSAGE)
        .await;
    assert_eq!(
        results.expect("second send"),
        [RecipientResult::Deferred {
            reason: "451 4.3.0 Try later".into()
        }]
    );
    assert!(connection.is_usable());
    finished(task).await;
}

#[tokio::test]
async fn a_refused_data_applies_to_the_accepted_recipients_only() {
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: RCPT TO:<nobody@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 250 2.1.5 Ok",
        "S: 550 5.1.1 User unknown",
        "S: 451 4.3.0 Queue file write error",
        "C: RSET",
        "S: 250 2.0.0 Ok",
    ]))
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let envelope = envelope(&["bob@example.com", "nobody@example.com"]);
    let results = connection.send(&envelope, MESSAGE).await.expect("send");
    assert_eq!(
        results,
        [
            RecipientResult::Deferred {
                reason: "451 4.3.0 Queue file write error".into()
            },
            RecipientResult::Failed {
                reason: "550 5.1.1 User unknown".into()
            },
        ]
    );
    assert!(connection.is_usable());
    finished(task).await;
}

#[tokio::test]
async fn ends_a_data_accepted_without_recipients_with_a_lone_dot() {
    // RFC 2920 section 3.1: a pipelining server may accept DATA after refusing every RCPT.
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
        "C: RCPT TO:<nobody@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
        "S: 550 5.1.1 User unknown",
        "S: 354 go ahead",
        "C: .",
        "S: 554 5.5.1 No valid recipients",
        "C: RSET",
        "S: 250 2.0.0 Ok",
    ]))
    .await;

    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let results = connection
        .send(&envelope(&["nobody@example.com"]), MESSAGE)
        .await
        .expect("send");
    assert_eq!(
        results,
        [RecipientResult::Failed {
            reason: "550 5.1.1 User unknown".into()
        }]
    );
    assert!(connection.is_usable());
    finished(task).await;
}

#[tokio::test]
async fn connects_to_a_bracketed_ipv6_address() {
    // Skipped where the test host has no IPv6 loopback.
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        return;
    };
    let port = listener.local_addr().expect("local address").port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.write_all(b"220 ready\r\n").await.expect("greet");
        let mut stream = BufReader::new(stream);
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await.expect("lhlo");
        stream
            .get_mut()
            .write_all(b"250 ok\r\n")
            .await
            .expect("reply");
        line
    });
    let host = format!("[::1]:{port}");
    let connection = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    assert_eq!(connection.host(), host);
    assert_eq!(server.await.expect("server"), b"LHLO mx.example.com\r\n");
}

#[tokio::test]
async fn fails_smtputf8_recipients_when_the_host_lacks_it() {
    let (host, task) = server(vec![
        "S: 220 mx.example.net ESMTP",
        "C: EHLO mx.example.com",
        "S: 250-mx.example.net",
        "S: 250 PIPELINING",
    ])
    .await;
    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let mut envelope = envelope(&["jörg@example.com"]);
    envelope.smtputf8 = true;
    let results = connection.send(&envelope, MESSAGE).await.expect("send");
    assert_eq!(
        results,
        [RecipientResult::Failed {
            reason: "5.6.7 downstream lacks SMTPUTF8".into()
        }]
    );
    finished(task).await;
}

#[tokio::test]
async fn refuses_a_greeting_other_than_220() {
    let (host, task) = server(vec!["S: 554 5.3.2 No service"]).await;
    let error = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, TransportError::Refused { stage: Stage::Greeting, reply, .. }
            if reply == "554 5.3.2 No service"),
        "{error}"
    );
    finished(task).await;
}

#[tokio::test]
async fn reports_a_refused_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("local address").to_string();
    drop(listener);
    let error = Connection::open(&host, Protocol::Lmtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, TransportError::Connect { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("connecting to downstream host failed: 127.0.0.1:")
    );
}

#[tokio::test]
async fn times_out_on_a_host_that_never_greets() {
    // The kernel completes the handshake from the backlog; nobody ever calls accept.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("local address").to_string();
    let timeouts = Timeouts {
        command: Duration::from_millis(200),
        ..TIMEOUTS
    };
    let error = Connection::open(&host, Protocol::Smtp, "mx.example.com", &timeouts)
        .await
        .expect_err("silent host");
    assert!(
        matches!(
            error,
            TransportError::Timeout {
                stage: Stage::Greeting,
                ..
            }
        ),
        "{error}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_connection_lost_mid_transaction_is_an_error_and_poisons_the_connection() {
    let (host, task) = server(with_ehlo(&[
        "C: MAIL FROM:<alice@example.org> SIZE=24 BODY=8BITMIME",
        "C: RCPT TO:<bob@example.com>",
        "C: DATA",
        "S: 250 2.1.0 Ok",
    ]))
    .await;
    let mut connection = Connection::open(&host, Protocol::Smtp, "mx.example.com", &TIMEOUTS)
        .await
        .expect("open");
    let envelope = envelope(&["bob@example.com"]);
    let error = connection
        .send(&envelope, MESSAGE)
        .await
        .expect_err("dropped");
    assert!(
        matches!(
            error,
            TransportError::Closed {
                stage: Stage::Rcpt,
                ..
            }
        ),
        "{error}"
    );
    assert!(!connection.is_usable());
    let again = connection
        .send(&envelope, MESSAGE)
        .await
        .expect_err("unusable");
    assert!(matches!(again, TransportError::Unusable { .. }), "{again}");
    finished(task).await;
}
