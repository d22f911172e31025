//! Layer 1 of the anti-virus: the whole message streamed to ClamAV's clamd with INSTREAM,
//! through the clamav-client crate, within a time limit.
//!
//! The crate has no time limit and hands back clamd's raw reply, so both are handled here:
//! `stream: OK` is clean, `stream: NAME FOUND` a virus, and anything else (`... ERROR`, such
//! as `INSTREAM size limit exceeded. ERROR`) is an error, which is neither. A clamd that
//! cannot be reached or does not answer in time is unavailable. Errors and unavailability
//! both leave the message unscanned, and the configured failure mode decides its fate.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clamav_client::tokio::{Socket, Tcp, TransportProtocol, scan_buffer};

use super::report::ClamdOutcome;
use super::settings::{ClamdAddress, ClamdSettings};

/// Size of the INSTREAM chunks. clamav-client sends 4 KiB by default; 64 KiB means 16 times
/// fewer writes and chunk headers for the same message, and is still far below clamd's
/// StreamMaxLength.
const CHUNK_SIZE: usize = 64 * 1024;

/// How often a clamd failure is raised again at error level; the failures between are
/// logged at debug, so that an outage does not write one error per message.
const FAILURE_ALERT_INTERVAL: Duration = Duration::from_secs(60);

/// A clamd, as the settings describe it.
#[derive(Debug)]
pub struct Clamd {
    settings: ClamdSettings,
    /// When a failure was last raised at error level.
    last_alert: Mutex<Option<Instant>>,
}

/// What clamd said: the outcome and, for a virus, its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdVerdict {
    /// Clean, virus, error or unavailable.
    pub outcome: ClamdOutcome,
    /// The virus names, when the outcome is [`ClamdOutcome::Virus`].
    pub viruses: Vec<String>,
}

impl Clamd {
    /// A client for the clamd of `settings`; nothing is connected until a scan.
    pub fn new(settings: ClamdSettings) -> Clamd {
        Clamd {
            settings,
            last_alert: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ClamdSettings {
        &self.settings
    }

    /// Streams `message` to clamd and reads its verdict, within the timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the connection, and clamd drops the scan.
    pub async fn scan(&self, message: &[u8]) -> ClamdVerdict {
        let connected = AtomicBool::new(false);
        let address = &self.settings.address;
        let reply = match address {
            ClamdAddress::Tcp(host_port) => {
                let transport = Tracked {
                    inner: Tcp {
                        host_address: host_port.as_str(),
                    },
                    connected: &connected,
                };
                self.exchange(message, transport).await
            }
            ClamdAddress::Unix(path) => {
                let transport = Tracked {
                    inner: Socket {
                        socket_path: path.as_path(),
                    },
                    connected: &connected,
                };
                self.exchange(message, transport).await
            }
        };

        let verdict = match reply {
            None => unavailable(format!(
                "clamd at {address} gave no verdict within {}",
                humantime::format_duration(self.settings.timeout)
            )),
            Some(Err(e)) if !connected.load(Ordering::Relaxed) => {
                unavailable(format!("cannot connect to clamd at {address}: {e}"))
            }
            // clamd closes the connection when a limit is reached while the message is still
            // being sent, and the crate then reports the write's error, not the reply.
            Some(Err(e)) => error(format!("clamd at {address} closed the stream: {e}")),
            Some(Ok(reply)) => parse_reply(&reply),
        };
        self.log_failure(&verdict.outcome);
        verdict
    }

    async fn exchange<T: TransportProtocol>(
        &self,
        message: &[u8],
        transport: T,
    ) -> Option<io::Result<Vec<u8>>> {
        let scan = scan_buffer(message, transport, Some(CHUNK_SIZE));
        tokio::time::timeout(self.settings.timeout, scan).await.ok()
    }

    /// Errors at most once per [`FAILURE_ALERT_INTERVAL`]: clamd down is for an operator to
    /// fix, but not to read a thousand times a minute.
    fn log_failure(&self, outcome: &ClamdOutcome) {
        let (ClamdOutcome::Error(reason) | ClamdOutcome::Unavailable(reason)) = outcome else {
            return;
        };
        let now = Instant::now();
        let mut last = self
            .last_alert
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| now.duration_since(at) >= FAILURE_ALERT_INTERVAL);
        if due {
            *last = Some(now);
            let failure_mode = self.settings.failure_mode;
            tracing::error!(reason = %reason, ?failure_mode, "clamd gave no verdict");
        } else {
            tracing::debug!(reason = %reason, "clamd gave no verdict");
        }
    }
}

fn unavailable(reason: String) -> ClamdVerdict {
    ClamdVerdict {
        outcome: ClamdOutcome::Unavailable(reason),
        viruses: Vec::new(),
    }
}

fn error(reason: String) -> ClamdVerdict {
    ClamdVerdict {
        outcome: ClamdOutcome::Error(reason),
        viruses: Vec::new(),
    }
}

/// Reads clamd's reply to INSTREAM: one or more NUL- or newline-ended lines, each
/// `stream: OK`, `stream: NAME FOUND` or `... ERROR`.
pub fn parse_reply(reply: &[u8]) -> ClamdVerdict {
    let text = String::from_utf8_lossy(reply);
    let lines: Vec<&str> = text
        .split(['\0', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return error("clamd closed the connection without a reply".to_owned());
    }

    let mut viruses = Vec::new();
    let mut clean = false;
    for line in &lines {
        let status = line.strip_prefix("stream:").map(str::trim);
        match status {
            Some("OK") => clean = true,
            Some(found) if found.ends_with(" FOUND") => {
                viruses.push(found.trim_end_matches(" FOUND").trim().to_owned());
            }
            _ => return error(format!("clamd answered {line:?}")),
        }
    }
    if !viruses.is_empty() {
        return ClamdVerdict {
            outcome: ClamdOutcome::Virus,
            viruses,
        };
    }
    if clean {
        return ClamdVerdict {
            outcome: ClamdOutcome::Clean,
            viruses,
        };
    }
    error(format!("clamd answered {text:?}"))
}

/// A transport that notes whether the connection was made, so that a failure to connect
/// (clamd down: unavailable) is told from a failure while streaming (clamd refused the
/// message: an error).
struct Tracked<'a, T> {
    inner: T,
    connected: &'a AtomicBool,
}

impl<T: TransportProtocol> TransportProtocol for Tracked<'_, T> {
    type Stream = T::Stream;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let stream = self.inner.connect().await?;
        self.connected.store(true, Ordering::Relaxed);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_clean() {
        let verdict = parse_reply(b"stream: OK\0");
        assert_eq!(verdict.outcome, ClamdOutcome::Clean);
        assert!(verdict.viruses.is_empty());
    }

