//! How many queries the server answered, by transport and outcome: the figures an operator
//! graphs to see a DNS node's load and what its clients ask, in Prometheus text.
//!
//! The UDP loop counts a batch in a plain array and adds it to the shared counters once per
//! batch, so the hot path pays a few relaxed atomic additions per recvmmsg, not per query.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::outcome::Outcome;
use crate::wire::Transport;

/// The outcomes of one batch of queries, counted without atomics.
pub(crate) type BatchCounts = [u64; Outcome::ALL.len()];

/// Queries answered since the server started, shared by every socket and thread.
#[derive(Clone, Default)]
pub struct QueryCounters {
    inner: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    udp: [AtomicU64; Outcome::ALL.len()],
    tcp: [AtomicU64; Outcome::ALL.len()],
}

impl QueryCounters {
    /// Adds one batch answered over `transport`.
    pub(crate) fn add_batch(&self, transport: Transport, batch: &BatchCounts) {
        let counters = self.of(transport);
        for (counter, &count) in counters.iter().zip(batch) {
            if count > 0 {
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Adds one query answered over `transport`.
    pub(crate) fn add(&self, transport: Transport, outcome: Outcome) {
        self.of(transport)[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Queries answered over UDP and TCP with `outcome`.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.inner.udp[outcome.index()].load(Ordering::Relaxed)
            + self.inner.tcp[outcome.index()].load(Ordering::Relaxed)
    }

    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# HELP moat_dnsbl_queries_total DNS queries answered, by transport and outcome.\n\
             # TYPE moat_dnsbl_queries_total counter\n",
        );
        for (transport, counters) in [("udp", &self.inner.udp), ("tcp", &self.inner.tcp)] {
            for (outcome, counter) in Outcome::ALL.iter().zip(counters) {
                let _ = writeln!(
                    text,
                    "moat_dnsbl_queries_total{{transport=\"{transport}\",outcome=\"{}\"}} {}",
                    outcome.as_str(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        text
    }

    fn of(&self, transport: Transport) -> &[AtomicU64; Outcome::ALL.len()] {
        match transport {
            Transport::Udp => &self.inner.udp,
            Transport::Tcp => &self.inner.tcp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_single_queries_add_up_per_transport() {
        let counters = QueryCounters::default();
        let mut batch: BatchCounts = [0; Outcome::ALL.len()];
        batch[Outcome::Listed.index()] = 3;
        batch[Outcome::NxDomain.index()] = 2;

        counters.add_batch(Transport::Udp, &batch);
        counters.add(Transport::Tcp, Outcome::Listed);

        assert_eq!(counters.total(Outcome::Listed), 4);
        assert_eq!(counters.total(Outcome::NxDomain), 2);
        let text = counters.render();
        assert!(
            text.contains("moat_dnsbl_queries_total{transport=\"udp\",outcome=\"listed\"} 3\n")
        );
        assert!(
            text.contains("moat_dnsbl_queries_total{transport=\"tcp\",outcome=\"listed\"} 1\n")
        );
        assert!(
            text.contains("moat_dnsbl_queries_total{transport=\"tcp\",outcome=\"nxdomain\"} 0\n")
        );
    }
}
