//! The greylisting rule: what a triplet's record and the clock say about one delivery attempt.
//!
//! Pure functions over records, no I/O: each store runs them inside its own transaction (or
//! conflict-safe upsert), so the rule is written once and every backend decides alike.

use std::time::Duration;

/// Postgrey's default delay: long enough that spambots, which rarely retry, give up; short
/// enough that real mail is not held for long (most MTAs retry within 5 to 30 minutes).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(300);

/// Postgrey's default retry window: a retry later than this after the first attempt starts over,
/// so a triplet seen once long ago does not pass a spambot's second run.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(2 * 24 * 3600);

/// Postgrey's default time a passed triplet, or an auto-whitelisted client, stays known
/// without being seen: 35 days covers a monthly newsletter with some margin.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(35 * 24 * 3600);

/// Postgrey's default: a client network passes at once after this many successful deliveries.
pub const DEFAULT_AUTO_WHITELIST_CLIENTS: u32 = 5;

/// A client's successful deliveries count at most once in this time, as in postgrey, so that
/// one burst of mail from a new client does not whitelist it at once.
pub const AUTO_WHITELIST_COUNT_INTERVAL: u64 = 3600;

/// A known record's last-seen time is written again only when older than this: expiry is
/// measured in days, and skipping the write keeps the common case (a known triplet) a read.
pub const LAST_SEEN_REFRESH: u64 = 24 * 3600;

/// The timing of the rule, validated (see `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The least time between the first attempt and a retry that passes.
    pub delay: u64,
    /// The most time between the first attempt and a retry that passes.
    pub retry_window: u64,
    /// How long a passed triplet or whitelisted client stays known without being seen.
    pub max_age: u64,
    /// Successful deliveries after which a client network passes at once; 0 turns this off.
    pub auto_whitelist_after: u32,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            delay: DEFAULT_DELAY.as_secs(),
            retry_window: DEFAULT_RETRY_WINDOW.as_secs(),
            max_age: DEFAULT_MAX_AGE.as_secs(),
            auto_whitelist_after: DEFAULT_AUTO_WHITELIST_CLIENTS,
        }
    }
}

/// What the store remembers of one triplet; times in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TripletRecord {
    /// The first attempt of the current round.
    pub first_seen: u64,
    /// The last attempt that was written (refreshed at most daily once passed).
    pub last_seen: u64,
    /// Whether a retry passed.
    pub passed: bool,
}

/// What the store remembers of one client network, for the auto-whitelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRecord {
    /// Successful deliveries counted.
    pub passes: u32,
    /// When a delivery was last counted.
    pub last_counted: u64,
    /// When a delivery was last seen.
    pub last_seen: u64,
}

/// The rule's answer for one attempt, before exemptions and failures are added (see
/// [`crate::Decision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Too early: retry after this many seconds.
    Defer {
        /// Seconds until the retry would pass.
        retry_after: u64,
    },
    /// A retry that passed now, this many seconds after the first attempt.
    PassedOnRetry {
        /// Seconds the sender needed to come back.
        delayed: u64,
    },
    /// The triplet passed before.
    KnownTriplet,
    /// The client network is auto-whitelisted.
    AutoWhitelisted,
}

impl Verdict {
    /// Whether the delivery goes ahead (and so counts for the client's auto-whitelist).
    pub fn passes(self) -> bool {
        !matches!(self, Verdict::Defer { .. })
    }
}

impl Rules {
    /// Applies the rule to a triplet's record at `now`: the verdict, and the record to write,
    /// if it changed.
    pub fn observe_triplet(
        &self,
        record: Option<TripletRecord>,
        now: u64,
    ) -> (Verdict, Option<TripletRecord>) {
        let fresh = TripletRecord {
            first_seen: now,
            last_seen: now,
            passed: false,
        };
        let first_attempt = (
            Verdict::Defer {
                retry_after: self.delay,
            },
            Some(fresh),
        );
        let Some(record) = record else {
            return first_attempt;
        };

        if record.passed {
            if now.saturating_sub(record.last_seen) > self.max_age {
                return first_attempt;
            }
            let refresh = now.saturating_sub(record.last_seen) >= LAST_SEEN_REFRESH;
            let update = refresh.then_some(TripletRecord {
                last_seen: now,
                ..record
            });
            return (Verdict::KnownTriplet, update);
        }

        // Not passed yet: too late starts a new round, too early waits, otherwise it passes.
        let waited = now.saturating_sub(record.first_seen);
        if waited > self.retry_window {
            return first_attempt;
        }
        if waited < self.delay {
            let retry_after = self.delay - waited;
            return (Verdict::Defer { retry_after }, None);
        }
        let passed = TripletRecord {
            first_seen: record.first_seen,
            last_seen: now,
            passed: true,
        };
        (Verdict::PassedOnRetry { delayed: waited }, Some(passed))
    }