    #[test]
    fn found_is_a_virus_with_its_name() {
        let verdict = parse_reply(b"stream: Eicar-Test-Signature FOUND\0");
        assert_eq!(verdict.outcome, ClamdOutcome::Virus);
        assert_eq!(verdict.viruses, ["Eicar-Test-Signature"]);
    }

    #[test]
    fn several_found_lines_give_every_name() {
        let verdict = parse_reply(b"stream: A.One FOUND\0stream: B.Two FOUND\0");
        assert_eq!(verdict.viruses, ["A.One", "B.Two"]);
    }

    #[test]
    fn size_limit_error_is_neither_clean_nor_virus() {
        let verdict = parse_reply(b"INSTREAM size limit exceeded. ERROR\0");
        let ClamdOutcome::Error(reason) = verdict.outcome else {
            panic!("not an error: {verdict:?}");
        };
        assert!(reason.contains("size limit exceeded"), "{reason}");
    }

    #[test]
    fn empty_or_strange_replies_are_errors() {
        for reply in [&b""[..], b"\0", b"PONG\0", b"stream: maybe\0"] {
            let verdict = parse_reply(reply);
            assert!(
                matches!(verdict.outcome, ClamdOutcome::Error(_)),
                "{reply:?}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_virus_name_ending_in_ok_is_still_a_virus() {
        // clamav-client's own `clean` looks for "OK" anywhere, which this would fool.
        let verdict = parse_reply(b"stream: Win.Trojan.LOOK FOUND\0");
        assert_eq!(verdict.outcome, ClamdOutcome::Virus);
    }

    #[tokio::test]
    async fn nobody_listening_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let clamd = Clamd::new(ClamdSettings {
            address: ClamdAddress::Tcp(address),
            timeout: Duration::from_secs(5),
            failure_mode: Default::default(),
        });
        let verdict = clamd.scan(b"Subject: hi\r\n\r\nhello\r\n").await;
        let ClamdOutcome::Unavailable(reason) = &verdict.outcome else {
            panic!("not unavailable: {verdict:?}");
        };
        assert!(reason.contains("cannot connect"), "{reason}");
    }

    #[tokio::test]
    async fn silent_server_is_unavailable_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(socket);
        });
        let clamd = Clamd::new(ClamdSettings {
            address: ClamdAddress::Tcp(address),
            timeout: Duration::from_millis(200),
            failure_mode: Default::default(),
        });
        let started = Instant::now();
        let verdict = clamd.scan(b"Subject: hi\r\n\r\nhello\r\n").await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(verdict.outcome, ClamdOutcome::Unavailable(ref r) if r.contains("within")),
            "{verdict:?}"
        );
        server.abort();
    }
}
