//! Counters of each outcome and a histogram of how long real senders took to retry, per shard.
//!
//! Plain atomics: a decision costs a few relaxed increments, and [`Metrics::render`] writes
//! the Prometheus text format for whoever exposes it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reply::Outcome;

/// Upper bounds of the retry-delay histogram, in seconds: around postgrey's 5-minute delay,
/// then the retry schedules of common MTAs (up to the 2-day retry window).
pub const DELAY_BUCKETS: [u64; 10] = [
    60, 300, 600, 900, 1800, 3600, 14_400, 43_200, 86_400, 172_800,
];

/// The counters of one shard.
#[derive(Debug)]
struct ShardMetrics {
    name: String,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    /// One count per bucket of [`DELAY_BUCKETS`], plus one for longer delays.
    delay_buckets: [AtomicU64; DELAY_BUCKETS.len() + 1],
    delay_sum: AtomicU64,
}

/// The metrics of one greylist, one set per shard (the embedded store is one shard).
#[derive(Debug)]
pub struct Metrics {
    shards: Vec<ShardMetrics>,
}

impl Metrics {
    /// Zeroed metrics for shards with these names.
    pub fn new(shard_names: &[String]) -> Metrics {
        let shards = shard_names
            .iter()
            .map(|name| ShardMetrics {
                name: name.clone(),
                outcomes: Default::default(),
                delay_buckets: Default::default(),
                delay_sum: AtomicU64::new(0),
            })
            .collect();
        Metrics { shards }
    }

    /// Counts one outcome on a shard; an unknown shard index is ignored.
    pub fn count(&self, shard: usize, outcome: Outcome) {
        let Some(metrics) = self.shards.get(shard) else {
            return;
        };
        metrics.outcomes[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a sender took to come back, for a triplet that passed on retry.
    pub fn observe_delay(&self, shard: usize, seconds: u64) {
        let Some(metrics) = self.shards.get(shard) else {
            return;
        };
        let bucket = DELAY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DELAY_BUCKETS.len());
        metrics.delay_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        metrics.delay_sum.fetch_add(seconds, Ordering::Relaxed);
    }

    /// The count of `outcome` on one shard.
    pub fn outcome_count(&self, shard: usize, outcome: Outcome) -> u64 {
        self.shards.get(shard).map_or(0, |metrics| {
            metrics.outcomes[outcome_index(outcome)].load(Ordering::Relaxed)
        })
    }

    /// The count of `outcome` over all shards.
    pub fn total(&self, outcome: Outcome) -> u64 {
        (0..self.shards.len())
            .map(|shard| self.outcome_count(shard, outcome))
            .sum()
    }

    /// The number of retry delays recorded on one shard.
    pub fn delays_observed(&self, shard: usize) -> u64 {
        self.shards.get(shard).map_or(0, |metrics| {
            metrics
                .delay_buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .sum()
        })
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        text.push_str("# TYPE moat_greylist_decisions_total counter\n");
        for shard in &self.shards {
            for outcome in Outcome::ALL {
                let value = shard.outcomes[outcome_index(outcome)].load(Ordering::Relaxed);
                let _ = writeln!(
                    text,
                    "moat_greylist_decisions_total{{shard=\"{}\",outcome=\"{outcome}\"}} {value}",
                    shard.name
                );
            }
        }
        text.push_str("# TYPE moat_greylist_retry_delay_seconds histogram\n");
        for shard in &self.shards {
            render_histogram(&mut text, shard);
        }
        text
    }
}

fn render_histogram(text: &mut String, shard: &ShardMetrics) {
    let name = "moat_greylist_retry_delay_seconds";
    let mut cumulative = 0;
    for (i, bucket) in shard.delay_buckets.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = DELAY_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), u64::to_string);
        let _ = writeln!(
            text,
            "{name}_bucket{{shard=\"{}\",le=\"{le}\"}} {cumulative}",
            shard.name
        );
    }
    let sum = shard.delay_sum.load(Ordering::Relaxed);
    let _ = writeln!(text, "{name}_sum{{shard=\"{}\"}} {sum}", shard.name);
    let _ = writeln!(
        text,
        "{name}_count{{shard=\"{}\"}} {cumulative}",
        shard.name
    );
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL
        .iter()
        .position(|&o| o == outcome)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_shards() -> Metrics {
        Metrics::new(&["a".to_owned(), "b".to_owned()])
    }

    #[test]
    fn counts_outcomes_per_shard() {
        let metrics = two_shards();
        metrics.count(0, Outcome::Deferred);
        metrics.count(1, Outcome::Deferred);
        metrics.count(1, Outcome::Exempted);
        assert_eq!(metrics.outcome_count(0, Outcome::Deferred), 1);
        assert_eq!(metrics.outcome_count(1, Outcome::Exempted), 1);
        assert_eq!(metrics.total(Outcome::Deferred), 2);
    }

    #[test]
    fn unknown_shards_are_ignored() {
        let metrics = two_shards();
        metrics.count(7, Outcome::Deferred);
        metrics.observe_delay(7, 300);
        assert_eq!(metrics.total(Outcome::Deferred), 0);
    }

    #[test]
    fn histogram_is_cumulative_in_prometheus_text() {
        let metrics = two_shards();
        metrics.observe_delay(0, 300);
        metrics.observe_delay(0, 301);
        metrics.observe_delay(0, 1_000_000);
        let text = metrics.render();
        let bucket = "moat_greylist_retry_delay_seconds_bucket";
        assert!(
            text.contains(&format!("{bucket}{{shard=\"a\",le=\"300\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket}{{shard=\"a\",le=\"600\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket}{{shard=\"a\",le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(text.contains("moat_greylist_retry_delay_seconds_sum{shard=\"a\"} 1000601\n"));
        assert_eq!(metrics.delays_observed(0), 3);
    }
}
