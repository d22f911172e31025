//! The queue manager: takes spooled messages, delivers them by route, retries and bounces.
//!
//! Every message gets a first attempt as soon as it is spooled, with its content still in
//! memory. Recipients that get a temporary failure wait by the retry schedule (each wait is a
//! sleeping task, which tokio's timer wheel holds cheaply); a permanent failure, or a message
//! older than the queue lifetime, sends an RFC 3464 bounce to the reverse-path. A message
//! leaves the spool only when every recipient is delivered or failed, so a crash at any point
//! repeats at most the last attempt.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc};

use crate::bounce::{FailedRecipient, build_dsn};
use crate::envelope::Envelope;
use crate::queue_id::QueueId;
use crate::route::Route;
use crate::spool::{Progress, Spool, SpoolError};
use crate::transport::smtp::{Connection, Protocol, Timeouts};
use crate::transport::{RecipientResult, maildir};

/// Default waits between attempts: a few minutes, growing to hours (Postfix starts at 5 min and
/// backs off to 4000 s; Sendmail retries every 30 min to 1 h). The last entry repeats.
pub const DEFAULT_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(20 * 60),
    Duration::from_secs(40 * 60),
    Duration::from_secs(90 * 60),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(4 * 3600),
];

/// Default time a message may stay queued: 5 days, as Postfix's maximal_queue_lifetime.
pub const DEFAULT_MAX_QUEUE_LIFETIME: Duration = Duration::from_secs(5 * 24 * 3600);

/// Default number of deliveries in flight: enough to keep a storage server busy over loopback
/// or a LAN without opening more connections than Dovecot's default LMTP process limit.
pub const DEFAULT_CONCURRENCY: usize = 20;

/// How long an idle downstream connection is kept for reuse. Long enough to carry a burst of
/// messages, short enough not to hold storage servers' LMTP processes (Postfix keeps cached
/// connections 2 s; Dovecot's LMTP has no idle limit of its own).
const IDLE_CONNECTION_LIMIT: Duration = Duration::from_secs(5);

/// How often the pickup folder is looked at: a released message should leave within seconds.
const PICKUP_INTERVAL: Duration = Duration::from_secs(2);

/// How the queue manager delivers.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// This host's name, for EHLO/LHLO, Maildir file names and bounces.
    pub hostname: String,
    /// Where each accepted domain's mail goes, keyed by lower-case domain.
    pub routes: HashMap<String, Route>,
    /// Where mail for any other domain goes (bounces to external senders); `None` leaves such
    /// messages queued until they expire.
    pub fallback_route: Option<Route>,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Waits between attempts; the last one repeats.
    pub retry_schedule: Vec<Duration>,
    /// Age after which pending recipients fail.
    pub max_queue_lifetime: Duration,
    /// Timeouts towards downstream hosts.
    pub timeouts: Timeouts,
}

/// One message to attempt.
struct Job {
    id: QueueId,
    /// Present for a first attempt straight from the gateway; later attempts read the spool.
    loaded: Option<(Envelope, Arc<Vec<u8>>)>,
}

/// The queue: the spool on disk and the workers that empty it. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Spool,
    config: DeliveryConfig,
    jobs: mpsc::UnboundedSender<Job>,
    /// Idle downstream connections by host, with when each went idle, reused for the next
    /// message to the same host.
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
}

impl Queue {
    /// Opens the spool in `queue_dir`, schedules every message already in it, and starts the
    /// workers on the current tokio runtime.
    ///
    /// # Errors
    /// Fails when the spool cannot be opened or listed.
    pub fn start(queue_dir: &Path, config: DeliveryConfig) -> Result<Queue, SpoolError> {
        let spool = Spool::open(queue_dir)?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let queue = Queue {
            inner: Arc::new(Inner {
                spool,
                config,
                jobs,
                idle: Mutex::new(HashMap::new()),
            }),
        };

        let recovered = queue.recover()?;
        if recovered > 0 {
            tracing::info!(messages = recovered, "queue recovered after start");
        }
        tokio::spawn(queue.clone().dispatch(receiver));
        tokio::spawn(queue.clone().close_idle_connections());
        tokio::spawn(queue.clone().take_pickups());
        Ok(queue)
    }

