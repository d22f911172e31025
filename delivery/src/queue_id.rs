//! Queue ids: short, unique names for spooled messages that sort by arrival time.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes ids made in the same microsecond by this process.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The name of one message in the queue, given in the 250 reply and in every log line.
///
/// Sixteen upper-case hex digits: 52 bits of microseconds since the epoch, then 12 bits of a
/// per-process sequence. Ids sort by arrival, are safe as file names, and two messages accepted
/// in the same microsecond still differ; the spool also creates files exclusively, so a clash
/// after a clock step back is refused rather than overwriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(u64);

impl QueueId {
    /// A new id for a message arriving now.
    pub fn generate() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros() as u64)
            .unwrap_or(0);
        let sequence = u64::from(SEQUENCE.fetch_add(1, Ordering::Relaxed) & 0xFFF);
        QueueId((micros << 12) | sequence)
    }

    /// Parses an id from its sixteen hex digits, as found in a queue file name.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(QueueId)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let first = QueueId::generate();
        let second = QueueId::generate();
        assert_ne!(first, second);
        assert_eq!(QueueId::parse(&first.to_string()), Some(first));
        assert_eq!(QueueId::parse("../etc/passwd000"), None);
    }
}