    /// Whether a client network passes at once by the auto-whitelist.
    pub fn is_auto_whitelisted(&self, record: Option<&ClientRecord>, now: u64) -> bool {
        self.auto_whitelist_after > 0
            && record.is_some_and(|record| {
                record.passes >= self.auto_whitelist_after
                    && now.saturating_sub(record.last_seen) <= self.max_age
            })
    }

    /// Counts a successful delivery of a client network: the record to write, if it changed.
    pub fn count_pass(&self, record: Option<ClientRecord>, now: u64) -> Option<ClientRecord> {
        if self.auto_whitelist_after == 0 {
            return None;
        }
        let Some(record) = record.filter(|r| now.saturating_sub(r.last_seen) <= self.max_age)
        else {
            return Some(ClientRecord {
                passes: 1,
                last_counted: now,
                last_seen: now,
            });
        };
        if now.saturating_sub(record.last_counted) >= AUTO_WHITELIST_COUNT_INTERVAL {
            return Some(ClientRecord {
                passes: record.passes.saturating_add(1),
                last_counted: now,
                last_seen: now,
            });
        }
        let refresh = now.saturating_sub(record.last_seen) >= LAST_SEEN_REFRESH;
        refresh.then_some(ClientRecord {
            last_seen: now,
            ..record
        })
    }

    /// Whether a triplet record may be deleted at `now`: passed and unseen for `max_age`, or
    /// never passed and its retry window over.
    pub fn triplet_expired(&self, record: &TripletRecord, now: u64) -> bool {
        if record.passed {
            now.saturating_sub(record.last_seen) > self.max_age
        } else {
            now.saturating_sub(record.first_seen) > self.retry_window
        }
    }

    /// Whether a client record may be deleted at `now`.
    pub fn client_expired(&self, record: &ClientRecord, now: u64) -> bool {
        now.saturating_sub(record.last_seen) > self.max_age
    }

