//! ip4trie: IPv4 CIDR blocks with a value each; the longest matching prefix decides.
//!
//! Dash ranges are refused, a prefix such as `30.1.2` means a /24, and when a block is listed
//! twice the first line wins (rbldnsd warns about the second).

use super::addr::{ip4_cidr, ip4_mask};
use super::line::{ends_address, skip_space};
use super::special::Meta;
use super::value::{EXCLUDED, ValueId, has_value, ip4_text, parse_value};
use super::{Dataset, Entry, Line, ParseOptions};
use crate::answer::{Answers, Want};
use crate::index::PrefixTable;
use crate::query::Subject;

/// Reads one ip4trie line: `[!]cidr [value]` or a `:A:TXT` default.
pub(crate) fn parse_line(data: &[u8], options: ParseOptions) -> Line<'_> {
    if data[0] == b':' {
        return match parse_value(data) {
            Ok(spec) => Line::Default(spec),
            Err(warning) => Line::Invalid(warning),
        };
    }
    let (excluded, text) = match data.strip_prefix(b"!") {
        Some(rest) => (true, skip_space(rest)),
        None => (false, data),
    };
    let Some((mut addr, bits, rest)) = ip4_cidr(text).filter(|(_, _, rest)| ends_address(rest))
    else {
        return Line::Invalid("invalid address");
    };
    if addr & !ip4_mask(bits) != 0 {
        if !options.accept_in_cidr {
            return Line::Invalid("invalid range (non-zero host part)");
        }
        addr &= ip4_mask(bits);
    }
    let value = match (excluded, has_value(rest)) {
        (false, true) => match parse_value(skip_space(rest)) {
            Ok(spec) => Some(spec),
            Err(warning) => return Line::Invalid(warning),
        },
        _ => None,
    };
    Line::Entry {
        entry: Entry::Cidr4(addr, bits),
        excluded,
        value,
    }
}

/// Collects ip4trie blocks.
#[derive(Default)]
pub(crate) struct Builder {
    entries: Vec<(u32, u8, u64, ValueId)>,
}

impl Builder {
    /// Adds a block; `order` identifies it for the duplicate warning.
    pub(crate) fn add(
        &mut self,
        addr: u32,
        bits: u8,
        value: ValueId,
        order: u64,
        meta: &Meta,
    ) -> Result<(), &'static str> {
        if meta.max_range4.is_some_and(|max| max <= !ip4_mask(bits)) {
            return Err("too large range ignored ($MAXRANGE4)");
        }
        self.entries.push((addr, bits, order, value));
        Ok(())
    }

    /// Sorts the blocks by length and address.
    pub(crate) fn finish(self, duplicate: &mut dyn FnMut(u64)) -> Ip4Trie {
        Ip4Trie {
            table: PrefixTable::build(self.entries, duplicate),
        }
    }
}

/// A loaded ip4trie.
#[derive(Debug)]
pub(crate) struct Ip4Trie {
    table: PrefixTable<u32>,
}

impl Ip4Trie {
    /// Answers for the address of `subject`, if its longest match is a listing.
    pub(crate) fn query(
        &self,
        subject: &Subject<'_>,
        want: Want,
        ds: &Dataset,
        out: &mut Answers,
    ) -> bool {
        let Some(addr) = subject.ip4 else {
            return false;
        };
        let Some(id) = self.table.longest_match(addr).filter(|&id| id != EXCLUDED) else {
            return false;
        };
        let mut buf = [0u8; 15];
        let text = if want.txt {
            ip4_text(addr, &mut buf)
        } else {
            &[][..]
        };
        ds.answer_value(id, text, want, out);
        true
    }

    /// Whether any address of `network/bits` is listed.
    pub(crate) fn lists_any_in(&self, network: u32, bits: u8) -> bool {
        self.table.lists_any_in(network, bits)
    }

    /// The number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }
}
