//! A query name split into labels, and what its labels say below a zone: a reversed IPv4
//! address, an IPv6 nibble name, part of either, or a domain.

use crate::name::{MAX_LABEL, MAX_NAME};

/// The most labels a name can have (255 bytes of one-byte labels).
const MAX_LABELS: usize = 128;

/// A query name, lower-cased, with the offset of each label. Lives on the stack: the hot path
/// does not allocate.
#[derive(Clone)]
pub(crate) struct QueryName {
    wire: [u8; MAX_NAME + 1],
    len: usize,
    starts: [u8; MAX_LABELS],
    count: usize,
}

impl QueryName {
    /// Reads an uncompressed wire name from the start of `data`; returns the name and the bytes
    /// it took. `None` if it is malformed, compressed, or over 255 bytes.
    pub(crate) fn from_wire(data: &[u8]) -> Option<(QueryName, usize)> {
        let mut name = QueryName {
            wire: [0; MAX_NAME + 1],
            len: 0,
            starts: [0; MAX_LABELS],
            count: 0,
        };
        let mut at = 0;
        loop {
            let len = usize::from(*data.get(at)?);
            if len == 0 {
                name.wire[name.len] = 0;
                name.len += 1;
                return Some((name, at + 1));
            }
            // Compression pointers (top bits set) and label lengths over 63 are refused: a
            // question has nothing earlier to point to.
            if len > MAX_LABEL || name.len + len + 2 > MAX_NAME || name.count == MAX_LABELS {
                return None;
            }
            let label = data.get(at + 1..at + 1 + len)?;
            name.starts[name.count] = u8::try_from(name.len).ok()?;
            name.count += 1;
            name.wire[name.len] = u8::try_from(len).ok()?;
            for (dst, src) in name.wire[name.len + 1..].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            name.len += len + 1;
            at += len + 1;
        }
    }

    /// Builds a query name from a wire name (an in-process lookup).
    pub(crate) fn from_name(wire: &[u8]) -> Option<QueryName> {
        Self::from_wire(wire).map(|(name, _)| name)
    }

    /// The number of labels, the root not counted.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Label `i`, leftmost first.
    pub(crate) fn label(&self, i: usize) -> &[u8] {
        let start = usize::from(self.starts[i]);
        let len = usize::from(self.wire[start]);
        &self.wire[start + 1..start + 1 + len]
    }

    /// The wire form of the name from label `i` on (label `count` is the root).
    pub(crate) fn suffix(&self, i: usize) -> &[u8] {
        let start = if i >= self.count {
            self.len - 1
        } else {
            usize::from(self.starts[i])
        };
        &self.wire[start..self.len]
    }

    /// Offset of label `i` in the wire form (for compression pointers to the zone apex).
    pub(crate) fn offset(&self, i: usize) -> usize {
        if i >= self.count {
            self.len - 1
        } else {
            usize::from(self.starts[i])
        }
    }
}

/// A name below a zone (or a combined dataset's subzone), with what its labels mean.
pub(crate) struct Subject<'a> {
    /// The whole query name.
    pub name: &'a QueryName,
    /// How many of its leftmost labels are below the (sub)zone.
    pub depth: usize,
    /// A reversed IPv4 address (`4.3.2.1`), or one taken from an IPv4-mapped or 6to4 name.
    pub ip4: Option<u32>,
    /// An IPv6 nibble name (32 labels).
    pub ip6: Option<u128>,
    /// The start of a reversed IPv4 address (1 to 3 labels): network and prefix length.
    pub partial4: Option<(u32, u8)>,
    /// The start of an IPv6 nibble name (1 to 31 labels): network and prefix length.
    pub partial6: Option<(u128, u8)>,
}

