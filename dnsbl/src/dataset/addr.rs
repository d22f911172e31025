//! rbldnsd's address syntax: IPv4 prefixes, CIDR and dash ranges, IPv6 prefixes and CIDRs.
//!
//! rbldnsd accepts forms that `std::net` does not (`10.16-31`, `127/8`, `2001:db8:1:2` for a
//! /64), and rejects some that look valid (`10` alone, a host part under a mask). These parsers
//! follow its rules exactly, since operators reuse rbldnsd files unchanged. Each returns the
//! unparsed rest of the line so the caller can check what follows the address.

/// The network mask of `bits` leading ones; `bits` is at most 32.
pub(crate) fn ip4_mask(bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    }
}

/// The network mask of `bits` leading ones; `bits` is at most 128.
pub(crate) fn ip6_mask(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    }
}

/// Parses one to four dotted decimal octets (`10`, `10.1`, `10.1.2`, `10.1.2.3`).
///
/// Returns the address with missing octets zero, the number of bits given (8, 16, 24 or 32)
/// and the rest of the input.
pub(crate) fn ip4_prefix(s: &[u8]) -> Option<(u32, u8, &[u8])> {
    let mut addr = 0u32;
    let mut rest = s;
    for octet in 0..4u8 {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return None;
        }
        let value = rest[..digits]
            .iter()
            .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        if value > 255 {
            return None;
        }
        addr |= value << (24 - 8 * u32::from(octet));
        rest = &rest[digits..];
        let bits = 8 * (octet + 1);
        match rest.split_first() {
            Some((b'.', tail)) if octet < 3 => rest = tail,
            _ => return Some((addr, bits, rest)),
        }
    }
    None
}

/// Parses a mask length after `/`, at most `max`.
fn mask_bits(s: &[u8], max: u8) -> Option<(u8, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let bits = s[..digits]
        .iter()
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    let bits = u8::try_from(bits).ok().filter(|&b| b <= max)?;
    Some((bits, &s[digits..]))
}

/// An IPv4 range as rbldnsd's ip4set reads it: first and last address, and the prefix length
/// (32 for a dash range, which has no single prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ip4Range {
    /// The first address, possibly with host bits set (the caller checks them).
    pub first: u32,
    /// The last address.
    pub last: u32,
    /// The prefix length; 32 for a dash range.
    pub bits: u8,
}

/// Parses `a.b.c.d`, a prefix (`10.1.2`), CIDR (`10.0.0.0/8`, `127/8`) or a dash range
/// (`10.0.0.1-10.0.0.9`, `10.16-31`), as rbldnsd's `ip4range`.
pub(crate) fn ip4_range(s: &[u8]) -> Option<(Ip4Range, &[u8])> {
    let (first, bits, rest) = ip4_prefix(s)?;
    if let Some(tail) = rest.strip_prefix(b"-") {
        let (mut last, mut last_bits, rest) = ip4_prefix(tail)?;
        if last_bits == 8 {
            // `127.0.0.1-2` completes the last boundary from the first: only its last given
            // octet changes.
            last = (last >> (bits - 8)) | (first & ip4_mask(bits - 8));
            last_bits = bits;
        } else if last_bits != bits {
            return None;
        }
        last |= !ip4_mask(last_bits);
        if first > last {
            return None;
        }
        return Some((
            Ip4Range {
                first,
                last,
                bits: 32,
            },
            rest,
        ));
    }
    let (bits, rest) = match rest.strip_prefix(b"/") {
        Some(tail) => mask_bits(tail, 32)?,
        // A bare number is refused: `10` is too easily a typo for `10/8` or `10.0.0.0`.
        None if bits == 8 => return None,
        None => (bits, rest),
    };
    let last = first | !ip4_mask(bits);
    Some((Ip4Range { first, last, bits }, rest))
}

/// Parses a CIDR block as rbldnsd's ip4trie does: `10.1.2` is a /24, `10/8` a /8, `10` alone
/// is refused, and dash ranges are not accepted.
pub(crate) fn ip4_cidr(s: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (addr, bits, rest) = ip4_prefix(s)?;
    match rest.strip_prefix(b"/") {
        Some(tail) => mask_bits(tail, 32).map(|(bits, rest)| (addr, bits, rest)),
        None if bits == 8 => None,
        None => Some((addr, bits, rest)),
    }
}

/// Parses an address in the loose form of inet_aton used for A values: `127.0.0.2`, and
/// `127.1` meaning 127.0.0.1. Returns the address and how many octets were written.
pub(crate) fn ip4_loose(s: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (addr, bits, rest) = ip4_prefix(s)?;
    let addr = match bits {
        8 => addr >> 24,
        16 => (addr & 0xff00_0000) | ((addr >> 16) & 0xff),
        24 => (addr & 0xffff_0000) | ((addr >> 8) & 0xff),
        _ => addr,
    };
    Some((addr, bits, rest))
}

fn hex_value(b: u8) -> Option<u16> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u16::try_from(d).ok())
}

/// Parses one group of up to four hex digits.
fn ip6_group(s: &[u8]) -> Option<(u16, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 4 {
        return None;
    }
    let value = s[..digits]
        .iter()
        .fold(0u16, |n, &b| (n << 4) | hex_value(b).unwrap_or(0));
    Some((value, &s[digits..]))
}

