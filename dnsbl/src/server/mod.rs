//! The DNS node: UDP sockets answered by Moat's own loop (`udp.rs`), TCP by hickory-server
//! with Moat's request handler (`handler.rs`), on each configured address.

mod counters;
mod handler;
mod udp;

pub use counters::QueryCounters;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Settings, UdpEngine};
use crate::error::Error;
use crate::zones::Zones;

/// How long a TCP client may stay silent before its connection is closed (RFC 7766
/// section 6.2.3 suggests seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a TCP connection may have queued for sending, in replies.
const TCP_RESPONSE_BUFFER: usize = 32;

/// A kernel receive buffer large enough to ride out bursts while a thread is busy.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Pending TCP connections the kernel queues before they are accepted (std's own choice).
const TCP_BACKLOG: i32 = 128;

/// How many times binding on port 0 retries to find a port free for both UDP and TCP.
const PORT_ATTEMPTS: usize = 20;

/// A running DNS node.
pub struct DnsServer {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    hickory: hickory_server::Server<handler::Handler>,
    counters: QueryCounters,
}

impl DnsServer {
    /// Binds every listen address of `settings` (UDP and TCP on the same port; port 0 picks
    /// one) and starts answering from `zones`. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when an address cannot be bound.
    pub fn start(settings: &Settings, zones: Zones) -> Result<DnsServer, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = QueryCounters::default();
        let mut hickory =
            hickory_server::Server::new(handler::Handler::new(zones.clone(), counters.clone()));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        let sockets = match settings.udp_engine {
            UdpEngine::Fast => settings.udp_sockets,
            UdpEngine::Hickory => 1,
        };

        for &requested in &settings.listen {
            let (udp, tcp) = bind_pair(requested, sockets)?;
            let addr = tcp.local_addr().map_err(|error| Error::Bind {
                addr: requested,
                protocol: "tcp",
                error,
            })?;
            tcp.set_nonblocking(true).map_err(|error| Error::Bind {
                addr,
                protocol: "tcp",
                error,
            })?;
            let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|error| Error::Bind {
                addr,
                protocol: "tcp",
                error,
            })?;
            hickory.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);

            for socket in udp {
                match settings.udp_engine {
                    UdpEngine::Fast => {
                        let (zones, counters, stop) =
                            (zones.clone(), counters.clone(), Arc::clone(&stop));
                        let thread = std::thread::Builder::new()
                            .name(format!("dnsbl-udp-{}", threads.len()))
                            .spawn(move || udp::serve(socket, zones, counters, stop))
                            .map_err(|error| Error::Bind {
                                addr,
                                protocol: "udp",
                                error,
                            })?;
                        threads.push(thread);
                    }
                    UdpEngine::Hickory => {
                        socket.set_nonblocking(true).map_err(|error| Error::Bind {
                            addr,
                            protocol: "udp",
                            error,
                        })?;
                        let socket = tokio::net::UdpSocket::from_std(socket).map_err(|error| {
                            Error::Bind {
                                addr,
                                protocol: "udp",
                                error,
                            }
                        })?;
                        hickory.register_socket(socket);
                    }
                }
            }
            addrs.push(addr);
        }
        Ok(DnsServer {
            addrs,
            stop,
            threads,
            hickory,
            counters,
        })
    }

    /// The queries answered so far, by transport and outcome (for a metrics endpoint).
    pub fn counters(&self) -> QueryCounters {
        self.counters.clone()
    }

    /// The addresses bound (with the ports picked for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops answering: the UDP threads finish their current query, TCP connections close.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = self.hickory.shutdown_gracefully().await {
            tracing::debug!(%error, "tcp server shutdown");
        }
        for thread in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Binds `sockets` UDP sockets and one TCP listener on the same address and port.
fn bind_pair(
    requested: SocketAddr,
    sockets: usize,
) -> Result<(Vec<UdpSocket>, TcpListener), Error> {
    let attempts = if requested.port() == 0 {
        PORT_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let first = udp_socket(requested).map_err(|error| Error::Bind {
            addr: requested,
            protocol: "udp",
            error,
        })?;
        let addr = first.local_addr().map_err(|error| Error::Bind {
            addr: requested,
            protocol: "udp",
            error,
        })?;
        let tcp = match tcp_listener(addr) {
            Ok(tcp) => tcp,
            // On port 0, the port the kernel gave for UDP may be taken for TCP: try another.
            Err(error) => {
                last_error = Some(Error::Bind {
                    addr,
                    protocol: "tcp",
                    error,
                });
                continue;
            }
        };
        let mut udp = vec![first];
        for _ in 1..sockets {
            udp.push(udp_socket(addr).map_err(|error| Error::Bind {
                addr,
                protocol: "udp",
                error,
            })?);
        }
        return Ok((udp, tcp));
    }
    Err(last_error.unwrap_or_else(|| Error::Bind {
        addr: requested,
        protocol: "tcp",
        error: std::io::Error::other("no port free for both UDP and TCP"),
    }))
}

/// A UDP socket on `addr` with SO_REUSEPORT, so several can share the port.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    only_v6(&socket, addr)?;
    socket.set_reuse_port(true)?;
    // A larger buffer only helps; the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP listener on `addr`, IPv6 only on an IPv6 address.
pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    only_v6(&socket, addr)?;
    // As std's TcpListener::bind does, so a restarted node rebinds while old connections
    // linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket.into())
}

/// Makes an IPv6 socket IPv6 only (IPV6_V6ONLY), whatever net.ipv6.bindv6only says: otherwise
/// `[::]:53` also takes IPv4's port 53, and listening on both `[::]:53` and `0.0.0.0:53`
/// fails with "address in use".
fn only_v6(socket: &Socket, addr: SocketAddr) -> std::io::Result<()> {
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use socket2::SockRef;

    use super::*;

    // Checked on the option itself: [::1] and 127.0.0.1 never collide, and the wildcard
    // addresses where they would are not for tests to bind.
    #[test]
    fn ipv6_listeners_are_ipv6_only_whatever_the_system_default() {
        let addr: SocketAddr = "[::1]:0".parse().expect("an address");
        let (udp, tcp) = bind_pair(addr, 2).expect("loopback binds");
        for socket in &udp {
            assert!(SockRef::from(socket).only_v6().expect("readable"));
        }
        assert!(SockRef::from(&tcp).only_v6().expect("readable"));
    }
}
