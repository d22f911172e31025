//! The publisher: answers subscribers over TCP with the list of its dataset files and, for each
//! file a subscriber asks for, an rsync delta from the subscriber's copy to its own.
//!
//! It serves the files on disk, not the loaded zones: what a subscriber rebuilds is byte for
//! byte what an external tool (rsync from a vendor) last renamed into place here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::{Network, PublishSettings};
use super::copy::{self, dataset_name, zone_files};
use super::delta;
use super::error::SyncError;
use super::handshake;
use super::key::SyncKey;
use super::link::Link;
use super::refusal::Refusal;
use super::wire::{
    Delta, Frame, Listed, MAX_HANDSHAKE_PAYLOAD, MAX_REQUEST_PAYLOAD, Request, Response, Version,
};
use crate::config::ZoneSpec;
use crate::dataset::reader::FileStamp;
use crate::error::Error;

/// How many subscribers may pull at once; more are told `busy` and come back at their next
/// interval. Each pull holds a dataset and its delta in memory while it is answered.
const MAX_CONNECTIONS: usize = 16;

/// How long a subscriber may take to send its next request, or to take an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection to a keyed publisher may take to authenticate. Short, because until
/// then it holds one of the pull slots without having shown it may.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait after a failed accept (out of file descriptors, most likely) before the
/// next, so a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A publisher bound to its addresses, ready to serve.
pub struct Publisher {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
}

/// What every connection reads.
struct Shared {
    /// Each published file by name.
    datasets: BTreeMap<String, PathBuf>,
    allow: Vec<Network>,
    /// The key subscribers must prove they hold.
    key: Option<SyncKey>,
    /// The last version computed for each name, and the file's stamp it is good for.
    versions: Mutex<HashMap<String, (FileStamp, Version)>>,
    slots: Arc<Semaphore>,
}

impl Publisher {
    /// Binds every address of `settings`, to publish the files of `zones`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when two files have the same name (a subscriber asks for a file by its
    /// name) or a name cannot be sent; [`Error::Bind`] when an address cannot be bound.
    pub async fn bind(settings: &PublishSettings, zones: &[ZoneSpec]) -> Result<Publisher, Error> {
        let datasets = published(zones)?;
        let mut listeners = Vec::with_capacity(settings.listen.len());
        for &addr in &settings.listen {
            // IPv6 only on an IPv6 address, as the DNS listener, so `[::]` and `0.0.0.0` can
            // both be given.
            let listener = crate::server::tcp_listener(addr)
                .and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    TcpListener::from_std(listener)
                })
                .map_err(|error| Error::Bind {
                    addr,
                    protocol: "tcp",
                    error,
                })?;
            listeners.push(listener);
        }
        let shared = Shared {
            datasets,
            allow: settings.allow.clone(),
            key: settings.key.clone(),
            versions: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        };
        Ok(Publisher {
            listeners,
            shared: Arc::new(shared),
        })
    }

    /// The addresses bound (with the ports picked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The names of the datasets published.
    pub fn datasets(&self) -> Vec<String> {
        self.shared.datasets.keys().cloned().collect()
    }

    /// Serves subscribers until dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future stops accepting and ends the connections in progress;
    /// a subscriber cut off keeps its copy and tries again at its next interval.
    pub async fn serve(self) {
        let mut accepting = JoinSet::new();
        for listener in self.listeners {
            accepting.spawn(accept(listener, Arc::clone(&self.shared)));
        }
        while accepting.join_next().await.is_some() {}
    }
}

/// Each file of `zones` by its name; two files of the same name are refused.
fn published(zones: &[ZoneSpec]) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut datasets = BTreeMap::new();
    for path in zone_files(zones) {
        let name = dataset_name(&path).ok_or_else(|| Error::Config {
            key: "dnsbl.sync.publish".into(),
            value: path.display().to_string(),
            expected: "dataset files whose names are UTF-8 and at most 255 bytes",
        })?;
        if let Some(other) = datasets.insert(name, path.clone()) {
            return Err(Error::Config {
                key: "dnsbl.sync.publish".into(),
                value: format!("{} and {}", other.display(), path.display()),
                expected: "dataset files with distinct file names: subscribers ask by name",
            });
        }
    }
    Ok(datasets)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                connections.spawn(connection(Arc::clone(&shared), stream, client));
            }
            Err(error) => {
                tracing::warn!(%error, "sync accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        // Forget connections that ended.
        while connections.try_join_next().is_some() {}
    }
}

