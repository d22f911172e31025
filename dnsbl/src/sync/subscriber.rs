//! The subscriber: pulls the dataset files this node serves from a publisher, at start, on a
//! schedule and on SIGHUP; rebuilds each new version from an rsync delta, verifies it, renames
//! it into place and reloads the zones that read it.
//!
//! A file is pulled when the publisher lists one of the same name: a node's own local lists
//! stay its own. Whatever goes wrong, the copy held stays in place and in service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::config::SubscribeSettings;
use super::copy::{self, dataset_name, zone_files};
use super::delta;
use super::error::SyncError;
use super::handshake;
use super::key::SyncKey;
use super::link::Link;
use super::metrics::SyncMetrics;
use super::outcome::SyncOutcome;
use super::wire::{Listed, MAX_RESPONSE_PAYLOAD, Request, Response, Version};
use crate::config::ZoneSpec;
use crate::zones::Zones;

/// Pulls a node's datasets from its publisher. Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SubscribeSettings,
    targets: Vec<Target>,
    metrics: SyncMetrics,
}

/// A local file and the name it is pulled under.
struct Target {
    dataset: String,
    path: PathBuf,
}

/// What one pull did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullSummary {
    /// Datasets rebuilt, verified and renamed into place.
    pub updated: usize,
    /// Datasets whose copy was current.
    pub unchanged: usize,
    /// Datasets whose new version was rejected; their copies stay.
    pub rejected: usize,
    /// Bytes sent and received.
    pub bytes_moved: u64,
}

impl Subscriber {
    /// A subscriber for the files of `zones`.
    pub fn new(settings: &SubscribeSettings, zones: &[ZoneSpec]) -> Subscriber {
        let targets = zone_files(zones)
            .into_iter()
            .filter_map(|path| match dataset_name(&path) {
                Some(dataset) => Some(Target { dataset, path }),
                None => {
                    tracing::warn!(file = %path.display(), "dataset file name cannot be synced");
                    None
                }
            })
            .collect();
        let inner = Inner {
            settings: settings.clone(),
            targets,
            metrics: SyncMetrics::default(),
        };
        Subscriber {
            inner: Arc::new(inner),
        }
    }

    /// The counters since start.
    pub fn metrics(&self) -> &SyncMetrics {
        &self.inner.metrics
    }

    /// Pulls every dataset once; with `zones`, reloads those that changed. Without, it only
    /// lays the files down: a new node's bootstrap, before its zones are loaded. Logs one line
    /// per dataset updated or rejected and one for the whole pull.
    ///
    /// # Errors
    ///
    /// When the publisher cannot be reached, or the connection broke (a frame cut or corrupt):
    /// the datasets not yet pulled keep their copies until the next pull. Rejections of single
    /// datasets are counted in the summary, not returned.
    pub async fn pull(&self, zones: Option<&Zones>) -> Result<PullSummary, SyncError> {
        let started = Instant::now();
        let mut summary = PullSummary::default();
        let result = self.pull_into(zones, &mut summary).await;
        self.inner.metrics.moved(summary.bytes_moved);
        let ms = started.elapsed().as_millis() as u64;
        let publisher = &self.inner.settings.publisher;

        let Err((dataset, error)) = result else {
            tracing::info!(
                %publisher,
                updated = summary.updated,
                unchanged = summary.unchanged,
                rejected = summary.rejected,
                bytes_moved = summary.bytes_moved,
                ms,
                "dnsbl sync done"
            );
            return Ok(summary);
        };
        self.inner.metrics.count(error.outcome());
        tracing::warn!(
            %publisher,
            dataset = %dataset.unwrap_or_default(),
            outcome = %error.outcome(),
            %error,
            updated = summary.updated,
            bytes_moved = summary.bytes_moved,
            "dnsbl sync failed; current data kept"
        );
        Err(error)
    }