    /// Stores a message durably, then hands it to the workers.
    ///
    /// When this returns Ok the message survives a crash, and the gateway may answer 250.
    ///
    /// # Errors
    /// Fails when the spool cannot store the message (full disk, permissions).
    pub async fn accept(
        &self,
        id: QueueId,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<(), SpoolError> {
        let message = Arc::new(message);
        let inner = Arc::clone(&self.inner);
        let (stored_envelope, stored_message) = (envelope.clone(), Arc::clone(&message));
        tokio::task::spawn_blocking(move || {
            inner.spool.store(id, &stored_envelope, &stored_message)
        })
        .await
        .map_err(|join| SpoolError::Io {
            action: "store",
            path: id.to_string().into(),
            source: std::io::Error::other(join.to_string()),
        })??;

        let _ = self.inner.jobs.send(Job {
            id,
            loaded: Some((envelope, message)),
        });
        Ok(())
    }

    /// Schedules every message found in the spool; returns how many.
    fn recover(&self) -> Result<usize, SpoolError> {
        let ids = self.inner.spool.list()?;
        let now = unix_now();
        for &id in &ids {
            let due = match self.inner.spool.load_progress(id) {
                Ok(Some(progress)) => progress.next_attempt.saturating_sub(now),
                Ok(None) => 0,
                Err(error) => {
                    tracing::warn!(queue_id = %id, %error, "progress record unreadable; retrying all recipients");
                    0
                }
            };
            self.schedule(id, Duration::from_secs(due));
        }
        Ok(ids.len())
    }

    /// Takes messages other programs drop into the pickup folder, every few seconds.
    async fn take_pickups(self) {
        let mut ticks = tokio::time::interval(PICKUP_INTERVAL);
        loop {
            ticks.tick().await;
            let inner = Arc::clone(&self.inner);
            match tokio::task::spawn_blocking(move || inner.spool.take_pickups()).await {
                Ok(Ok(ids)) => {
                    for id in ids {
                        tracing::info!(queue_id = %id, "message taken from pickup");
                        self.schedule(id, Duration::ZERO);
                    }
                }
                Ok(Err(error)) => tracing::error!(%error, "queue pickup failed"),
                Err(join) => tracing::error!(error = %join, "queue pickup panicked"),
            }
        }
    }

    /// Queues an attempt of a spooled message after `delay`.
    fn schedule(&self, id: QueueId, delay: Duration) {
        let jobs = self.inner.jobs.clone();
        if delay.is_zero() {
            let _ = jobs.send(Job { id, loaded: None });
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = jobs.send(Job { id, loaded: None });
        });
    }

    /// Runs attempts as jobs arrive, at most `concurrency` at a time.
    async fn dispatch(self, mut receiver: mpsc::UnboundedReceiver<Job>) {
        let slots = Arc::new(Semaphore::new(self.inner.config.concurrency.max(1)));
        while let Some(job) = receiver.recv().await {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let queue = self.clone();
            tokio::spawn(async move {
                queue.attempt(job).await;
                drop(slot);
            });
        }
    }

    /// One delivery attempt of one message to its pending recipients.
    async fn attempt(&self, job: Job) {
        let id = job.id;
        let Some((envelope, message, mut progress)) = self.load(job).await else {
            return;
        };

        // Deliver to each route's recipients.
        let mut outcomes = Vec::with_capacity(progress.pending.len());
        for (route, recipients) in self.group_by_route(&progress.pending) {
            let (host, results) = match route {
                Some(route) => {
                    self.deliver(id, &route, &envelope, &recipients, &message)
                        .await
                }
                None => {
                    let reason = "4.3.5 no route for the recipient's domain; set \
                                  delivery.fallback_route"
                        .to_string();
                    let results = recipients.iter().map(|_| RecipientResult::Deferred {
                        reason: reason.clone(),
                    });
                    ("none".to_string(), results.collect())
                }
            };
            for (recipient, result) in recipients.into_iter().zip(results) {
                log_attempt(id, &envelope, &recipient, &host, &result);
                outcomes.push((recipient, result));
            }
        }

        // Sort the outcomes: done, failed, or still pending.
        progress.attempts += 1;
        let expired = unix_now().saturating_sub(envelope.received_at)
            >= self.inner.config.max_queue_lifetime.as_secs();
        let mut failed = Vec::new();
        progress.pending.clear();
        progress.last_reasons.clear();
        for (recipient, result) in outcomes {
            match result {
                RecipientResult::Delivered { .. } => {}
                RecipientResult::Failed { reason } => failed.push((recipient, reason)),
                RecipientResult::Deferred { reason } if expired => {
                    failed.push((recipient, format!("5.4.7 delivery time expired: {reason}")));
                }
                RecipientResult::Deferred { reason } => {
                    progress.pending.push(recipient);
                    progress.last_reasons.push(reason);
                }
            }
        }

        if !failed.is_empty() {
            self.bounce(id, &envelope, &failed, &message).await;
        }
        self.settle(id, progress).await;
    }

