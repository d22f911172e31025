//! ip6trie: IPv6 CIDR blocks with a value each; the longest matching prefix decides.
//!
//! Groups without `::` are a prefix of 16 bits each (`2001:db8:1:2` is a /64); `::` makes a
//! full address. Blocks up to /64 are stored as 64-bit keys, half the memory of full ones,
//! since almost all IPv6 listings are /64 or shorter.

use std::net::Ipv6Addr;

use super::addr::{ip6_cidr, ip6_mask};
use super::line::{ends_address, skip_space};
use super::value::{EXCLUDED, ValueId, has_value, parse_value};
use super::{Dataset, Entry, Line, ParseOptions};
use crate::answer::{Answers, Want};
use crate::index::PrefixTable;
use crate::query::Subject;

/// Reads one ip6trie line: `[!]cidr [value]` or a `:A:TXT` default (a line starting `::` is
/// an address).
pub(crate) fn parse_line(data: &[u8], options: ParseOptions) -> Line<'_> {
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
    let Some((mut addr, bits, rest)) = ip6_cidr(text).filter(|(_, _, rest)| ends_address(rest))
    else {
        return Line::Invalid("invalid address");
    };
    if addr & !ip6_mask(bits) != 0 {
        if !options.accept_in_cidr {
            return Line::Invalid("invalid range (non-zero host part)");
        }
        addr &= ip6_mask(bits);
    }
    let value = match (excluded, has_value(rest)) {
        (false, true) => match parse_value(skip_space(rest)) {
            Ok(spec) => Some(spec),
            Err(warning) => return Line::Invalid(warning),
        },
        _ => None,
    };
    Line::Entry {
        entry: Entry::Cidr6(addr, bits),
        excluded,
        value,
    }
}

/// Collects ip6trie blocks.
#[derive(Default)]
pub(crate) struct Builder {
    short: Vec<(u64, u8, u64, ValueId)>,
    long: Vec<(u128, u8, u64, ValueId)>,
}

impl Builder {
    /// Adds a block; `order` identifies it for the duplicate warning.
    pub(crate) fn add(
        &mut self,
        addr: u128,
        bits: u8,
        value: ValueId,
        order: u64,
    ) -> Result<(), &'static str> {
        if bits <= 64 {
            let high = u64::try_from(addr >> 64).unwrap_or(0);
            self.short.push((high, bits, order, value));
        } else {
            self.long.push((addr, bits, order, value));
        }
        Ok(())
    }

    /// Sorts the blocks by length and address.
    pub(crate) fn finish(self, duplicate: &mut dyn FnMut(u64)) -> Ip6Trie {
        let long = PrefixTable::build(self.long, &mut *duplicate);
        let short = PrefixTable::build(self.short, duplicate);
        Ip6Trie { short, long }
    }
}

/// A loaded ip6trie: blocks up to /64 and longer ones apart.
#[derive(Debug)]
pub(crate) struct Ip6Trie {
    short: PrefixTable<u64>,
    long: PrefixTable<u128>,
}

impl Ip6Trie {
    /// The value of the longest block containing `addr`.
    fn longest_match(&self, addr: u128) -> Option<ValueId> {
        self.long.longest_match(addr).or_else(|| {
            self.short
                .longest_match(u64::try_from(addr >> 64).unwrap_or(0))
        })
    }

    /// Answers for the address of `subject`, if its longest match is a listing.
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
        let Some(id) = self.longest_match(addr).filter(|&id| id != EXCLUDED) else {
            return false;
        };
        let text = if want.txt {
            Ipv6Addr::from(addr).to_string()
        } else {
            String::new()
        };
        ds.answer_value(id, text.as_bytes(), want, out);
        true
    }

    /// Whether any address of `network/bits` is listed.
    pub(crate) fn lists_any_in(&self, network: u128, bits: u8) -> bool {
        let high = u64::try_from(network >> 64).unwrap_or(0);
        if bits <= 64 && self.short.lists_any_in(high, bits) {
            return true;
        }
        if bits > 64
            && self
                .short
                .longest_match(high)
                .is_some_and(|id| id != EXCLUDED)
        {
            return true;
        }
        self.long.lists_any_in(network, bits)
    }

    /// The number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.short.heap_bytes() + self.long.heap_bytes()
    }
}
