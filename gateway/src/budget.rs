//! The gateway-wide budget of message content held in memory while sessions receive it.
//!
//! Each session keeps the message it is receiving in memory until it is spooled, so without a
//! bound `max_sessions` times `max_message_size` octets could be asked for at once and the
//! process killed for want of memory, losing every message not yet answered. A transaction
//! therefore holds a [`Reservation`] from one shared [`ContentBudget`], grown in steps as its
//! content grows; when the budget is spent the message gets `452 4.3.1`, as Postfix answers when
//! its queue file system is short, and the client retries later.
//!
//! The reservation is given back when it is dropped, so whatever path ends a transaction
//! (spooled, refused, RSET, disconnect, a task cancelled at shutdown) cannot leak it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Octets a reservation grows by at a time: one read from the socket, so a growing message
/// touches the shared counter about once per read, not once per octet.
pub const RESERVATION_STEP: usize = 64 * 1024;

/// The shared budget: how many octets of content all sessions may hold, and how many they do.
///
/// Cloning gives another handle on the same budget.
#[derive(Debug, Clone)]
pub struct ContentBudget {
    inner: Arc<Counters>,
}

#[derive(Debug)]
struct Counters {
    limit: usize,
    in_use: AtomicUsize,
    refusals: AtomicU64,
}

/// A reservation could not grow: the budget is spent by the messages being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "message content budget spent: {wanted} octets wanted, {in_use} of {limit} octets in use \
     (raise smtp.max_content_in_memory if the machine has the memory)"
)]
pub struct BudgetExhausted {
    /// Octets the transaction asked to hold in all.
    pub wanted: usize,
    /// Octets held by all transactions when it asked.
    pub in_use: usize,
    /// The budget.
    pub limit: usize,
}

impl ContentBudget {
    /// A budget of `limit` octets, none in use.
    pub fn new(limit: usize) -> Self {
        ContentBudget {
            inner: Arc::new(Counters {
                limit,
                in_use: AtomicUsize::new(0),
                refusals: AtomicU64::new(0),
            }),
        }
    }

    /// An empty reservation on this budget, for one transaction.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: Arc::clone(&self.inner),
            held: 0,
        }
    }

    /// The budget in octets.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Octets reserved by the transactions now open.
    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// Reservations refused since the start; a transaction stops asking after its first
    /// refusal, so this counts refused messages.
    pub fn refusals(&self) -> u64 {
        self.inner.refusals.load(Ordering::Relaxed)
    }

    /// The budget's figures in Prometheus text format, for the metrics endpoint.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP moat_smtp_content_in_memory_bytes Octets of message content held by \
             sessions receiving it.\n\
             # TYPE moat_smtp_content_in_memory_bytes gauge\n\
             moat_smtp_content_in_memory_bytes {}\n\
             # HELP moat_smtp_content_in_memory_limit_bytes The budget, smtp.max_content_in_memory.\n\
             # TYPE moat_smtp_content_in_memory_limit_bytes gauge\n\
             moat_smtp_content_in_memory_limit_bytes {}\n\
             # HELP moat_smtp_insufficient_storage_total Messages refused with 452 4.3.1 because \
             the budget was spent.\n\
             # TYPE moat_smtp_insufficient_storage_total counter\n\
             moat_smtp_insufficient_storage_total {}\n",
            self.in_use(),
            self.limit(),
            self.refusals()
        )
    }
}

/// One transaction's share of the [`ContentBudget`]; given back in full when dropped.
pub struct Reservation {
    budget: Arc<Counters>,
    held: usize,
}

