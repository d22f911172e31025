//! [`Greylist`]: the in-process API. Exemptions first, then the store within the budget, then
//! the metrics; every request ends in one [`Decision`].

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Backend, GreylistSettings};
use crate::exemptions::Exemptions;
use crate::metrics::Metrics;
use crate::policy::{Rules, Verdict};
use crate::reply::{Decision, FailureMode, Known, Outcome};
use crate::store::embedded::EmbeddedStore;
use crate::store::mysql::MysqlStore;
use crate::store::{Store, StoreError};
use crate::triplet::{ClientGrouping, Triplet, TripletRequest};

/// Triplet greylisting over one store.
pub struct Greylist {
    store: Arc<dyn Store>,
    rules: Rules,
    grouping: ClientGrouping,
    exemptions: Exemptions,
    budget: Duration,
    failure_mode: FailureMode,
    hostname: String,
    metrics: Metrics,
}

impl Greylist {
    /// Opens the configured store: the embedded file (deciding by `clock`), or the MySQL shards
    /// (each deciding by its own server's clock), creating or migrating their schema.
    ///
    /// # Errors
    /// [`StoreError`] when the embedded file cannot be opened. MySQL shards that are down are
    /// not an error here: they are retried on each request, under the failure mode.
    pub async fn open(
        settings: &GreylistSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Greylist, StoreError> {
        let store: Arc<dyn Store> = match &settings.backend {
            Backend::Embedded {
                path,
                sync_interval,
            } => Arc::new(EmbeddedStore::open(path, clock, *sync_interval)?),
            Backend::Mysql(shards) => Arc::new(MysqlStore::connect(shards).await),
        };
        Ok(Greylist::with_store(store, settings))
    }

    /// A greylist over a store already open.
    pub fn with_store(store: Arc<dyn Store>, settings: &GreylistSettings) -> Greylist {
        let metrics = Metrics::new(&store.shard_names());
        Greylist {
            store,
            rules: settings.rules,
            grouping: settings.grouping.clone(),
            exemptions: settings.exemptions.clone(),
            budget: settings.budget,
            failure_mode: settings.failure_mode,
            hostname: settings.hostname.clone(),
            metrics,
        }
    }

    /// Decides one delivery attempt. Never fails: a store that errs or outlasts the budget
    /// gives [`Decision::Unavailable`] with the configured failure mode.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped check leaves the store with or without its write, both valid.
    pub async fn check(&self, request: &TripletRequest) -> Decision {
        let triplet = Triplet::from_request(request, &self.grouping);
        let shard = self.store.shard_of(&triplet);

        if let Some(exemption) = self.exemptions.check(request) {
            self.metrics.count(shard, Outcome::Exempted);
            let exemption_name = exemption.name();
            tracing::debug!(client = %triplet.client, exemption = exemption_name, "exempt");
            return Decision::Exempt { because: exemption };
        }

        let decided = tokio::time::timeout(self.budget, self.store.decide(&triplet, &self.rules));
        let decision = match decided.await {
            Ok(Ok(verdict)) => decision_of(verdict),
            Ok(Err(error)) => {
                tracing::warn!(shard, %error, "greylist store failed; failure mode applies");
                Decision::Unavailable {
                    mode: self.failure_mode,
                }
            }
            Err(_) => {
                let budget_ms = self.budget.as_millis() as u64;
                tracing::warn!(
                    shard,
                    budget_ms,
                    "greylist store too slow; failure mode applies"
                );
                Decision::Unavailable {
                    mode: self.failure_mode,
                }
            }
        };

        self.metrics.count(shard, decision.outcome());
        if let Decision::Pass { delayed } = decision {
            self.metrics.observe_delay(shard, delayed.as_secs());
        }
        tracing::debug!(
            client = %triplet.client,
            sender = %triplet.sender,
            recipient = %triplet.recipient,
            outcome = %decision.outcome(),
            "greylist decision"
        );
        decision
    }

    /// Removes expired records now; returns how many went.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be reached.
    pub async fn expire(&self) -> Result<u64, StoreError> {
        self.store.expire(&self.rules).await
    }

    /// Runs [`Greylist::expire`] every `interval` until the task is aborted.
    pub fn spawn_expiry(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let greylist = Arc::clone(self);
        tokio::spawn(async move {
            // The first run waits a whole interval: a restart loop should not rescan the store.
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match greylist.expire().await {
                    Ok(removed) => tracing::info!(removed, "greylist expiry done"),
                    Err(error) => {
                        tracing::warn!(%error, "greylist expiry failed; next run retries")
                    }
                }
            }
        })
    }

    /// The counters and histogram.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The host name the X-Greylist header names.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The timing in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

fn decision_of(verdict: Verdict) -> Decision {
    match verdict {
        Verdict::Defer { retry_after } => Decision::Defer {
            retry_after: Duration::from_secs(retry_after),
        },
        Verdict::PassedOnRetry { delayed } => Decision::Pass {
            delayed: Duration::from_secs(delayed),
        },
        Verdict::KnownTriplet => Decision::PassAtOnce {
            because: Known::Triplet,
        },
        Verdict::AutoWhitelisted => Decision::PassAtOnce {
            because: Known::AutoWhitelistedClient,
        },
    }
}