impl<'a> Subject<'a> {
    /// Reads the `depth` leftmost labels of `name`. `ip4_zone` says whether IPv4 datasets
    /// serve here, which makes IPv4-mapped and 6to4 IPv6 names look up their IPv4 address.
    pub(crate) fn new(name: &'a QueryName, depth: usize, ip4_zone: bool) -> Subject<'a> {
        let mut subject = Subject {
            name,
            depth,
            ip4: None,
            ip6: None,
            partial4: None,
            partial6: None,
        };
        match depth {
            1..=3 => subject.partial4 = reversed_ip4(name, depth),
            4 => subject.ip4 = reversed_ip4(name, 4).map(|(addr, _)| addr),
            _ => {}
        }
        if (1..32).contains(&depth) {
            subject.partial6 = nibbles(name, depth);
        }
        if depth == 32 {
            subject.ip6 = nibbles(name, 32).map(|(addr, _)| addr);
        }
        if let (true, Some(ip6)) = (ip4_zone, subject.ip6) {
            if ip6 >> 32 == 0xffff {
                // ::ffff:a.b.c.d is only ever the IPv4 address.
                subject.ip4 = u32::try_from(ip6 & 0xffff_ffff).ok();
                subject.ip6 = None;
            } else if ip6 >> 112 == 0x2002 {
                // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 carries a.b.c.d.
                subject.ip4 = u32::try_from((ip6 >> 80) & 0xffff_ffff).ok();
            }
        }
        subject
    }

    /// Label `i` below the zone, leftmost first.
    pub(crate) fn label(&self, i: usize) -> &'a [u8] {
        self.name.label(i)
    }

    /// The same name seen from a subzone `levels` labels deeper.
    pub(crate) fn below(&self, levels: usize, ip4_zone: bool) -> Subject<'a> {
        Subject::new(self.name, self.depth - levels, ip4_zone)
    }

    /// The labels below the zone as a dnset key: reversed, each followed by a zero byte.
    pub(crate) fn reversed_key(&self, out: &mut Vec<u8>) {
        out.clear();
        for i in (0..self.depth).rev() {
            out.extend_from_slice(self.label(i));
            out.push(0);
        }
    }
}

/// Reads `count` decimal labels as the first octets of an IPv4 address, most significant in
/// the rightmost label.
fn reversed_ip4(name: &QueryName, count: usize) -> Option<(u32, u8)> {
    let mut addr = 0u32;
    for i in 0..count {
        let label = name.label(count - 1 - i);
        if label.is_empty() || label.len() > 3 || !label.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let octet = label.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        if octet > 255 {
            return None;
        }
        addr |= octet << (24 - 8 * i);
    }
    Some((addr, u8::try_from(8 * count).ok()?))
}

/// Reads `count` single-nibble labels as the first nibbles of an IPv6 address.
fn nibbles(name: &QueryName, count: usize) -> Option<(u128, u8)> {
    let mut addr = 0u128;
    for i in 0..count {
        let &[digit] = name.label(count - 1 - i) else {
            return None;
        };
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        addr |= u128::from(value) << (124 - 4 * i);
    }
    Some((addr, u8::try_from(4 * count).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Name;

    fn query(text: &str) -> QueryName {
        let name = Name::parse(text.as_bytes()).expect("valid name");
        QueryName::from_name(name.wire()).expect("valid wire")
    }

    #[test]
    fn reversed_octets_give_the_address() {
        let name = query("4.3.2.1.BL.test");
        assert_eq!(name.count(), 6);
        assert_eq!(name.label(4), b"bl");
        let subject = Subject::new(&name, 4, true);
        assert_eq!(subject.ip4, Some(0x0102_0304));
        let partial = Subject::new(&name, 2, true);
        assert_eq!(partial.partial4, Some((0x0304_0000, 16)));
    }

    #[test]
    fn nibble_names_and_mapped_addresses() {
        let addr: std::net::Ipv6Addr = "::ffff:192.0.2.1".parse().expect("valid");
        let nibbles: Vec<String> = format!("{:032x}", u128::from(addr))
            .chars()
            .rev()
            .map(|c| c.to_string())
            .collect();
        let name = query(&format!("{}.bl.test", nibbles.join(".")));
        let v4 = Subject::new(&name, 32, true);
        assert_eq!((v4.ip4, v4.ip6), (Some(0xc000_0201), None));
        let v6 = Subject::new(&name, 32, false);
        assert_eq!((v6.ip4, v6.ip6), (None, Some(u128::from(addr))));
    }

    #[test]
    fn compressed_and_oversized_names_are_refused() {
        assert!(QueryName::from_wire(&[0xc0, 12]).is_none());
        assert!(QueryName::from_wire(&[3, b'a', b'b']).is_none());
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.push(0);
        assert!(QueryName::from_wire(&long).is_none());
    }
}
