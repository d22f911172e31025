//! ip6tset: IPv6 /64 blocks that all share the dataset's one value, with /128 exclusions.
//!
//! Listings must be exactly four groups (a /64) and exclusions full addresses; anything else
//! is refused, as in rbldnsd.

use std::net::Ipv6Addr;

use super::addr::ip6_prefix;
use super::ip4tset::TSET_VALUE;
use super::line::{ends_address, skip_space};
use super::value::parse_value;
use super::{Dataset, Entry, Line};
use crate::answer::{Answers, Want};
use crate::index::{Key, KeySet};
use crate::query::Subject;

/// Reads one ip6tset line: `/64`, `!address`, or a `:A:TXT` default.
pub(crate) fn parse_line(data: &[u8]) -> Line<'_> {
    if data[0] == b':' && data.get(1) != Some(&b':') {
        return match parse_value(data) {
            Ok(spec) => Line::Default(spec),
            Err(warning) => Line::Invalid(warning),
        };
    }
    let (excluded, text) = match data.strip_prefix(b"!") {
        Some(rest) => (true, skip_space(rest)),
        None => (false, data),
    };
    let Some((addr, bits, _)) = ip6_prefix(text).filter(|(_, _, rest)| ends_address(rest)) else {
        return Line::Invalid("invalid address");
    };
    match (excluded, bits) {
        (false, 64) | (true, 128) => Line::Entry {
            entry: Entry::Ip6TSet(addr, bits),
            excluded,
            value: None,
        },
        (false, _) => Line::Invalid("invalid address for regular entry (should be 64 bits)"),
        (true, _) => Line::Invalid("invalid address for exclusion (should be 128 bits)"),
    }
}

/// Collects ip6tset blocks and exclusions.
#[derive(Default)]
pub(crate) struct Builder {
    blocks: Vec<u64>,
    excluded: Vec<u128>,
}

impl Builder {
    /// Adds a /64 listing or a /128 exclusion.
    pub(crate) fn add(&mut self, addr: u128, bits: u8) -> Result<(), &'static str> {
        if bits == 64 {
            self.blocks.push(u64::try_from(addr >> 64).unwrap_or(0));
        } else {
            self.excluded.push(addr);
        }
        Ok(())
    }

    /// Sorts both lists.
    pub(crate) fn finish(self) -> Ip6TSet {
        Ip6TSet {
            blocks: KeySet::build(self.blocks),
            excluded: KeySet::build(self.excluded),
        }
    }
}

/// A loaded ip6tset.
#[derive(Debug)]
pub(crate) struct Ip6TSet {
    blocks: KeySet<u64>,
    excluded: KeySet<u128>,
}

impl Ip6TSet {
    /// Answers for the address of `subject`, if its /64 is listed and it is not excluded.
    pub(crate) fn query(
        &self,
        subject: &Subject<'_>,
        want: Want,
        ds: &Dataset,
        out: &mut Answers,
    ) -> bool {
        let Some(addr) = subject.ip6 else {
            return false;
        };
        let block = u64::try_from(addr >> 64).unwrap_or(0);
        if !self.blocks.contains(block) || self.excluded.contains(addr) {
            return false;
        }
        let text = if want.txt {
            Ipv6Addr::from(addr).to_string()
        } else {
            String::new()
        };
        ds.answer_value(TSET_VALUE, text.as_bytes(), want, out);
        true
    }

    /// Whether any /64 inside `network/bits` is listed (exclusions not subtracted).
    pub(crate) fn lists_any_in(&self, network: u128, bits: u8) -> bool {
        let high = u64::try_from(network >> 64).unwrap_or(0);
        let (first, last) = if bits >= 64 {
            (high, high)
        } else {
            (high.network(bits), high.broadcast(bits))
        };
        self.blocks.any_in(first, last)
    }

    /// The number of blocks and exclusions.
    pub(crate) fn len(&self) -> usize {
        self.blocks.len() + self.excluded.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.blocks.heap_bytes() + self.excluded.heap_bytes()
    }
}