/// Answers one subscriber's requests until it closes the connection or falls silent.
async fn connection(shared: Arc<Shared>, stream: TcpStream, client: SocketAddr) {
    let mut link = Link::new(stream);
    if !shared.allow.iter().any(|n| n.contains(client.ip())) {
        tracing::warn!(%client, "sync client refused: not in dnsbl.sync.publish.allow");
        answer(&mut link, &Response::Refusal(Refusal::NotAllowed)).await;
        return;
    }
    let Ok(_slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        tracing::debug!(%client, "sync client told busy");
        answer(&mut link, &Response::Refusal(Refusal::Busy)).await;
        return;
    };
    tracing::debug!(%client, "sync client connected");

    loop {
        // Before a keyed handshake only a handshake frame may come: a few dozen octets, soon,
        // not a 24 MiB request read from anyone who connects.
        let unauthenticated = shared.key.is_some() && !link.is_authenticated();
        let (limit, timeout) = if unauthenticated {
            (MAX_HANDSHAKE_PAYLOAD, HANDSHAKE_TIMEOUT)
        } else {
            (MAX_REQUEST_PAYLOAD, IO_TIMEOUT)
        };
        let Some(frame) = request(&mut link, client, limit, timeout).await else {
            return;
        };

        // The handshake, when either end has a key: a keyed publisher makes the first frame
        // open it, an unkeyed one refuses a subscriber that tries.
        if let Some(key) = &shared.key
            && !link.is_authenticated()
        {
            if !authenticate(&mut link, key, &frame, client).await {
                return;
            }
            continue;
        }
        if frame.opens_handshake() {
            refuse_unauthenticated(
                &mut link,
                client,
                &SyncError::Unauthenticated("the subscriber has a key, this publisher none"),
            )
            .await;
            return;
        }

        let response = match Request::decode(frame) {
            Ok(Request::List) => shared.listing().await,
            Ok(Request::Pull { dataset, signature }) => {
                shared.pull(client, dataset, signature).await
            }
            Err(error) => {
                tracing::warn!(%client, %error, "sync request unreadable");
                answer(&mut link, &Response::Refusal(Refusal::BadRequest)).await;
                return;
            }
        };
        if !answer(&mut link, &response).await {
            return;
        }
    }
}

/// The subscriber's next frame; `None` when it closed, fell silent or sent one that cannot
/// be used (logged here).
async fn request(
    link: &mut Link<TcpStream>,
    client: SocketAddr,
    limit: u64,
    timeout: Duration,
) -> Option<Frame> {
    let read = tokio::time::timeout(timeout, link.receive(limit));
    match read.await {
        Err(_) => {
            tracing::debug!(%client, "sync client silent; closing");
            None
        }
        Ok(Ok(frame)) => frame,
        Ok(Err(error @ SyncError::BadMac { .. })) => {
            // No answer: the client is not who it claimed, or someone on the path is
            // changing its frames.
            tracing::warn!(%client, outcome = %error.outcome(), %error, "sync request rejected");
            None
        }
        Ok(Err(error)) => {
            tracing::warn!(%client, %error, "sync request unreadable");
            answer(link, &Response::Refusal(Refusal::BadRequest)).await;
            None
        }
    }
}

/// Runs the handshake on `first`; false when the client failed it (logged and refused here).
async fn authenticate(
    link: &mut Link<TcpStream>,
    key: &SyncKey,
    first: &Frame,
    client: SocketAddr,
) -> bool {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::publisher(link, key, first));
    match handshake.await {
        Ok(Ok(())) => {
            tracing::debug!(%client, "sync client authenticated");
            true
        }
        Ok(Err(error @ SyncError::Unauthenticated(_))) => {
            refuse_unauthenticated(link, client, &error).await;
            false
        }
        Ok(Err(error)) => {
            tracing::warn!(%client, outcome = %error.outcome(), %error, "sync handshake failed");
            false
        }
        Err(_) => {
            tracing::debug!(%client, "sync client silent in the handshake; closing");
            false
        }
    }
}

