//! The clock a store decides by: injected, so tests can step through days in microseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time, in whole seconds since the Unix epoch.
///
/// Greylisting compares times seconds apart at the finest, so seconds are enough, and an integer
/// is what both stores keep. A MySQL shard does not use one: it reads its own server's clock, so
/// that gateway nodes with skewed clocks still agree on each triplet.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        // A clock set before 1970 is a broken machine; 0 keeps every comparison well defined.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// A clock that moves only when told to: for replaying a scenario at chosen instants.
///
/// Clones share the same time, so a test keeps one handle and gives another to the store.
#[derive(Debug, Clone)]
pub struct ManualClock {
    seconds: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `seconds` since the epoch.
    pub fn starting_at(seconds: u64) -> ManualClock {
        ManualClock {
            seconds: Arc::new(AtomicU64::new(seconds)),
        }
    }

    /// Sets the time.
    pub fn set(&self, seconds: u64) {
        self.seconds.store(seconds, Ordering::SeqCst);
    }

    /// Moves the time forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.seconds.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_one_time() {
        let clock = ManualClock::starting_at(1_000);
        let other = clock.clone();
        clock.advance(300);
        assert_eq!(other.now(), 1_300);
        other.set(5);
        assert_eq!(clock.now(), 5);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }
}