impl Reservation {
    /// Makes sure at least `needed` octets are held, growing by whole [`RESERVATION_STEP`]s
    /// where the budget allows, and by exactly what is missing where only that fits.
    ///
    /// # Errors
    /// [`BudgetExhausted`] when even the exact amount does not fit; what is held already stays
    /// held until [`Reservation::release`] or the drop.
    pub fn cover(&mut self, needed: usize) -> Result<(), BudgetExhausted> {
        if needed <= self.held {
            return Ok(());
        }
        let exact = needed - self.held;
        let stepped = needed
            .div_ceil(RESERVATION_STEP)
            .saturating_mul(RESERVATION_STEP)
            - self.held;
        let limit = self.budget.limit;

        // A compare-and-swap loop, not fetch_add then undo: a failed attempt must never make
        // another session's reservation fail by showing a total it did not really reach.
        let mut in_use = self.budget.in_use.load(Ordering::Relaxed);
        loop {
            let free = limit.saturating_sub(in_use);
            let grow = if stepped <= free {
                stepped
            } else if exact <= free {
                exact
            } else {
                self.budget.refusals.fetch_add(1, Ordering::Relaxed);
                return Err(BudgetExhausted {
                    wanted: needed,
                    in_use,
                    limit,
                });
            };
            match self.budget.in_use.compare_exchange_weak(
                in_use,
                in_use + grow,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.held += grow;
                    return Ok(());
                }
                Err(now) => in_use = now,
            }
        }
    }

    /// Octets this reservation holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Gives back everything held, at once rather than when the transaction ends: for a
    /// message whose content has just been dropped.
    pub fn release(&mut self) {
        self.budget.in_use.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("held", &self.held)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_grows_in_steps() {
        let budget = ContentBudget::new(10 * RESERVATION_STEP);
        let mut reservation = budget.reservation();

        reservation.cover(1).expect("fits");
        assert_eq!(reservation.held(), RESERVATION_STEP);
        reservation.cover(RESERVATION_STEP).expect("already held");
        assert_eq!(budget.in_use(), RESERVATION_STEP);
        reservation.cover(RESERVATION_STEP + 1).expect("fits");
        assert_eq!(budget.in_use(), 2 * RESERVATION_STEP);
    }

    #[test]
    fn dropping_a_reservation_gives_it_back() {
        let budget = ContentBudget::new(10 * RESERVATION_STEP);
        let mut reservation = budget.reservation();
        reservation.cover(3 * RESERVATION_STEP).expect("fits");
        assert_eq!(budget.in_use(), 3 * RESERVATION_STEP);

        drop(reservation);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn release_gives_it_back_before_the_drop() {
        let budget = ContentBudget::new(RESERVATION_STEP);
        let mut reservation = budget.reservation();
        reservation.cover(100).expect("fits");
        reservation.release();
        assert_eq!(budget.in_use(), 0);
        drop(reservation);
        assert_eq!(budget.in_use(), 0, "released twice");
    }

    #[test]
    fn a_full_budget_refuses_and_counts_the_refusal() {
        let budget = ContentBudget::new(100 * 1024);
        let mut first = budget.reservation();
        first.cover(80 * 1024).expect("fits");

        let mut second = budget.reservation();
        let refused = second.cover(30 * 1024).expect_err("does not fit");
        assert_eq!(
            refused,
            BudgetExhausted {
                wanted: 30 * 1024,
                in_use: first.held(),
                limit: 100 * 1024,
            }
        );
        assert_eq!(second.held(), 0);
        assert_eq!(budget.refusals(), 1);
    }

    #[test]
    fn the_last_octets_are_reserved_exactly_when_a_step_does_not_fit() {
        let budget = ContentBudget::new(100 * 1024);
        let mut first = budget.reservation();
        first.cover(60 * 1024).expect("fits");
        let mut second = budget.reservation();

        second
            .cover(100 * 1024 - first.held())
            .expect("fits exactly");
        assert_eq!(budget.in_use(), 100 * 1024);
        assert!(second.cover(second.held() + 1).is_err());
    }

    #[test]
    fn a_refused_reservation_keeps_what_it_held() {
        let budget = ContentBudget::new(2 * RESERVATION_STEP);
        let mut reservation = budget.reservation();
        reservation.cover(RESERVATION_STEP).expect("fits");
        assert!(reservation.cover(3 * RESERVATION_STEP).is_err());
        assert_eq!(budget.in_use(), RESERVATION_STEP);
        drop(reservation);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_sessions_never_overrun_the_budget() {
        const THREADS: usize = 8;
        let budget = ContentBudget::new(5 * RESERVATION_STEP);
        let granted = AtomicUsize::new(0);

        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        let mut reservation = budget.reservation();
                        if reservation.cover(2 * RESERVATION_STEP).is_ok() {
                            granted.fetch_add(1, Ordering::Relaxed);
                            assert!(budget.in_use() <= budget.limit());
                        }
                    }
                });
            }
        });

        assert_eq!(budget.in_use(), 0, "a reservation leaked");
        assert!(granted.load(Ordering::Relaxed) > 0);
        assert_eq!(
            granted.load(Ordering::Relaxed) as u64 + budget.refusals(),
            (THREADS * 1_000) as u64
        );
    }
}
