//! The caching DNS resolver behind the checks: built once from `[smtp] dns_resolver`, cloned
//! into every user, so SPF, DKIM, ARC and DMARC (and any other check handed a clone) share one
//! cache and one set of connections.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::error::AuthError;

/// How many queries may wait on one name server connection at once. hickory's default of 32
/// answers a busy error beyond that, which a gateway with hundreds of sessions would turn into
/// spurious `temperror` results; the memory per waiting query is small.
const MAX_ACTIVE_QUERIES: usize = 1_024;

/// How many times a query is sent before it fails: once more after a lost UDP datagram, and by
/// then a recursive resolver that was slow the first time usually has the answer cached.
const TRIES: u32 = 2;

/// Builds the caching resolver: the server at `server`, or /etc/resolv.conf's when `None`.
///
/// A query takes at most `query_timeout` in all: hickory's timeout is per try and its
/// `attempts` counts the retries, so each try gets an equal share. [`TokioResolver`] is a
/// handle: clones share the cache.
///
/// # Errors
/// [`AuthError::Resolver`] when `server` is `None` and /etc/resolv.conf cannot be read.
pub fn caching_resolver(
    server: Option<SocketAddr>,
    query_timeout: Duration,
) -> Result<TokioResolver, AuthError> {
    let mut options = ResolverOpts::default();
    options.timeout = query_timeout / TRIES;
    options.attempts = TRIES as usize - 1;
    options.max_active_requests = MAX_ACTIVE_QUERIES;
    // Every name the checks ask is absolute; a search domain must never be appended.
    options.ndots = 0;

    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            // TCP for answers that do not fit UDP: large DKIM keys, long SPF records.
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let name_server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|error| AuthError::Resolver(error.to_string()))?,
    };
    builder
        .with_options(options)
        .build()
        .map_err(|error| AuthError::Resolver(error.to_string()))
}
