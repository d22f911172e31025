//! rbldnsd's special entries (`$SOA`, `$NS`, `$TTL`, `$MAXRANGE4`, `$0`..`$9`): the metadata
//! of a dataset, as opposed to its entries.

use std::sync::Arc;

use super::line::{first_word, is_space, skip_space};
use super::value::Substitutions;
use crate::name::Name;

/// rbldnsd's default TTL (`-t 35m`), used when a dataset gives none.
pub const DEFAULT_TTL: u32 = 35 * 60;

/// The SOA record a zone answers at its apex and in negative answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Soa {
    /// TTL of the record in answers to SOA queries.
    pub ttl: u32,
    /// Primary name server (MNAME).
    pub mname: Name,
    /// Responsible person's mailbox (RNAME).
    pub rname: Name,
    /// Serial as written; 0 means "use the dataset version" (newest file time).
    pub serial: u32,
    /// Refresh, retry and expire intervals.
    pub refresh: u32,
    /// Retry interval.
    pub retry: u32,
    /// Expire interval.
    pub expire: u32,
    /// The minimum field: TTL of negative answers (RFC 2308 section 4).
    pub minimum: u32,
}

/// The NS records of a zone, with one TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NsSet {
    /// TTL of the records.
    pub ttl: u32,
    /// The name servers, in file order.
    pub names: Vec<Name>,
}

/// What the special entries of a dataset said.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// The first valid `$SOA`.
    pub soa: Option<Arc<Soa>>,
    /// The `$NS` records.
    pub ns: Option<Arc<NsSet>>,
    /// TTL of this dataset's answers (`$TTL`, else the configured default).
    pub ttl: u32,
    /// `$0`..`$9` substitution variables.
    pub subst: Substitutions,
    /// `$MAXRANGE4`: the largest IPv4 range an entry may cover, in addresses.
    pub max_range4: Option<u32>,
    /// Whether `$NS` was written in the current one-line form (later lines are ignored).
    ns_final: bool,
    /// The configured default TTL, for `0` in time fields.
    default_ttl: u32,
}

impl Meta {
    /// Metadata before any special entry, with the configured default TTL.
    pub(crate) fn new(default_ttl: u32) -> Meta {
        Meta {
            soa: None,
            ns: None,
            ttl: default_ttl,
            subst: Default::default(),
            max_range4: None,
            ns_final: false,
            default_ttl,
        }
    }

    /// Metadata of a combined dataset's part: it starts with the parent's TTL and variables.
    pub(crate) fn nested(parent: &Meta) -> Meta {
        Meta {
            soa: None,
            ns: None,
            ttl: parent.ttl,
            subst: parent.subst.clone(),
            max_range4: parent.max_range4,
            ns_final: false,
            default_ttl: parent.default_ttl,
        }
    }
}

/// What a special entry turned out to be, for the caller that routes it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Special<'a> {
    /// Applied to the metadata.
    Applied,
    /// `$DATASET type[:name] subzone...`, for a combined dataset to act on.
    Dataset(&'a [u8]),
    /// Not understood or malformed; the line is skipped with this warning.
    Invalid(&'static str),
}

/// Applies one special entry (the text after `$`). Inside a combined dataset `base` is the
/// combined dataset's metadata and `part` the current part's: `$SOA` and `$NS` always go to the
/// base zone, `$TTL`, `$MAXRANGE4` and variables to the part (rbldnsd's rule).
pub(crate) fn apply<'a>(text: &'a [u8], base: &mut Meta, part: Option<&mut Meta>) -> Special<'a> {
    let (keyword, args) = first_word(text);
    let keyword = keyword.to_ascii_lowercase();
    let outcome = match keyword.as_slice() {
        b"soa" => soa(args, base),
        b"ns" | b"nameserver" => ns(args, base),
        b"dataset" => return Special::Dataset(args),
        other => {
            let local = match part {
                Some(part) => part,
                None => base,
            };
            match other {
                b"ttl" => ttl(args, local),
                b"maxrange4" => max_range4(args, local),
                [digit] if digit.is_ascii_digit() && text.get(1).is_some_and(|&b| is_space(b)) => {
                    variable(usize::from(digit - b'0'), args, local)
                }
                _ => Err("invalid or unrecognized special entry"),
            }
        }
    };
    match outcome {
        Ok(()) => Special::Applied,
        Err(warning) => Special::Invalid(warning),
    }
}

