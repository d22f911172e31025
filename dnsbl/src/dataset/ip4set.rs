//! ip4set: IPv4 addresses, prefixes and ranges, each with its own value.
//!
//! As in rbldnsd, a range is cut into blocks of /32, /24, /16 and /8 and each block is stored
//! at its level; a lookup tries /32, then /24, /16 and /8, and the first level that knows the
//! address decides. So `10.0.0.0/24` with `!10.0.0.5` lists every address but .5, and an
//! exclusion wins over a listing of the same block in either order (ids sort exclusions first).

use super::addr::{Ip4Range, ip4_mask, ip4_range};
use super::line::{ends_address, skip_space};
use super::special::Meta;
use super::value::{EXCLUDED, ValueId, has_value, ip4_text, parse_value};
use super::{Dataset, Entry, Line, ParseOptions};
use crate::answer::{Answers, Want};
use crate::index::SortedMap;
use crate::query::Subject;

/// Reads one ip4set line: `[!]range [value]` or a `:A:TXT` default.
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
    let Some((mut range, rest)) = ip4_range(text).filter(|(_, rest)| ends_address(rest)) else {
        return Line::Invalid("invalid address");
    };
    // A prefix length of 0 (`0/0`) lists everything; rbldnsd refuses it in ip4set.
    if range.bits == 0 {
        return Line::Invalid("invalid address");
    }
    if range.first & !ip4_mask(range.bits) != 0 {
        if !options.accept_in_cidr {
            return Line::Invalid("invalid range (non-zero host part)");
        }
        range.first &= ip4_mask(range.bits);
    }
    let value = match (excluded, has_value(rest)) {
        (false, true) => match parse_value(skip_space(rest)) {
            Ok(spec) => Some(spec),
            Err(warning) => return Line::Invalid(warning),
        },
        _ => None,
    };
    Line::Entry {
        entry: Entry::Ip4Range(range),
        excluded,
        value,
    }
}

/// Collects ip4set entries level by level.
#[derive(Default)]
pub(crate) struct Builder {
    levels: [Vec<(u32, ValueId)>; 4],
}

impl Builder {
    /// Adds a range, cut into blocks of the four levels.
    pub(crate) fn add(
        &mut self,
        range: Ip4Range,
        value: ValueId,
        meta: &Meta,
    ) -> Result<(), &'static str> {
        if meta
            .max_range4
            .is_some_and(|max| range.last - range.first >= max)
        {
            return Err("too large range ignored ($MAXRANGE4)");
        }
        let levels = &mut self.levels;
        expand(range.first, range.last, |level, start, count| {
            let step = 1u32 << (8 * level);
            let list = &mut levels[level];
            list.extend((0..count).map(|i| (start.wrapping_add(i.wrapping_mul(step)), value)));
        });
        Ok(())
    }

    /// Sorts the four levels.
    pub(crate) fn finish(self) -> Ip4Set {
        let [l32, l24, l16, l8] = self.levels;
        let (a, b) = rayon::join(
            || (SortedMap::build(l32), SortedMap::build(l24)),
            || (SortedMap::build(l16), SortedMap::build(l8)),
        );
        Ip4Set {
            levels: [a.0, a.1, b.0, b.1],
        }
    }
}

/// Cuts `first..=last` into blocks: `emit(level, start, count)` for `count` consecutive
/// blocks of level 0 (/32), 1 (/24), 2 (/16) or 3 (/8) from address `start`.
fn expand(first: u32, last: u32, mut emit: impl FnMut(usize, u32, u32)) {
    let (mut a, mut b) = (first, last);
    for level in 0..3 {
        let shift = 8 * level as u32;
        if a > b {
            // The edges used up the whole range.
            return;
        }
        if (a | 255) >= b {
            if b - a == 255 {
                emit(level + 1, a << shift, 1);
            } else {
                emit(level, a << shift, b - a + 1);
            }
            return;
        }
        if a & 255 != 0 {
            emit(level, a << shift, 256 - (a & 255));
            a = (a >> 8) + 1;
        } else {
            a >>= 8;
        }
        if b & 255 != 255 {
            emit(level, (b & !255) << shift, (b & 255) + 1);
            b = (b >> 8) - 1;
        } else {
            b >>= 8;
        }
    }
    if a <= b {
        emit(3, a << 24, b - a + 1);
    }
}

