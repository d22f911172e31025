//! ip4tset: single IPv4 addresses that all share the dataset's one value.
//!
//! rbldnsd's "trivial" set: only full addresses, no exclusions, and per-entry values are
//! ignored; the first `:A:TXT` line of the whole dataset is the value of every entry.

use super::addr::{ip4_mask, ip4_prefix};
use super::line::ends_address;
use super::value::{ValueId, ip4_text, parse_value};
use super::{Dataset, Entry, Line};
use crate::answer::{Answers, Want};
use crate::index::KeySet;
use crate::query::Subject;

/// The id of the dataset's one value: the reader interns the first default line here.
pub(crate) const TSET_VALUE: ValueId = 1;

/// Reads one ip4tset line: an address, or a `:A:TXT` default.
pub(crate) fn parse_line(data: &[u8]) -> Line<'_> {
    if data[0] == b':' {
        return match parse_value(data) {
            Ok(spec) => Line::Default(spec),
            Err(warning) => Line::Invalid(warning),
        };
    }
    match ip4_prefix(data) {
        Some((addr, 32, rest)) if ends_address(rest) => Line::Entry {
            entry: Entry::Ip4(addr),
            excluded: false,
            value: None,
        },
        _ => Line::Invalid("invalid address"),
    }
}

/// Collects ip4tset addresses.
#[derive(Default)]
pub(crate) struct Builder {
    addrs: Vec<u32>,
}

impl Builder {
    /// Adds an address.
    pub(crate) fn add(&mut self, addr: u32) -> Result<(), &'static str> {
        self.addrs.push(addr);
        Ok(())
    }

    /// Sorts the addresses.
    pub(crate) fn finish(self) -> Ip4TSet {
        Ip4TSet {
            addrs: KeySet::build(self.addrs),
        }
    }
}

/// A loaded ip4tset.
#[derive(Debug)]
pub(crate) struct Ip4TSet {
    addrs: KeySet<u32>,
}

impl Ip4TSet {
    /// Answers for the address of `subject`, if it is listed.
    pub(crate) fn query(
        &self,
        subject: &Subject<'_>,
        want: Want,
        ds: &Dataset,
        out: &mut Answers,
    ) -> bool {
        let Some(addr) = subject.ip4.filter(|&a| self.addrs.contains(a)) else {
            return false;
        };
        let mut buf = [0u8; 15];
        let text = if want.txt {
            ip4_text(addr, &mut buf)
        } else {
            &[][..]
        };
        ds.answer_value(TSET_VALUE, text, want, out);
        true
    }

    /// Whether any address of `network/bits` is listed.
    pub(crate) fn lists_any_in(&self, network: u32, bits: u8) -> bool {
        self.addrs.any_in(network, network | !ip4_mask(bits))
    }

    /// The number of addresses.
    pub(crate) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.addrs.heap_bytes()
    }
}