fn soa(args: &[u8], meta: &mut Meta) -> Result<(), &'static str> {
    if meta.soa.is_some() {
        // Only the first $SOA counts, so a small local file listed first can override
        // the SOA of third-party data.
        return Ok(());
    }
    let bad = "invalid $SOA";
    let (ttl, rest) = parse_ttl(args, meta.ttl).ok_or(bad)?;
    let (mname, rest) = first_word(rest);
    let (rname, rest) = first_word(rest);
    let mname = Name::parse(mname).ok_or(bad)?;
    let rname = Name::parse(rname).ok_or(bad)?;
    let (serial, rest) = parse_uint(rest).ok_or(bad)?;
    let (refresh, rest) = parse_time(rest).ok_or(bad)?;
    let (retry, rest) = parse_time(rest).ok_or(bad)?;
    let (expire, rest) = parse_time(rest).ok_or(bad)?;
    let (minimum, rest) = parse_time(rest).ok_or(bad)?;
    if !rest.is_empty() {
        return Err(bad);
    }
    let soa = Soa {
        ttl,
        mname,
        rname,
        serial,
        refresh,
        retry,
        expire,
        minimum,
    };
    meta.soa = Some(Arc::new(soa));
    Ok(())
}

fn ns(args: &[u8], meta: &mut Meta) -> Result<(), &'static str> {
    if meta.ns_final {
        return Ok(());
    }
    let (ttl, mut rest) = parse_ttl(args, meta.ttl).ok_or("invalid $NS")?;
    let mut names = Vec::new();
    let mut one_line_form = false;
    while !rest.is_empty() {
        let (word, after) = first_word(rest);
        rest = after;
        if word.first() == Some(&b'-') {
            // A leading minus comments out one name server.
            one_line_form = true;
            continue;
        }
        names.push(Name::parse(word).ok_or("invalid $NS")?);
    }

    // rbldnsd's compatibility mode: single-name $NS lines add up, until a line with several
    // names (or a commented-out one) which alone counts.
    let previous = meta.ns.take();
    let ttl = previous.as_ref().map_or(ttl, |p| p.ttl.min(ttl));
    if names.len() > 1 || one_line_form {
        meta.ns_final = true;
    } else if let Some(previous) = previous {
        let mut all = previous.names.clone();
        all.extend(names);
        names = all;
    }
    meta.ns = Some(Arc::new(NsSet { ttl, names }));
    Ok(())
}

fn ttl(args: &[u8], meta: &mut Meta) -> Result<(), &'static str> {
    let (ttl, rest) = parse_ttl(args, meta.default_ttl).ok_or("invalid $TTL")?;
    if !rest.is_empty() {
        return Err("invalid $TTL");
    }
    meta.ttl = ttl;
    Ok(())
}

fn max_range4(args: &[u8], meta: &mut Meta) -> Result<(), &'static str> {
    let bad = "invalid $MAXRANGE4";
    let (cidr, digits) = match args.strip_prefix(b"/") {
        Some(rest) => (true, rest),
        None => (false, args),
    };
    let (value, rest) = parse_uint(digits).ok_or(bad)?;
    if !rest.is_empty() || value == 0 || (cidr && value > 32) {
        return Err(bad);
    }
    let size = if cidr {
        u32::try_from((1u64 << (32 - value)).min(u64::from(u32::MAX))).unwrap_or(u32::MAX)
    } else {
        value
    };
    // The limit can only shrink: a later file must not widen what an earlier one allowed.
    match meta.max_range4 {
        Some(current) if current < size => Err("attempt to increase $MAXRANGE4 ignored"),
        _ => {
            meta.max_range4 = Some(size);
            Ok(())
        }
    }
}

fn variable(index: usize, args: &[u8], meta: &mut Meta) -> Result<(), &'static str> {
    if args.is_empty() {
        return Err("empty substitution variable");
    }
    if meta.subst[index].is_none() {
        meta.subst[index] = Some(args.into());
    }
    Ok(())
}