    /// Reads what an attempt needs: from the job if it carries the content, else the spool.
    async fn load(&self, job: Job) -> Option<(Envelope, Arc<Vec<u8>>, Progress)> {
        let id = job.id;
        let inner = Arc::clone(&self.inner);
        let from_spool = job.loaded.is_none();
        let loaded = tokio::task::spawn_blocking(move || {
            let progress = inner.spool.load_progress(id)?;
            let loaded = match job.loaded {
                Some(loaded) => loaded,
                None => {
                    let (envelope, message) = inner.spool.load(id)?;
                    (envelope, Arc::new(message))
                }
            };
            Ok::<_, SpoolError>((loaded, progress))
        })
        .await;

        match loaded {
            Ok(Ok(((envelope, message), progress))) => {
                let progress = progress.unwrap_or_else(|| Progress {
                    pending: envelope.recipients.clone(),
                    attempts: 0,
                    next_attempt: 0,
                    last_reasons: Vec::new(),
                });
                Some((envelope, message, progress))
            }
            Ok(Err(error)) => {
                tracing::error!(queue_id = %id, from_spool, %error, "queued message unreadable; left in the queue for an operator");
                None
            }
            Err(join) => {
                tracing::error!(queue_id = %id, error = %join, "loading a queued message panicked");
                None
            }
        }
    }

    /// Groups recipients by the route of their domain, keeping envelope order within a route.
    fn group_by_route(&self, recipients: &[String]) -> Vec<(Option<Route>, Vec<String>)> {
        let mut groups: Vec<(Option<Route>, Vec<String>)> = Vec::new();
        for recipient in recipients {
            let domain = recipient
                .rsplit_once('@')
                .map(|(_, domain)| domain)
                .unwrap_or_default();
            let route = self
                .inner
                .config
                .routes
                .get(&domain.to_ascii_lowercase())
                .or(self.inner.config.fallback_route.as_ref())
                .cloned();
            match groups.iter_mut().find(|(existing, _)| *existing == route) {
                Some((_, members)) => members.push(recipient.clone()),
                None => groups.push((route, vec![recipient.clone()])),
            }
        }
        groups
    }

    /// Delivers to the recipients of one route; returns the host used and one result each.
    async fn deliver(
        &self,
        id: QueueId,
        route: &Route,
        envelope: &Envelope,
        recipients: &[String],
        message: &Arc<Vec<u8>>,
    ) -> (String, Vec<RecipientResult>) {
        match route {
            Route::Maildir(root) => {
                let root = root.clone();
                let hostname = self.inner.config.hostname.clone();
                let recipients_owned = recipients.to_vec();
                let message = Arc::clone(message);
                let delivered = tokio::task::spawn_blocking(move || {
                    maildir::deliver(
                        &root,
                        &hostname,
                        &id.to_string(),
                        &recipients_owned,
                        &message,
                    )
                })
                .await;
                let results = delivered.unwrap_or_else(|join| {
                    let reason = format!("4.3.0 maildir delivery panicked: {join}");
                    recipients
                        .iter()
                        .map(|_| RecipientResult::Deferred {
                            reason: reason.clone(),
                        })
                        .collect()
                });
                (route.to_string(), results)
            }
            Route::Relay { protocol, hosts } => {
                let mut envelope = envelope.clone();
                envelope.recipients = recipients.to_vec();
                self.relay(*protocol, hosts, &envelope, message).await
            }
        }
    }

    /// Tries the hosts of a relay route in order until one takes the transaction.
    ///
    /// A host that cannot be reached, or whose session breaks, passes the message to the next
    /// (primary to standby); if none answers, every recipient is deferred with the last error.
    async fn relay(
        &self,
        protocol: Protocol,
        hosts: &[String],
        envelope: &Envelope,
        message: &[u8],
    ) -> (String, Vec<RecipientResult>) {
        let mut last_error = String::from("no host configured");
        for host in hosts {
            // A pooled connection may have been closed by the host while idle: on failure,
            // try once more on a fresh connection before moving to the standby.
            let mut pooled = self.take_idle(host);
            loop {
                let reused = pooled.is_some();
                let connection = match pooled.take() {
                    Some(connection) => Ok(connection),
                    None => {
                        let config = &self.inner.config;
                        Connection::open(host, protocol, &config.hostname, &config.timeouts).await
                    }
                };
                let mut connection = match connection {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::warn!(host = %host, %error, "downstream host unavailable; trying the next");
                        last_error = error.to_string();
                        break;
                    }
                };
                match connection.send(envelope, message).await {
                    Ok(results) => {
                        self.put_idle(connection);
                        return (host.clone(), results);
                    }
                    Err(error) if reused => {
                        tracing::debug!(host = %host, %error, "pooled connection failed; reconnecting");
                    }
                    Err(error) => {
                        tracing::warn!(host = %host, %error, "downstream session failed; trying the next");
                        last_error = error.to_string();
                        break;
                    }
                }
            }
        }

