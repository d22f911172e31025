//! Every way a query can end, and the one table that says what each looks like on the wire:
//! its response code and what goes in the authority section. Logs, counters and tests use
//! these names.

/// DNS response codes used (RFC 1035 section 4.1.1, RFC 6891 for BADVERS).
pub(crate) mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The query could not be read.
    pub const FORMERR: u8 = 1;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// The kind of query is not supported.
    pub const NOTIMP: u8 = 4;
    /// The server will not answer this query.
    pub const REFUSED: u8 = 5;
    /// Unsupported EDNS version (extended code 16: 1 in the OPT record's upper bits, 0 here).
    pub const BADVERS_LOW: u8 = 0;
}

/// What goes in the authority section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authority {
    /// Nothing.
    Empty,
    /// The zone's SOA, with the SOA minimum as TTL (RFC 2308 negative caching).
    Soa,
    /// The zone's NS records, if they fit.
    Ns,
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The name is listed (or holds records of the type asked): answers, NS in authority.
    Listed,
    /// The name exists but has nothing of the type asked: NOERROR, no answers.
    NoData,
    /// The name has no entry but names below it do (RFC 8020): NOERROR, no answers.
    EmptyNonTerminal,
    /// The name does not exist: NXDOMAIN.
    NxDomain,
    /// The name is in no zone served here: REFUSED.
    NotOurZone,
    /// A class other than IN or ANY: REFUSED.
    WrongClass,
    /// SOA or NS asked at a zone apex that has none (rbldnsd's answer): REFUSED.
    ApexWithoutData,
    /// An opcode other than QUERY, or a meta type such as AXFR: NOTIMP.
    NotImplemented,
    /// A query that cannot be read past its header: FORMERR.
    FormatError,
    /// An EDNS version above 0: BADVERS (RFC 6891 section 6.1.3).
    BadVersion,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 10] = [
        Outcome::Listed,
        Outcome::NoData,
        Outcome::EmptyNonTerminal,
        Outcome::NxDomain,
        Outcome::NotOurZone,
        Outcome::WrongClass,
        Outcome::ApexWithoutData,
        Outcome::NotImplemented,
        Outcome::FormatError,
        Outcome::BadVersion,
    ];

    /// The outcome's place in [`Outcome::ALL`], for arrays of counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The response code (its lower four bits for BADVERS).
    pub(crate) fn rcode(self) -> u8 {
        match self {
            Outcome::Listed | Outcome::NoData | Outcome::EmptyNonTerminal => rcode::NOERROR,
            Outcome::NxDomain => rcode::NXDOMAIN,
            Outcome::NotOurZone | Outcome::WrongClass | Outcome::ApexWithoutData => rcode::REFUSED,
            Outcome::NotImplemented => rcode::NOTIMP,
            Outcome::FormatError => rcode::FORMERR,
            Outcome::BadVersion => rcode::BADVERS_LOW,
        }
    }

    /// What the authority section holds.
    pub(crate) fn authority(self) -> Authority {
        match self {
            Outcome::Listed => Authority::Ns,
            Outcome::NoData | Outcome::EmptyNonTerminal | Outcome::NxDomain => Authority::Soa,
            _ => Authority::Empty,
        }
    }

    /// Whether the answer is authoritative (AA): only answers from a zone's data.
    pub(crate) fn authoritative(self) -> bool {
        matches!(
            self,
            Outcome::Listed | Outcome::NoData | Outcome::EmptyNonTerminal | Outcome::NxDomain
        )
    }

    /// The name used in logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Listed => "listed",
            Outcome::NoData => "nodata",
            Outcome::EmptyNonTerminal => "empty_non_terminal",
            Outcome::NxDomain => "nxdomain",
            Outcome::NotOurZone => "not_our_zone",
            Outcome::WrongClass => "wrong_class",
            Outcome::ApexWithoutData => "apex_without_data",
            Outcome::NotImplemented => "not_implemented",
            Outcome::FormatError => "format_error",
            Outcome::BadVersion => "bad_version",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_is_listed_at_its_index() {
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), index, "{outcome:?}");
        }
    }
}