    /// Pulls at every interval and on SIGHUP, reloading `zones`, until dropped. The first pull
    /// comes one interval from now: the one at start is [`Subscriber::pull`] before loading.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe between pulls; a pull cancelled midway leaves every copy whole (a new one
    /// is renamed into place or not at all).
    pub async fn run(self, zones: Zones) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; sync by timer"))
            .ok();
        let every = self.inner.settings.interval;
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "sighup",
                _ = timer.tick() => "timer",
            };
            tracing::debug!(trigger, "dnsbl sync starting");
            // Failures are logged and counted by pull; the next trigger tries again.
            let _ = self.pull(Some(&zones)).await;
        }
    }

    /// One pull; on failure, the dataset it was at (if any) and the error.
    async fn pull_into(
        &self,
        zones: Option<&Zones>,
        summary: &mut PullSummary,
    ) -> Result<(), (Option<String>, SyncError)> {
        let settings = &self.inner.settings;
        let open = Connection::open(&settings.publisher, settings.timeout, settings.key.as_ref());
        let mut connection = open.await.map_err(|error| (None, error))?;
        let listing = connection.list().await;
        summary.bytes_moved = connection.moved();
        let listing = listing.map_err(|error| (None, error))?;

        for target in &self.inner.targets {
            let Some(listed) = listing.iter().find(|l| l.dataset == target.dataset) else {
                tracing::debug!(dataset = %target.dataset, "not published; local copy kept");
                continue;
            };
            let started = Instant::now();
            let before = connection.moved();
            let result = self.update(&mut connection, target, listed, zones).await;
            summary.bytes_moved = connection.moved();
            let moved = connection.moved() - before;
            self.record(&target.dataset, result, moved, started, summary)
                .map_err(|error| (Some(target.dataset.clone()), error))?;
        }
        Ok(())
    }

    /// Counts and logs how the sync of one dataset ended; returns the error when it broke the
    /// connection, which ends the pull.
    fn record(
        &self,
        dataset: &str,
        result: Result<Option<Version>, SyncError>,
        moved: u64,
        started: Instant,
        summary: &mut PullSummary,
    ) -> Result<(), SyncError> {
        let metrics = &self.inner.metrics;
        match result {
            Ok(None) => {
                summary.unchanged += 1;
                metrics.count(SyncOutcome::Unchanged);
            }
            Ok(Some(version)) => {
                summary.updated += 1;
                metrics.count(SyncOutcome::Updated);
                metrics.installed(version.len);
                tracing::info!(
                    %dataset,
                    bytes_moved = moved,
                    full_size = version.len,
                    ms = started.elapsed().as_millis() as u64,
                    generation = version.generation,
                    "dataset synced"
                );
            }
            Err(error) if error.keeps_connection() => {
                summary.rejected += 1;
                metrics.count(error.outcome());
                tracing::warn!(
                    %dataset,
                    outcome = %error.outcome(),
                    %error,
                    bytes_moved = moved,
                    "dataset sync rejected; current data kept"
                );
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Brings one file to the version `listed`, or says why not: the version installed, or
    /// `None` when the copy held is current.
    async fn update(
        &self,
        connection: &mut Connection,
        target: &Target,
        listed: &Listed,
        zones: Option<&Zones>,
    ) -> Result<Option<Version>, SyncError> {
        let local = |path: PathBuf| move |error| SyncError::Local { path, error };
        let path = target.path.clone();
        let held = tokio::task::spawn_blocking(move || copy::read(&path))
            .await?
            .map_err(local(target.path.clone()))?;
        let held_version = held.as_ref().map(|h| h.version);
        if let Some(held) = held_version
            && held.len == listed.version.len
            && held.checksum == listed.version.checksum
        {
            return Ok(None);
        }
        in_order(&target.dataset, listed.version, held_version)?;

        // A node with no copy signs an empty one: the delta is then the whole file.
        let base = held.map(|h| h.bytes).unwrap_or_default();
        let (base, signature) = tokio::task::spawn_blocking(move || {
            let signature = delta::signature(&base);
            (base, signature)
        })
        .await?;
        let delta = connection.pull(&target.dataset, signature).await?;
        in_order(&target.dataset, delta.version, held_version)?;

        let version = delta.version;
        let path = target.path.clone();
        tokio::task::spawn_blocking(move || {
            let rebuilt = delta::rebuild(&base, &delta)?;
            copy::install(&path, &rebuilt, version.generation).map_err(local(path.clone()))
        })
        .await??;

        if let Some(zones) = zones {
            let zones = zones.clone();
            let path = target.path.clone();
            // The reload logs its own line, and keeps the old data if the new file fails.
            tokio::task::spawn_blocking(move || zones.reload_path(&path)).await?;
        }
        Ok(Some(version))
    }
}

/// Refuses a version older than the copy held: a replayed answer, or a publisher that went
/// back in time, must not undo an update.
fn in_order(dataset: &str, offered: Version, held: Option<Version>) -> Result<(), SyncError> {
    match held {
        Some(held) if offered.generation < held.generation => Err(SyncError::OutOfOrder {
            dataset: dataset.to_owned(),
            offered: offered.generation,
            held: held.generation,
        }),
        _ => Ok(()),
    }
}

/// A connection to the publisher, counting the bytes it moves.
struct Connection {
    link: Link<TcpStream>,
    timeout: Duration,
}

impl Connection {
    /// Connects, and with a key runs the handshake.
    async fn open(
        publisher: &str,
        timeout: Duration,
        key: Option<&SyncKey>,
    ) -> Result<Connection, SyncError> {
        let connect = tokio::time::timeout(timeout, TcpStream::connect(publisher));
        let stream = connect
            .await
            .map_err(|_| SyncError::Timeout(timeout))?
            .map_err(|error| SyncError::Connect {
                publisher: publisher.to_owned(),
                error,
            })?;
        let mut link = Link::new(stream);
        if let Some(key) = key {
            tokio::time::timeout(timeout, handshake::subscriber(&mut link, key))
                .await
                .map_err(|_| SyncError::Timeout(timeout))??;
        }
        Ok(Connection { link, timeout })
    }

    fn moved(&self) -> u64 {
        self.link.moved()
    }

    /// The datasets published.
    async fn list(&mut self) -> Result<Vec<Listed>, SyncError> {
        match self.exchange(&Request::List).await? {
            Response::Listing(listed) => Ok(listed),
            Response::Refusal(refusal) => Err(SyncError::Refused(refusal)),
            Response::Delta(_) => Err(SyncError::Malformed("a delta where a listing was due")),
        }
    }

    /// A delta from the copy `signature` describes to the publisher's version of `dataset`.
    async fn pull(
        &mut self,
        dataset: &str,
        signature: Vec<u8>,
    ) -> Result<super::wire::Delta, SyncError> {
        let request = Request::Pull {
            dataset: dataset.to_owned(),
            signature,
        };
        match self.exchange(&request).await? {
            Response::Delta(delta) if delta.dataset == dataset => Ok(delta),
            Response::Delta(_) => Err(SyncError::Malformed("a delta of another dataset")),
            Response::Refusal(refusal) => Err(SyncError::Refused(refusal)),
            Response::Listing(_) => Err(SyncError::Malformed("a listing where a delta was due")),
        }
    }

    /// Sends one request and reads its answer, within the timeout.
    async fn exchange(&mut self, request: &Request) -> Result<Response, SyncError> {
        let exchange = async {
            self.link.send(request.encode()).await?;
            let answer = self.link.receive(MAX_RESPONSE_PAYLOAD).await?;
            let answer = answer.ok_or(SyncError::Truncated { part: "header" })?;
            Response::decode(answer)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SyncError::Timeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::CHECKSUM_LEN;

    fn version(generation: u64) -> Version {
        Version {
            generation,
            len: 10,
            checksum: [1; CHECKSUM_LEN],
        }
    }

    #[test]
    fn an_older_generation_is_out_of_order() {
        let error = in_order("spam.txt", version(5), Some(version(6))).expect_err("older");
        assert_eq!(error.outcome(), SyncOutcome::OutOfOrder);
        assert!(
            error
                .to_string()
                .contains("generation 5 is older than the copy held (6)")
        );
    }

    #[test]
    fn the_same_or_a_newer_generation_or_no_copy_is_in_order() {
        assert!(in_order("spam.txt", version(6), Some(version(6))).is_ok());
        assert!(in_order("spam.txt", version(7), Some(version(6))).is_ok());
        assert!(in_order("spam.txt", version(1), None).is_ok());
    }
}