/// The masks of the four levels.
const MASKS: [u32; 4] = [0xffff_ffff, 0xffff_ff00, 0xffff_0000, 0xff00_0000];

/// A loaded ip4set.
#[derive(Debug)]
pub(crate) struct Ip4Set {
    levels: [SortedMap<u32>; 4],
}

impl Ip4Set {
    /// Answers for the address of `subject`, if it is listed.
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
        let Some(ids) = self.lookup(addr) else {
            return false;
        };
        let mut buf = [0u8; 15];
        let text = if want.txt {
            ip4_text(addr, &mut buf)
        } else {
            &[][..]
        };
        for &id in ids {
            ds.answer_value(id, text, want, out);
        }
        true
    }

    /// The value ids that list `addr`, or `None` if it is not listed.
    pub(crate) fn lookup(&self, addr: u32) -> Option<&[ValueId]> {
        let ids = self
            .levels
            .iter()
            .zip(MASKS)
            .map(|(level, mask)| level.find(addr & mask))
            .find(|ids| !ids.is_empty())?;
        (ids[0] != EXCLUDED).then_some(ids)
    }

    /// Whether any address of `network/bits` (bits 8, 16 or 24) is listed.
    pub(crate) fn lists_any_in(&self, network: u32, bits: u8) -> bool {
        let last = network | !ip4_mask(bits);
        let covering = self
            .levels
            .iter()
            .zip(MASKS)
            .filter(|(_, mask)| mask.count_ones() <= u32::from(bits))
            .map(|(level, mask)| level.find(network & mask))
            .find(|ids| !ids.is_empty());
        if covering.is_some_and(|ids| ids[0] != EXCLUDED) {
            return true;
        }
        self.levels
            .iter()
            .zip(MASKS)
            .filter(|(_, mask)| mask.count_ones() > u32::from(bits))
            .any(|(level, _)| level.lists_any_in(network, last))
    }

    /// The number of stored blocks.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(SortedMap::len).sum()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.levels.iter().map(SortedMap::heap_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn blocks(first: &str, last: &str) -> Vec<(usize, String, u32)> {
        let a: Ipv4Addr = first.parse().expect("valid");
        let b: Ipv4Addr = last.parse().expect("valid");
        let mut out = Vec::new();
        expand(u32::from(a), u32::from(b), |level, start, count| {
            out.push((level, Ipv4Addr::from(start).to_string(), count))
        });
        out
    }

    #[test]
    fn ranges_are_cut_into_the_fewest_blocks() {
        assert_eq!(
            blocks("10.0.0.0", "10.0.0.255"),
            vec![(1, "10.0.0.0".into(), 1)]
        );
        assert_eq!(
            blocks("12.0.0.5", "12.0.0.7"),
            vec![(0, "12.0.0.5".into(), 3)]
        );
        assert_eq!(
            blocks("10.16.0.0", "10.31.255.255"),
            vec![(2, "10.16.0.0".into(), 16)]
        );
        assert_eq!(
            blocks("10.0.0.250", "10.0.1.3"),
            vec![(0, "10.0.0.250".into(), 6), (0, "10.0.1.0".into(), 4)]
        );
        assert_eq!(
            blocks("11.0.0.0", "11.255.255.255"),
            vec![(3, "11.0.0.0".into(), 1)]
        );
    }

    fn set(lines: &[(&str, ValueId)]) -> Ip4Set {
        let mut builder = Builder::default();
        let meta = Meta::new(60);
        for (text, value) in lines {
            let (range, _) = ip4_range(text.as_bytes()).expect("valid");
            builder.add(range, *value, &meta).expect("accepted");
        }
        builder.finish()
    }

    #[test]
    fn the_most_specific_level_decides_and_exclusions_win_ties() {
        let set = set(&[
            ("10.0.0.0/24", 1),
            ("10.0.0.5", EXCLUDED),
            ("10.2.0.7", 1),
            ("10.2.0.7", EXCLUDED),
        ]);
        assert!(set.lookup(0x0a00_0006).is_some());
        assert!(set.lookup(0x0a00_0005).is_none());
        assert!(set.lookup(0x0a02_0007).is_none());
        assert!(set.lists_any_in(0x0a00_0000, 24));
        assert!(!set.lists_any_in(0x0a01_0000, 16));
    }
}
