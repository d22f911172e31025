//! generic: a few records in a simplified BIND format (`name [ttl] [IN] A|TXT|MX data`), for
//! the A, TXT and MX records a DNSBL's own names need (`www`, the apex).

use std::collections::BTreeMap;

use super::addr::ip4_loose;
use super::line::{first_word, is_space, skip_space};
use super::special::{Meta, parse_time, parse_uint};
use super::{Entry, Line};
use crate::answer::{Answers, Want, rtype};
use crate::name::Name;
use crate::query::Subject;

/// One record as read: owner key, optional TTL, type and data in wire form.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    key: Vec<u8>,
    ttl: Option<u32>,
    rtype: u16,
    rdata: Box<[u8]>,
}

/// Reads one generic line.
pub(crate) fn parse_line(data: &[u8]) -> Line<'_> {
    match parse_record(data) {
        Some(record) => Line::Entry {
            entry: Entry::Record(Box::new(record)),
            excluded: false,
            value: None,
        },
        None => Line::Invalid("invalid/unrecognized entry"),
    }
}

fn parse_record(data: &[u8]) -> Option<Record> {
    // The owner: `@` for the zone itself, else a name relative to the zone.
    let (owner, mut rest) = first_word(data);
    let key = if owner == b"@" {
        Vec::new()
    } else {
        let name = Name::parse(owner).filter(|n| !n.is_root())?;
        let labels: Vec<&[u8]> = name.labels().collect();
        let mut key = Vec::new();
        for label in labels.iter().rev() {
            key.extend(label.iter().map(u8::to_ascii_lowercase));
            key.push(0);
        }
        key
    };

    let mut ttl = None;
    if rest.first().is_some_and(u8::is_ascii_digit) {
        let (value, after) = parse_time(rest)?;
        ttl = Some(value);
        rest = skip_space(after);
    }
    let (mut word, mut after) = first_word(rest);
    if word.eq_ignore_ascii_case(b"in") {
        (word, after) = first_word(after);
    }

    let (rtype, rdata): (u16, Vec<u8>) = match word.to_ascii_lowercase().as_slice() {
        b"a" => {
            let (addr, _, _) = ip4_loose(after)?;
            (rtype::A, addr.to_be_bytes().to_vec())
        }
        b"txt" => {
            let text = match after {
                [b'"', inner @ .., b'"'] => inner,
                _ => after,
            };
            let text = &text[..text.len().min(255)];
            let mut rdata = vec![u8::try_from(text.len()).ok()?];
            rdata.extend_from_slice(text);
            (rtype::TXT, rdata)
        }
        b"mx" => {
            let (preference, after) = parse_uint(after)?;
            let preference = u16::try_from(preference).ok()?;
            let (exchange, tail) = first_word(after);
            if !tail.is_empty() || exchange.iter().any(|&b| is_space(b)) {
                return None;
            }
            let exchange = Name::parse(exchange)?;
            let mut rdata = preference.to_be_bytes().to_vec();
            rdata.extend_from_slice(exchange.wire());
            (rtype::MX, rdata)
        }
        _ => return None,
    };
    Some(Record {
        key,
        ttl,
        rtype,
        rdata: rdata.into(),
    })
}

/// Collects generic records.
#[derive(Default)]
pub(crate) struct Builder {
    records: Vec<Record>,
}

impl Builder {
    /// Adds a record; a TTL of 0 or none takes the dataset's `$TTL` in force.
    pub(crate) fn add(&mut self, mut record: Record, meta: &Meta) -> Result<(), &'static str> {
        record.ttl = Some(record.ttl.filter(|&t| t != 0).unwrap_or(meta.ttl));
        self.records.push(record);
        Ok(())
    }

    /// Groups the records by owner.
    pub(crate) fn finish(self) -> Generic {
        let mut names: BTreeMap<Vec<u8>, Vec<Stored>> = BTreeMap::new();
        for record in self.records {
            let stored = Stored {
                rtype: record.rtype,
                ttl: record.ttl.unwrap_or(0),
                rdata: record.rdata,
            };
            names.entry(record.key).or_default().push(stored);
        }
        Generic { names }
    }
}

#[derive(Debug)]
struct Stored {
    rtype: u16,
    ttl: u32,
    rdata: Box<[u8]>,
}

/// A loaded generic dataset.
#[derive(Debug)]
pub(crate) struct Generic {
    names: BTreeMap<Vec<u8>, Vec<Stored>>,
}

impl Generic {
    /// Answers the records of the wanted types at the name of `subject`. A name with records
    /// of other types only still exists (NODATA, not NXDOMAIN).
    pub(crate) fn query(&self, subject: &Subject<'_>, want: Want, out: &mut Answers) -> bool {
        let mut key = Vec::new();
        subject.reversed_key(&mut key);
        let Some(records) = self.names.get(&key) else {
            return false;
        };
        for record in records {
            match record.rtype {
                rtype::A if want.a => {
                    let octets: [u8; 4] = record.rdata[..].try_into().unwrap_or([0; 4]);
                    out.add_a(octets.into(), record.ttl);
                }
                rtype::TXT if want.txt => out.add_txt(&record.rdata[1..], record.ttl),
                rtype::MX if want.mx => {
                    let preference = u16::from_be_bytes([record.rdata[0], record.rdata[1]]);
                    out.add_mx(preference, &record.rdata[2..], record.ttl);
                }
                _ => {}
            }
        }
        true
    }

    /// Whether a record's owner is below the name of `subject`.
    pub(crate) fn has_names_below(&self, subject: &Subject<'_>) -> bool {
        let mut key = Vec::new();
        subject.reversed_key(&mut key);
        self.names
            .range(key.clone()..)
            .find(|(k, _)| k.len() > key.len() || !k.starts_with(&key))
            .is_some_and(|(k, _)| k.starts_with(&key))
    }

    /// The number of records.
    pub(crate) fn len(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }

    /// Heap bytes held (approximate).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.names
            .iter()
            .map(|(k, v)| k.len() + v.iter().map(|r| r.rdata.len() + 16).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_optional_ttl_and_class() {
        let r = parse_record(b"www 3000 IN A 127.0.0.8").expect("valid");
        assert_eq!(
            (r.key.as_slice(), r.ttl, r.rtype, &r.rdata[..]),
            (&b"www\0"[..], Some(3000), rtype::A, &[127, 0, 0, 8][..])
        );
        let r = parse_record(b"@ TXT \"about us\"").expect("valid");
        assert_eq!((r.key.len(), &r.rdata[..]), (0, &b"\x08about us"[..]));
        let r = parse_record(b"@ MX 10 mx.ex.com").expect("valid");
        assert_eq!(&r.rdata[..2], &[0, 10]);
        assert!(parse_record(b"@ AAAA ::1").is_none());
        assert!(parse_record(b"@ MX 10 mx.ex.com junk").is_none());
    }
}
