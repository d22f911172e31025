//! The listening sockets: admits connections within the session limits, runs the pre-greet
//! test, greets, and drives each session through STARTTLS.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::Shared;
use crate::received::TlsInfo;
use crate::reply::{Refusal, Reply};
use crate::session::inbound::Inbound;
use crate::session::{Next, Session};

/// Connections the kernel queues for each listener before they are accepted (tokio's own
/// default).
const LISTEN_BACKLOG: i32 = 1024;

/// Why the gateway could not start listening.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using this port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

/// Concurrent sessions, in all and per client IP.
#[derive(Default)]
pub(crate) struct SessionCounts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
}

/// A session's place in the counts, given back when the session ends.
struct Admission {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl SessionCounts {
    /// The sessions open now.
    pub(crate) fn total(&self) -> usize {
        *lock(&self.total)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let counts = &self.shared.sessions;
        *lock(&counts.total) -= 1;
        let mut per_ip = lock(&counts.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Admits a new session if the limits allow.
fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Result<Admission, Refusal> {
    let counts = &shared.sessions;
    let mut total = lock(&counts.total);
    if *total >= shared.smtp.max_sessions {
        return Err(Refusal::TooManySessions);
    }
    let mut per_ip = lock(&counts.per_ip);
    let from_ip = per_ip.entry(ip).or_insert(0);
    if *from_ip >= shared.smtp.max_sessions_per_ip {
        return Err(Refusal::TooManySessionsFromClient);
    }
    *from_ip += 1;
    *total += 1;
    Ok(Admission {
        shared: Arc::clone(shared),
        ip,
    })
}

/// Takes a lock even if another session panicked while holding it: the counts stay usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Binds every address before serving any, so a busy port stops the start cleanly.
///
/// # Errors
/// [`GatewayError::Bind`] naming the first address that could not be bound.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, GatewayError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = bind_one(addr).map_err(|source| GatewayError::Bind { addr, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Binds one listening socket. An IPv6 socket takes IPv6 only, as Postfix binds with
/// `inet_protocols = all`: `[::]:25` and `0.0.0.0:25` can then both be listed, and an IPv4
/// client is never seen as an IPv4-mapped IPv6 address.
fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restart must not wait for the old sockets' TIME_WAIT to end.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on one listener until the task is dropped.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors must not spin the loop.
                tracing::error!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Should an IPv4-mapped address ever arrive, it is judged by its IPv4 form: DNSBLs and
        // the greylist key on it.
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let span = tracing::debug_span!("smtp", client = %client, server = ?local);
        let admission = admit(&shared, client.ip());
        tokio::spawn(connection(Arc::clone(&shared), stream, client, admission).instrument(span));
    }
}

/// Runs one connection from its admission to its close.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    client: SocketAddr,
    admission: Result<Admission, Refusal>,
) {
    let hostname = shared.smtp.hostname.clone();
    let mut inbound = Inbound::new(stream, shared.smtp.command_timeout);
    inbound.close_when(shared.closing.clone());
    let _admission = match admission {
        Ok(admission) => admission,
        Err(refusal) => {
            tracing::warn!(refusal = refusal.name(), "connection refused");
            inbound.reply(&refusal.reply(&hostname));
            inbound.close().await;
            return;
        }
    };
    tracing::debug!("connected");

    let mut session = Session::new(Arc::clone(&shared), client);
    if !passes_pregreet(&shared, client.ip(), &mut inbound).await {
        return;
    }

    inbound.reply(&Reply::new(220, "", format!("{hostname} ESMTP Moat")));
    if run(&mut session, &mut inbound).await != Next::StartTls {
        return;
    }

    let Some(acceptor) = shared.tls.clone() else {
        return;
    };
    let handshake = acceptor.accept(inbound.into_stream());
    let tls = match tokio::time::timeout(shared.smtp.command_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return;
        }
    };
    let (_, connection) = tls.get_ref();
    let info = TlsInfo {
        version: connection
            .protocol_version()
            .and_then(|version| version.as_str())
            .unwrap_or("TLS")
            .replace("TLSv1_", "TLSv1."),
        cipher: connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown")
            .to_string(),
    };
    session.start_tls(info);
    let mut inbound = Inbound::new(tls, shared.smtp.command_timeout);
    inbound.close_when(shared.closing.clone());
    run(&mut session, &mut inbound).await;
}

/// Runs the session; sends what it queued last, and closes unless TLS comes next.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    inbound: &mut Inbound<S>,
) -> Next {
    let next = session.run(inbound).await;
    if next != Next::StartTls {
        inbound.close().await;
        return next;
    }
    if let Err(error) = inbound.flush().await {
        tracing::debug!(%error, "STARTTLS reply not delivered");
        return Next::Close;
    }
    next
}

/// The pre-greet test: a new client must stay silent for `pregreet_wait` before the banner.
///
/// Returns false, after refusing the client, if it talked first.
async fn passes_pregreet(shared: &Shared, ip: IpAddr, inbound: &mut Inbound<TcpStream>) -> bool {
    let wait = shared.smtp.pregreet_wait;
    if wait.is_zero() {
        return true;
    }
    let now = Instant::now();
    if lock(&shared.pregreet_passed)
        .get(&ip)
        .is_some_and(|&until| until > now)
    {
        return true;
    }

    match inbound.talks_within(wait).await {
        Ok(false) => {
            let mut passed = lock(&shared.pregreet_passed);
            if passed.len() > 100_000 {
                passed.retain(|_, until| *until > now);
            }
            passed.insert(ip, now + shared.smtp.pregreet_pass_ttl);
            true
        }
        Ok(true) => {
            tracing::warn!(
                refusal = Refusal::PregreetTalker.name(),
                "client talked before the greeting"
            );
            inbound.reply(&Refusal::PregreetTalker.reply(&shared.smtp.hostname));
            inbound.close().await;
            false
        }
        Err(error) => {
            tracing::debug!(%error, "client left before the greeting");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Binding the wildcards themselves would listen beyond loopback; the option that lets
    // `[::]:25` sit beside `0.0.0.0:25` is checked instead.
    #[tokio::test]
    async fn an_ipv6_listener_takes_ipv6_only() {
        let listener = bind_one("[::1]:0".parse().expect("address")).expect("bind [::1]");

        let only_v6 = socket2::SockRef::from(&listener).only_v6();

        assert!(matches!(only_v6, Ok(true)), "IPV6_V6ONLY: {only_v6:?}");
    }
}
