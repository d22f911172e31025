//! The subscriber's counters: syncs by outcome, bytes moved on the wire, and the full size of
//! what they rebuilt, so the ratio of the two shows what the deltas save.
//!
//! Plain atomics, read through [`SyncMetrics`]'s accessors; [`SyncMetrics::render`] writes the
//! Prometheus text format for the `/metrics` endpoint of `moat serve` and `moat dnsbl serve`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::outcome::SyncOutcome;

/// Counters of one subscriber since it started.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    outcomes: [AtomicU64; SyncOutcome::ALL.len()],
    bytes_moved: AtomicU64,
    full_bytes: AtomicU64,
}

impl SyncMetrics {
    /// How many dataset syncs (or whole passes, for failures before any dataset) ended so.
    pub fn total(&self, outcome: SyncOutcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    /// Bytes sent and received on the wire, requests, listings and failed exchanges included.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved.load(Ordering::Relaxed)
    }

    /// The sum of the full sizes of the versions installed: what plain copies would have moved.
    pub fn full_bytes(&self) -> u64 {
        self.full_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, outcome: SyncOutcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn moved(&self, bytes: u64) {
        self.bytes_moved.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn installed(&self, full_size: u64) {
        self.full_bytes.fetch_add(full_size, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        text.push_str("# HELP moat_dnsbl_sync_total Dataset syncs by outcome.\n");
        text.push_str("# TYPE moat_dnsbl_sync_total counter\n");
        for outcome in SyncOutcome::ALL {
            let total = self.total(outcome);
            let _ = writeln!(
                text,
                "moat_dnsbl_sync_total{{outcome=\"{outcome}\"}} {total}"
            );
        }
        let counters = [
            (
                "moat_dnsbl_sync_bytes_moved_total",
                "Bytes sent and received by the sync.",
                self.bytes_moved(),
            ),
            (
                "moat_dnsbl_sync_full_bytes_total",
                "Full size of the dataset versions installed.",
                self.full_bytes(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_outcome_and_the_byte_counters() {
        let metrics = SyncMetrics::default();
        metrics.count(SyncOutcome::ChecksumMismatch);
        metrics.count(SyncOutcome::BadMac);
        metrics.moved(1234);
        metrics.installed(99_999);
        let text = metrics.render();
        assert!(text.contains("moat_dnsbl_sync_total{outcome=\"checksum_mismatch\"} 1\n"));
        assert!(text.contains("moat_dnsbl_sync_total{outcome=\"updated\"} 0\n"));
        assert!(text.contains("moat_dnsbl_sync_total{outcome=\"bad_mac\"} 1\n"));
        assert!(text.contains("moat_dnsbl_sync_total{outcome=\"unauthenticated\"} 0\n"));
        assert!(text.contains("moat_dnsbl_sync_bytes_moved_total 1234\n"));
        assert!(text.contains("moat_dnsbl_sync_full_bytes_total 99999\n"));
    }
}
