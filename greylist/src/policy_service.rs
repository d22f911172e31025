//! The Postfix policy delegation server: many connections, many requests per connection, one
//! reply per request in order, so Postfix can use Moat in place of postgrey.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::greylister::Greylist;
use crate::policy_protocol::{Line, MAX_LINE, PolicyRequest, reply};
use crate::reply::Decision;

/// How long a connection may sit between requests. Postfix closes its own idle policy
/// connections after 300 s (`smtpd_policy_service_max_idle`); this only frees connections
/// whose client vanished.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A bound policy server.
pub struct PolicyService {
    listener: TcpListener,
    greylist: Arc<Greylist>,
}

impl PolicyService {
    /// Binds `addr`; nothing is served until [`PolicyService::serve`].
    ///
    /// # Errors
    /// The socket error when the address is in use or not allowed.
    pub async fn bind(addr: SocketAddr, greylist: Arc<Greylist>) -> io::Result<PolicyService> {
        let listener = TcpListener::bind(addr).await?;
        Ok(PolicyService { listener, greylist })
    }

    /// The address bound (useful when port 0 was asked for).
    ///
    /// # Errors
    /// The socket error, which does not happen on a bound socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the future is dropped.
    pub async fn serve(self) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors passes; back off rather than spin.
                    tracing::warn!(%error, "policy service accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let greylist = Arc::clone(&self.greylist);
            let server = stream.local_addr().ok();
            let span = tracing::debug_span!("policy", %peer, server = ?server);
            tokio::spawn(serve_connection(stream, greylist).instrument(span));
        }
    }
}

/// Answers requests on one connection until the client closes it, goes idle, or sends
/// something malformed.
async fn serve_connection(stream: TcpStream, greylist: Arc<Greylist>) {
    tracing::debug!("policy connection open");
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::with_capacity(256);
    let mut request = PolicyRequest::default();
    loop {
        line.clear();
        let limit = (MAX_LINE + 1) as u64;
        let mut bounded = (&mut reader).take(limit);
        let read = bounded.read_until(b'\n', &mut line);
        let read = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::debug!(%error, "policy connection read failed");
                return;
            }
            Err(_) => {
                tracing::debug!("policy connection idle; closing");
                return;
            }
        };
        if read == 0 {
            if !request.is_empty() {
                tracing::warn!("policy client closed the connection inside a request");
            }
            tracing::debug!("policy connection closed");
            return;
        }
        if !line.ends_with(b"\n") && line.len() <= MAX_LINE {
            // End of stream in the middle of a line: the request can never complete.
            tracing::warn!("policy client closed the connection inside a line");
            return;
        }

        match request.push_line(&line) {
            Ok(Line::Attribute) => continue,
            Ok(Line::End) if request.is_empty() => continue,
            Ok(Line::End) => {}
            Err(error) => {
                tracing::warn!(%error, "malformed policy request; closing without a reply");
                return;
            }
        }

        let finished = std::mem::take(&mut request);
        let action = match answer(&finished, &greylist).await {
            Ok(action) => action,
            Err(()) => return,
        };
        if let Err(error) = writer.write_all(reply(&action).as_bytes()).await {
            tracing::debug!(%error, "policy connection write failed");
            return;
        }
    }
}

/// The action for one complete request, or `Err` when it is malformed (already logged).
async fn answer(request: &PolicyRequest, greylist: &Greylist) -> Result<String, ()> {
    let triplet = match request.triplet_request() {
        Ok(Some(triplet)) => triplet,
        Ok(None) => return Ok("DUNNO".to_owned()),
        Err(error) => {
            tracing::warn!(%error, "malformed policy request; closing without a reply");
            return Err(());
        }
    };
    let decision: Decision = greylist.check(&triplet).await;
    Ok(decision.policy_action(greylist.hostname()))
}