/// Logs a client that did not authenticate, and tells it so.
async fn refuse_unauthenticated(link: &mut Link<TcpStream>, client: SocketAddr, error: &SyncError) {
    tracing::warn!(%client, outcome = %error.outcome(), %error, "sync client refused");
    answer(link, &Response::Refusal(Refusal::Unauthenticated)).await;
}

/// Sends `response`; false when the subscriber is gone or too slow.
async fn answer(link: &mut Link<TcpStream>, response: &Response) -> bool {
    let frame = response.encode();
    match tokio::time::timeout(IO_TIMEOUT, link.send(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "sync answer not sent");
            false
        }
        Err(_) => {
            tracing::debug!("sync answer timed out");
            false
        }
    }
}

impl Shared {
    /// Every published file that can be read, with its version. A file that cannot be read is
    /// left out (and logged), so subscribers keep their copies of it.
    async fn listing(self: &Arc<Self>) -> Response {
        let shared = Arc::clone(self);
        let listed = tokio::task::spawn_blocking(move || {
            shared
                .datasets
                .iter()
                .filter_map(|(name, path)| {
                    let version = shared.version(name, path)?;
                    Some(Listed {
                        dataset: name.clone(),
                        version,
                    })
                })
                .collect()
        })
        .await;
        match listed {
            Ok(listed) => Response::Listing(listed),
            Err(error) => {
                tracing::error!(%error, "sync listing failed");
                Response::Refusal(Refusal::Unreadable)
            }
        }
    }

    /// The version of one file: from the cache while its stamp is the same, else read again.
    fn version(&self, name: &str, path: &Path) -> Option<Version> {
        let stamp = FileStamp::of(path).ok();
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(stamp), Some((cached, version))) = (stamp, versions.get(name))
            && stamp == *cached
        {
            return Some(*version);
        }
        drop(versions);

        let file = path.display();
        let snapshot = match copy::read(path) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                tracing::warn!(dataset = %name, %file, "published file missing");
                return None;
            }
            Err(error) => {
                tracing::warn!(dataset = %name, %file, %error, "published file unreadable");
                return None;
            }
        };
        if let Some(stamp) = stamp {
            let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
            versions.insert(name.to_owned(), (stamp, snapshot.version));
        }
        Some(snapshot.version)
    }

    /// A delta from the subscriber's copy to this node's current file.
    async fn pull(
        self: &Arc<Self>,
        client: SocketAddr,
        dataset: String,
        signature: Vec<u8>,
    ) -> Response {
        let Some(path) = self.datasets.get(&dataset).cloned() else {
            tracing::debug!(%client, %dataset, "sync pull of an unknown dataset");
            return Response::Refusal(Refusal::UnknownDataset);
        };
        let started = Instant::now();
        let name = dataset.clone();
        let work = tokio::task::spawn_blocking(move || delta_for(&path, name, signature));
        let delta = match work.await {
            Ok(Ok(delta)) => delta,
            Ok(Err(refusal)) => {
                tracing::warn!(%client, %dataset, refusal = refusal.name(), "sync pull refused");
                return Response::Refusal(refusal);
            }
            Err(error) => {
                tracing::error!(%client, %dataset, %error, "sync delta failed");
                return Response::Refusal(Refusal::Unreadable);
            }
        };
        tracing::info!(
            %client,
            %dataset,
            generation = delta.version.generation,
            delta_bytes = delta.delta.len(),
            full_size = delta.version.len,
            ms = started.elapsed().as_millis() as u64,
            "dataset delta served"
        );
        Response::Delta(delta)
    }
}

/// The delta from the copy `signature` describes to the file at `path`, or why not.
fn delta_for(path: &Path, dataset: String, signature: Vec<u8>) -> Result<Delta, Refusal> {
    let snapshot = match copy::read(path) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return Err(Refusal::Unreadable),
        Err(error) if error.kind() == std::io::ErrorKind::FileTooLarge => {
            return Err(Refusal::TooLarge);
        }
        Err(error) => {
            let file = path.display();
            tracing::warn!(%dataset, %file, %error, "published file unreadable");
            return Err(Refusal::Unreadable);
        }
    };
    let delta = delta::diff(signature, &snapshot.bytes).ok_or(Refusal::BadRequest)?;
    Ok(Delta {
        dataset,
        version: snapshot.version,
        delta,
    })
}