/// Parses an unsigned decimal number followed by the end or spaces.
pub(crate) fn parse_uint(s: &[u8]) -> Option<(u32, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n = 0u32;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    let rest = &s[digits..];
    match rest.first() {
        None => Some((n, rest)),
        Some(&b) if is_space(b) => Some((n, skip_space(rest))),
        Some(_) => None,
    }
}

/// Parses a time with an optional unit (`s`, `m`, `h`, `d`, `w`), as rbldnsd's `parse_time`.
pub(crate) fn parse_time(s: &[u8]) -> Option<(u32, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n = 0u32;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    let mut rest = &s[digits..];
    let unit = match rest.first().map(u8::to_ascii_lowercase) {
        Some(b's') => Some(1),
        Some(b'm') => Some(60),
        Some(b'h') => Some(3600),
        Some(b'd') => Some(86_400),
        Some(b'w') => Some(604_800),
        _ => None,
    };
    if let Some(unit) = unit {
        n = n.checked_mul(unit)?;
        rest = &rest[1..];
    }
    match rest.first() {
        None => Some((n, rest)),
        Some(b':') => Some((n, rest)),
        Some(&b) if is_space(b) => Some((n, skip_space(rest))),
        Some(_) => None,
    }
}

/// Parses a TTL: a time where 0 means `default`.
fn parse_ttl(s: &[u8], default: u32) -> Option<(u32, &[u8])> {
    let (ttl, rest) = parse_time(s)?;
    Some((if ttl == 0 { default } else { ttl }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(meta: &mut Meta, line: &str) {
        assert_eq!(
            apply(line.as_bytes(), meta, None),
            Special::Applied,
            "{line}"
        );
    }

    #[test]
    fn soa_takes_time_units_and_only_the_first_counts() {
        let mut meta = Meta::new(DEFAULT_TTL);
        applied(
            &mut meta,
            "SOA 0 ns1.bl.test hostmaster.bl.test 42 1h 1h 2d 10m",
        );
        applied(&mut meta, "SOA 5 other.test other.test 1 1 1 1 1");
        let soa = meta.soa.expect("an SOA");
        assert_eq!(
            (soa.ttl, soa.serial, soa.refresh, soa.expire, soa.minimum),
            (2100, 42, 3600, 172_800, 600)
        );
        assert_eq!(soa.mname.to_string(), "ns1.bl.test");
    }

    #[test]
    fn ns_skips_commented_names_and_keeps_the_first_full_line() {
        let mut meta = Meta::new(DEFAULT_TTL);
        applied(&mut meta, "NS 1d ns1.bl.test -ns2.bl.test ns3.bl.test");
        applied(&mut meta, "NS 1d ns9.bl.test");
        let ns = meta.ns.expect("NS records");
        let names: Vec<String> = ns.names.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["ns1.bl.test", "ns3.bl.test"]);
        assert_eq!(ns.ttl, 86_400);
    }

    #[test]
    fn ttl_variables_and_unknown_keywords() {
        let mut meta = Meta::new(DEFAULT_TTL);
        applied(&mut meta, "TTL 1h");
        applied(&mut meta, "1 first");
        applied(&mut meta, "1 second");
        assert_eq!(meta.ttl, 3600);
        assert_eq!(meta.subst[1].as_deref(), Some(&b"first"[..]));
        assert!(matches!(
            apply(b"BOGUS 1", &mut meta, None),
            Special::Invalid(_)
        ));
        assert!(matches!(
            apply(b"TTL 1x", &mut meta, None),
            Special::Invalid(_)
        ));
        assert_eq!(
            apply(b"DATASET ip4set x @", &mut meta, None),
            Special::Dataset(b"ip4set x @")
        );
    }

    #[test]
    fn max_range_can_shrink_but_not_grow() {
        let mut meta = Meta::new(DEFAULT_TTL);
        applied(&mut meta, "MAXRANGE4 /24");
        assert_eq!(meta.max_range4, Some(256));
        assert!(matches!(
            apply(b"MAXRANGE4 65536", &mut meta, None),
            Special::Invalid(_)
        ));
        applied(&mut meta, "MAXRANGE4 16");
        assert_eq!(meta.max_range4, Some(16));
    }
}