        let reason = format!("4.4.1 no downstream host took the message: {last_error}");
        let results = envelope
            .recipients
            .iter()
            .map(|_| RecipientResult::Deferred {
                reason: reason.clone(),
            })
            .collect();
        (hosts.join(","), results)
    }

    /// The most recently idled connection to `host`, if one is fresh enough.
    fn take_idle(&self, host: &str) -> Option<Connection> {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (connection, since) = idle.get_mut(host)?.pop()?;
        (since.elapsed() < IDLE_CONNECTION_LIMIT).then_some(connection)
    }

    fn put_idle(&self, connection: Connection) {
        if !connection.is_usable() {
            return;
        }
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let host = connection.host().to_string();
        idle.entry(host)
            .or_default()
            .push((connection, Instant::now()));
    }

    /// Says QUIT on connections idle for longer than the limit, every few seconds.
    async fn close_idle_connections(self) {
        let mut ticks = tokio::time::interval(IDLE_CONNECTION_LIMIT);
        loop {
            ticks.tick().await;
            let expired: Vec<Connection> = {
                let mut idle = self
                    .inner
                    .idle
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut expired = Vec::new();
                for connections in idle.values_mut() {
                    let (old, fresh): (Vec<_>, Vec<_>) = connections
                        .drain(..)
                        .partition(|(_, since)| since.elapsed() >= IDLE_CONNECTION_LIMIT);
                    *connections = fresh;
                    expired.extend(old.into_iter().map(|(connection, _)| connection));
                }
                idle.retain(|_, connections| !connections.is_empty());
                expired
            };
            for connection in expired {
                connection.quit().await;
            }
        }
    }

    /// Sends one bounce for the failed recipients, unless the reverse-path is null.
    async fn bounce(
        &self,
        id: QueueId,
        envelope: &Envelope,
        failed: &[(String, String)],
        message: &[u8],
    ) {
        if envelope.has_null_sender() {
            // RFC 5321 section 4.5.5: never bounce a bounce.
            tracing::warn!(queue_id = %id, failed = failed.len(), "recipients failed for a null-sender message; no bounce");
            return;
        }

        let failed: Vec<FailedRecipient> = failed
            .iter()
            .map(|(address, reason)| FailedRecipient {
                address: address.clone(),
                reason: reason.clone(),
                remote_host: None,
            })
            .collect();
        let hostname = &self.inner.config.hostname;
        let report = match build_dsn(
            hostname,
            &id.to_string(),
            envelope,
            &failed,
            message,
            SystemTime::now(),
        ) {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(queue_id = %id, %error, "bounce could not be built");
                return;
            }
        };

        let bounce_id = QueueId::generate();
        let bounce_envelope = Envelope {
            reverse_path: String::new(),
            recipients: vec![envelope.reverse_path.clone()],
            smtputf8: envelope.smtputf8,
            body: envelope.body,
            client_ip: envelope.client_ip,
            helo: hostname.clone(),
            received_at: unix_now(),
        };
        match self.accept(bounce_id, bounce_envelope, report).await {
            Ok(()) => {
                tracing::info!(queue_id = %id, bounce_id = %bounce_id, to = %envelope.reverse_path, "bounce queued")
            }
            Err(error) => tracing::error!(queue_id = %id, %error, "bounce could not be queued"),
        }
    }

    /// Removes a finished message, or records its progress and schedules the next attempt.
    async fn settle(&self, id: QueueId, mut progress: Progress) {
        let delay = if progress.pending.is_empty() {
            None
        } else {
            let schedule = &self.inner.config.retry_schedule;
            let step = (progress.attempts as usize)
                .saturating_sub(1)
                .min(schedule.len().saturating_sub(1));
            let delay = schedule
                .get(step)
                .copied()
                .unwrap_or(DEFAULT_RETRY_SCHEDULE[0]);
            progress.next_attempt = unix_now() + delay.as_secs();
            Some(delay)
        };

        let inner = Arc::clone(&self.inner);
        let saved = tokio::task::spawn_blocking(move || match delay {
            None => inner.spool.remove(id),
            Some(_) => inner.spool.save_progress(id, &progress),
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(queue_id = %id, %error, "queue update failed; the attempt may be repeated")
            }
            Err(join) => tracing::error!(queue_id = %id, error = %join, "queue update panicked"),
        }
        if let Some(delay) = delay {
            self.schedule(id, delay);
        }
    }
}

/// One log line per recipient per attempt, with the delay since the message arrived.
fn log_attempt(
    id: QueueId,
    envelope: &Envelope,
    recipient: &str,
    host: &str,
    result: &RecipientResult,
) {
    let delay = unix_now().saturating_sub(envelope.received_at);
    let (status, reply) = match result {
        RecipientResult::Delivered { reply } => ("delivered", reply),
        RecipientResult::Deferred { reason } => ("deferred", reason),
        RecipientResult::Failed { reason } => ("failed", reason),
    };
    tracing::info!(queue_id = %id, recipient, host, status, reply = %reply, delay_s = delay, "delivery attempt");
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