    /// Decides an attempt from both records: the auto-whitelist first, then the triplet.
    /// Returns the verdict and the records to write.
    pub fn decide(
        &self,
        client: Option<ClientRecord>,
        triplet: Option<TripletRecord>,
        now: u64,
    ) -> (Verdict, Option<ClientRecord>, Option<TripletRecord>) {
        if self.is_auto_whitelisted(client.as_ref(), now) {
            return (Verdict::AutoWhitelisted, self.count_pass(client, now), None);
        }
        let (verdict, triplet_update) = self.observe_triplet(triplet, now);
        let client_update = if verdict.passes() {
            self.count_pass(client, now)
        } else {
            None
        };
        (verdict, client_update, triplet_update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn replay(rules: &Rules, steps: &[u64]) -> Vec<Verdict> {
        let mut record = None;
        let mut verdicts = Vec::new();
        for &at in steps {
            let (verdict, update) = rules.observe_triplet(record, at);
            record = update.or(record);
            verdicts.push(verdict);
        }
        verdicts
    }

    #[test]
    fn first_attempt_is_deferred_for_the_whole_delay() {
        let verdicts = replay(&Rules::default(), &[T0]);
        assert_eq!(verdicts, [Verdict::Defer { retry_after: 300 }]);
    }

    #[test]
    fn early_retry_is_deferred_for_the_rest_of_the_delay() {
        let verdicts = replay(&Rules::default(), &[T0, T0 + 299]);
        assert_eq!(verdicts[1], Verdict::Defer { retry_after: 1 });
    }

    #[test]
    fn retry_after_exactly_the_delay_passes() {
        let verdicts = replay(&Rules::default(), &[T0, T0 + 300, T0 + 400]);
        assert_eq!(verdicts[1], Verdict::PassedOnRetry { delayed: 300 });
        assert_eq!(verdicts[2], Verdict::KnownTriplet);
    }

    #[test]
    fn retry_after_the_window_starts_a_new_round() {
        let late = T0 + 2 * 24 * 3600 + 1;
        let verdicts = replay(&Rules::default(), &[T0, late, late + 300]);
        assert_eq!(verdicts[1], Verdict::Defer { retry_after: 300 });
        assert_eq!(verdicts[2], Verdict::PassedOnRetry { delayed: 300 });
    }

    #[test]
    fn passed_triplet_is_forgotten_after_max_age_unseen() {
        let rules = Rules::default();
        let expired = T0 + 300 + rules.max_age + 1;
        let verdicts = replay(&rules, &[T0, T0 + 300, expired]);
        assert_eq!(verdicts[2], Verdict::Defer { retry_after: 300 });
    }

    #[test]
    fn known_triplet_is_rewritten_at_most_daily() {
        let rules = Rules::default();
        let record = TripletRecord {
            first_seen: T0,
            last_seen: T0 + 300,
            passed: true,
        };
        assert_eq!(rules.observe_triplet(Some(record), T0 + 3600).1, None);
        let next_day = T0 + 300 + LAST_SEEN_REFRESH;
        let update = rules.observe_triplet(Some(record), next_day).1;
        assert_eq!(update.map(|r| r.last_seen), Some(next_day));
    }

    #[test]
    fn clock_going_backwards_defers_instead_of_overflowing() {
        let verdicts = replay(&Rules::default(), &[T0, T0 - 100]);
        assert_eq!(verdicts[1], Verdict::Defer { retry_after: 300 });
    }

    #[test]
    fn client_is_whitelisted_after_five_passes_an_hour_apart() {
        let rules = Rules::default();
        let mut client = None;
        for n in 0..5 {
            assert!(!rules.is_auto_whitelisted(client.as_ref(), T0 + n * 3600));
            client = rules.count_pass(client, T0 + n * 3600).or(client);
        }
        assert!(rules.is_auto_whitelisted(client.as_ref(), T0 + 5 * 3600));
    }

    #[test]
    fn passes_within_an_hour_count_once() {
        let rules = Rules::default();
        let mut client = None;
        for n in 0..10 {
            client = rules.count_pass(client, T0 + n * 60).or(client);
        }
        assert_eq!(client.map(|c| c.passes), Some(1));
    }

    #[test]
    fn auto_whitelist_of_zero_is_off() {
        let rules = Rules {
            auto_whitelist_after: 0,
            ..Rules::default()
        };
        assert_eq!(rules.count_pass(None, T0), None);
        let many = ClientRecord {
            passes: 100,
            last_counted: T0,
            last_seen: T0,
        };
        assert!(!rules.is_auto_whitelisted(Some(&many), T0));
    }

    #[test]
    fn whitelisted_client_passes_without_touching_the_triplet() {
        let rules = Rules::default();
        let client = ClientRecord {
            passes: 5,
            last_counted: T0,
            last_seen: T0,
        };
        let (verdict, _, triplet) = rules.decide(Some(client), None, T0 + 10);
        assert_eq!(verdict, Verdict::AutoWhitelisted);
        assert_eq!(triplet, None);
    }

    #[test]
    fn expiry_keeps_pending_triplets_for_the_retry_window_and_passed_ones_for_max_age() {
        let rules = Rules::default();
        let pending = TripletRecord {
            first_seen: T0,
            last_seen: T0,
            passed: false,
        };
        assert!(!rules.triplet_expired(&pending, T0 + rules.retry_window));
        assert!(rules.triplet_expired(&pending, T0 + rules.retry_window + 1));
        let passed = TripletRecord {
            passed: true,
            ..pending
        };
        assert!(!rules.triplet_expired(&passed, T0 + rules.retry_window + 1));
        assert!(rules.triplet_expired(&passed, T0 + rules.max_age + 1));
    }
}
