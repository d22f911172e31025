//! What a publisher refuses, and the one table that gives each refusal its code on the wire,
//! its name in logs and what it means.

/// Why a publisher did not answer a request with data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The client's address is not in `allow`.
    NotAllowed,
    /// Too many subscribers are pulling at once; try at the next interval.
    Busy,
    /// No published dataset has that name.
    UnknownDataset,
    /// The request could not be read, or its signature is not one this publisher computes
    /// deltas against.
    BadRequest,
    /// The publisher cannot read its own copy (it is missing, or changed while read).
    Unreadable,
    /// The dataset is larger than the protocol carries.
    TooLarge,
    /// The subscriber did not prove it holds the publisher's key, or one of them has a key
    /// and the other none.
    Unauthenticated,
}

/// Each refusal: code on the wire, name in logs, meaning.
#[rustfmt::skip]
const TABLE: [(Refusal, u8, &str, &str); 7] = [
    (Refusal::NotAllowed,     1, "not_allowed",     "client not allowed to pull"),
    (Refusal::Busy,           2, "busy",            "too many subscribers at once"),
    (Refusal::UnknownDataset, 3, "unknown_dataset", "no dataset published under that name"),
    (Refusal::BadRequest,     4, "bad_request",     "request or signature not understood"),
    (Refusal::Unreadable,     5, "unreadable",      "publisher cannot read its copy"),
    (Refusal::TooLarge,       6, "too_large",       "dataset larger than the protocol carries"),
    (Refusal::Unauthenticated, 7, "unauthenticated", "no proof of the shared key: the keys must match"),
];

impl Refusal {
    fn row(self) -> (Refusal, u8, &'static str, &'static str) {
        // Every refusal has its row (a test checks); the fallback is never taken.
        TABLE
            .into_iter()
            .find(|row| row.0 == self)
            .unwrap_or(TABLE[3])
    }

    /// The code on the wire.
    pub(crate) fn code(self) -> u8 {
        self.row().1
    }

    /// The refusal of a code, or `None` for a code this version does not know.
    pub(crate) fn from_code(code: u8) -> Option<Refusal> {
        TABLE.into_iter().find(|row| row.1 == code).map(|row| row.0)
    }

    /// The name in logs.
    pub fn name(self) -> &'static str {
        self.row().2
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (_, _, name, meaning) = self.row();
        write!(f, "{name} ({meaning})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_round_trips_through_its_code() {
        for (refusal, code, _, _) in TABLE {
            assert_eq!(refusal.code(), code);
            assert_eq!(Refusal::from_code(code), Some(refusal));
        }
        assert_eq!(Refusal::from_code(0), None);
        assert_eq!(Refusal::from_code(200), None);
    }
}