/// Parses an IPv6 address or prefix as rbldnsd does: groups without `::` give a prefix of
/// 16 bits per group (`2001:db8:1:2` is a /64); with `::` the address is complete (128 bits).
pub(crate) fn ip6_prefix(s: &[u8]) -> Option<(u128, u8, &[u8])> {
    let mut head: Vec<u16> = Vec::with_capacity(8);
    let mut tail: Vec<u16> = Vec::new();
    let mut compressed = false;
    let mut rest = s;

    // `::` at the very start (`::1`).
    if let Some(after) = rest.strip_prefix(b"::") {
        compressed = true;
        rest = after;
    }
    loop {
        let Some((group, after)) = ip6_group(rest) else {
            // Only `::` itself, or `x::` followed by no group, may end without a group.
            if compressed && (tail.is_empty()) {
                break;
            }
            return None;
        };
        if compressed {
            tail.push(group)
        } else {
            head.push(group)
        }
        rest = after;
        if head.len() + tail.len() >= 8 {
            break;
        }
        if !compressed && rest.starts_with(b"::") {
            compressed = true;
            rest = &rest[2..];
            continue;
        }
        match rest.split_first() {
            Some((b':', after)) if after.first().is_some_and(u8::is_ascii_hexdigit) => rest = after,
            _ => break,
        }
    }
    if compressed && head.len() + tail.len() >= 8 {
        return None;
    }

    let mut addr = 0u128;
    for (i, group) in head.iter().enumerate() {
        addr |= u128::from(*group) << (112 - 16 * i);
    }
    for (i, group) in tail.iter().rev().enumerate() {
        addr |= u128::from(*group) << (16 * i);
    }
    let bits = if compressed {
        128
    } else {
        u8::try_from(16 * head.len()).ok()?
    };
    Some((addr, bits, rest))
}

/// Parses an IPv6 CIDR block as rbldnsd's ip6trie does: a prefix with an optional `/bits`;
/// a single group without a mask is refused.
pub(crate) fn ip6_cidr(s: &[u8]) -> Option<(u128, u8, &[u8])> {
    let (addr, bits, rest) = ip6_prefix(s)?;
    match rest.strip_prefix(b"/") {
        Some(tail) => mask_bits(tail, 128).map(|(bits, rest)| (addr, bits, rest)),
        None if bits == 16 => None,
        None => Some((addr, bits, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Option<(String, String, u8, String)> {
        let (r, rest) = ip4_range(s.as_bytes())?;
        let a = std::net::Ipv4Addr::from(r.first).to_string();
        let b = std::net::Ipv4Addr::from(r.last).to_string();
        Some((a, b, r.bits, String::from_utf8_lossy(rest).into_owned()))
    }

    #[test]
    fn prefix_ranges_complete_the_last_boundary_with_ones() {
        let r = range("10.16-31").expect("valid");
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2),
            ("10.16.0.0", "10.31.255.255", 32)
        );
        let r = range("12.0.0.5-7").expect("valid");
        assert_eq!((r.0.as_str(), r.1.as_str()), ("12.0.0.5", "12.0.0.7"));
        let r = range("127.16-127.31").expect("valid");
        assert_eq!(r.1, "127.31.255.255");
    }

    #[test]
    fn prefixes_and_cidrs_give_their_length() {
        assert_eq!(range("10.1.2").expect("valid").2, 24);
        assert_eq!(range("11/8").expect("valid").1, "11.255.255.255");
        assert_eq!(range("0/0").expect("valid").2, 0);
        assert_eq!(range("1.2.3.4 rest").expect("valid").3, " rest");
    }

    #[test]
    fn bare_numbers_reversed_ranges_and_mixed_lengths_are_refused() {
        assert_eq!(range("10"), None);
        assert_eq!(range("10.0.0.2-10.0.0.1"), None);
        assert_eq!(range("1.2-1.2.3.4"), None);
        assert_eq!(range("256.1.1.1"), None);
        assert_eq!(range("10.0.0.0/33"), None);
    }

    #[test]
    fn a_values_read_like_inet_aton() {
        assert_eq!(ip4_loose(b"5").map(|r| r.0), Some(5));
        assert_eq!(ip4_loose(b"127.1").map(|r| r.0), Some(0x7f00_0001));
        assert_eq!(ip4_loose(b"127.0.0.3").map(|r| r.0), Some(0x7f00_0003));
    }

    #[test]
    fn ip6_groups_without_compression_are_prefixes() {
        let (addr, bits, _) = ip6_prefix(b"2001:db9:1:2").expect("valid");
        assert_eq!(bits, 64);
        assert_eq!(addr, 0x2001_0db9_0001_0002u128 << 64);
        let (addr, bits, _) = ip6_prefix(b"::1").expect("valid");
        assert_eq!((addr, bits), (1, 128));
        let (addr, bits, rest) = ip6_cidr(b"2001:db8::/32").expect("valid");
        assert_eq!((addr, bits, rest), (0x2001_0db8u128 << 96, 32, &b""[..]));
        let (addr, _, _) = ip6_prefix(b"2001:db8::beef").expect("valid");
        assert_eq!(addr, (0x2001_0db8u128 << 96) | 0xbeef);
        let (_, bits, rest) = ip6_prefix(b"2001:db8::/48").expect("valid");
        assert_eq!((bits, rest), (128, &b"/48"[..]));
    }

    #[test]
    fn ip6_single_group_without_mask_is_refused() {
        assert_eq!(ip6_cidr(b"2001"), None);
        assert!(ip6_cidr(b"2001/16").is_some());
        assert_eq!(ip6_prefix(b"1:2:3:4:5:6:7:8:9").map(|r| r.1), Some(128));
        assert_eq!(ip6_prefix(b"1::2::3").map(|r| r.2), Some(&b"::3"[..]));
    }
}
