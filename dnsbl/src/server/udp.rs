//! The UDP hot path: one thread per socket, a blocking receive, the answer written into a
//! reused buffer, one send. No allocation and no async machinery per query.
//!
//! Measured on a 2-core machine (bench/RESULTS.md), hickory-server's UDP path with the same
//! answers reached about half of rbldnsd's rate; this loop is what makes Moat faster than
//! rbldnsd. Several sockets share a port with SO_REUSEPORT, so the kernel spreads clients
//! over the threads.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::cache::Cache;

use crate::answer::Answers;
use crate::wire::{self, Transport};
use crate::zones::Zones;

/// The largest query read; anything longer is cut and answered FORMERR or dropped. A DNSBL
/// query with an OPT record is under 300 bytes.
const MAX_QUERY: usize = 4096;

/// How often a blocked receive wakes up to see whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(250);

/// Answers queries on `socket` until `stop` is set.
pub(crate) fn serve(socket: UdpSocket, zones: Zones, stop: Arc<AtomicBool>) {
    if let Err(error) = socket.set_read_timeout(Some(STOP_POLL)) {
        tracing::warn!(%error, "cannot set a read timeout on the UDP socket; stop may be slow");
    }
    let mut catalog = Cache::new(zones.catalog());
    let mut query = vec![0u8; MAX_QUERY];
    let mut reply = Vec::with_capacity(1500);
    let mut answers = Answers::default();

    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut query) {
            Ok(received) => received,
            Err(error) if is_timeout(&error) => continue,
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                continue;
            }
        };
        // A source port of 0 cannot be answered; such packets are forged.
        if peer.port() == 0 {
            continue;
        }
        let outcome = wire::respond(&query[..len], catalog.load(), Transport::Udp, &mut answers, &mut reply);
        if let Some(outcome) = outcome {
            tracing::trace!(%peer, outcome = outcome.as_str(), "udp query answered");
            if let Err(error) = socket.send_to(&reply, peer) {
                tracing::debug!(%peer, %error, "udp send failed");
            }
        }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
}
