//! The UDP hot path: one thread per socket, queries read and replies sent in batches
//! (recvmmsg and sendmmsg), answers written into reused buffers. No async machinery, and for
//! address lookups no allocation, per query.
//!
//! Why not hickory-server's UDP path: measured on this 2-core machine (bench/RESULTS.md) it
//! answered about half of rbldnsd's rate with the same answers, at 2.5 times Moat's CPU time
//! per query. Most of a query's cost here is the kernel's; batching saves system calls
//! whenever several queries are waiting, which under load is always. Several sockets share a
//! port with SO_REUSEPORT, so the kernel spreads clients over the threads.

use std::io::{IoSlice, IoSliceMut};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::cache::Cache;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg,
};

use super::counters::{BatchCounts, QueryCounters};
use crate::answer::Answers;
use crate::wire::{self, Transport};
use crate::zones::Zones;

/// The largest query read; anything longer is cut and answered FORMERR or dropped. A DNSBL
/// query with an OPT record is under 300 bytes.
const MAX_QUERY: usize = 2048;

/// Queries read (and replies sent) per system call at most.
const BATCH: usize = 32;

/// How often a blocked receive wakes up to see whether the server is stopping.
const STOP_POLL: Duration = Duration::from_millis(250);

/// Answers queries on `socket` until `stop` is set.
pub(crate) fn serve(
    socket: UdpSocket,
    zones: Zones,
    counters: QueryCounters,
    stop: Arc<AtomicBool>,
) {
    if let Err(error) = socket.set_read_timeout(Some(STOP_POLL)) {
        tracing::warn!(%error, "cannot set a read timeout on the UDP socket; stop may be slow");
    }
    let fd = socket.as_raw_fd();
    let mut catalog = Cache::new(zones.catalog());
    let mut queries = vec![[0u8; MAX_QUERY]; BATCH];
    let mut replies: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut peers: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut answers = Answers::default();

    while !stop.load(Ordering::Relaxed) {
        // Read what is waiting: block for the first query, take up to BATCH.
        received.clear();
        {
            let mut buffers: Vec<[IoSliceMut<'_>; 1]> = queries
                .iter_mut()
                .map(|q| [IoSliceMut::new(&mut q[..])])
                .collect();
            match recvmmsg(
                fd,
                &mut receive_headers,
                buffers.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => {
                    received.extend(messages.filter_map(|m| Some((m.bytes, m.address?))))
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(error) => {
                    tracing::debug!(%error, "udp receive failed");
                    continue;
                }
            }
        }

        // Answer each; a source port of 0 cannot be answered (such packets are forged).
        peers.clear();
        let mut batch: BatchCounts = Default::default();
        for (i, (len, peer)) in received.iter().enumerate() {
            if port(peer) == Some(0) {
                continue;
            }
            let reply = &mut replies[peers.len()];
            let query = &queries[i][..(*len).min(MAX_QUERY)];
            if let Some(outcome) =
                wire::respond(query, catalog.load(), Transport::Udp, &mut answers, reply)
            {
                tracing::trace!(outcome = outcome.as_str(), "udp query answered");
                batch[outcome.index()] += 1;
                peers.push(Some(*peer));
            }
        }
        counters.add_batch(Transport::Udp, &batch);
        send_all(fd, &mut send_headers, &replies[..peers.len()], &peers);
    }
}

/// Sends `replies[i]` to `peers[i]`, in as few system calls as the kernel allows.
fn send_all(
    fd: i32,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &[Vec<u8>],
    peers: &[Option<SockaddrStorage>],
) {
    let mut sent = 0;
    while sent < replies.len() {
        let slices: Vec<[IoSlice<'_>; 1]> =
            replies[sent..].iter().map(|r| [IoSlice::new(r)]).collect();
        let no_control: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
            headers,
            slices.iter(),
            &peers[sent..],
            no_control,
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let count = results.count();
                if count == 0 {
                    return;
                }
                sent += count;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(error) => {
                // One bad destination fails the call; skip it and send the rest.
                tracing::debug!(%error, "udp send failed");
                sent += 1;
            }
        }
    }
}

fn port(addr: &SockaddrStorage) -> Option<u16> {
    addr.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
        .filter(|_| addr.len() > 0)
}
