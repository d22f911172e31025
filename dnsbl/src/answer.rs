//! The records of an answer as the zone collects them, before any encoding: A, TXT and MX
//! data in wire form, without duplicates, one TTL per type.

use std::net::Ipv4Addr;

use crate::dataset::value::{Substitutions, expand_txt};

/// DNS record types Moat answers with (RFC 1035 section 3.2.2).
pub(crate) mod rtype {
    /// An IPv4 address.
    pub const A: u16 = 1;
    /// An authoritative name server.
    pub const NS: u16 = 2;
    /// Start of a zone of authority.
    pub const SOA: u16 = 6;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text strings.
    pub const TXT: u16 = 16;
    /// EDNS pseudo-record (RFC 6891).
    pub const OPT: u16 = 41;
    /// First of the meta types that are never answered from data (TSIG and above).
    pub const TSIG: u16 = 250;
    /// Any type.
    pub const ANY: u16 = 255;
}

/// Which record types a query asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Want {
    /// A records.
    pub a: bool,
    /// TXT records.
    pub txt: bool,
    /// MX records.
    pub mx: bool,
    /// The SOA (at a zone apex).
    pub soa: bool,
    /// NS records (at a zone apex).
    pub ns: bool,
}

impl Want {
    /// What query type `qtype` asks for.
    pub(crate) fn for_type(qtype: u16) -> Want {
        match qtype {
            rtype::A => Want {
                a: true,
                ..Want::default()
            },
            rtype::TXT => Want {
                txt: true,
                ..Want::default()
            },
            rtype::MX => Want {
                mx: true,
                ..Want::default()
            },
            rtype::SOA => Want {
                soa: true,
                ..Want::default()
            },
            rtype::NS => Want {
                ns: true,
                ..Want::default()
            },
            rtype::ANY => Want {
                a: true,
                txt: true,
                mx: true,
                soa: true,
                ns: true,
            },
            _ => Want::default(),
        }
    }
}

/// One answer record: type, TTL and where its data is in [`Answers::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// The record type.
    pub rtype: u16,
    /// The TTL.
    pub ttl: u32,
    start: u32,
    len: u32,
}

/// The answer records of one query. Reused between queries, so steady-state answering does
/// not allocate.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    records: Vec<Record>,
    data: Vec<u8>,
    scratch: Vec<u8>,
    expanded: Vec<u8>,
}

impl Answers {
    /// Empties the set for the next query, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.data.clear();
    }

    /// The records, in the order they were added.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    /// The data (RDATA in wire form) of a record.
    pub(crate) fn rdata(&self, record: &Record) -> &[u8] {
        let start = usize::try_from(record.start).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(record.len).unwrap_or(0));
        self.data.get(start..end).unwrap_or_default()
    }

    /// Whether there are no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds an A record.
    pub(crate) fn add_a(&mut self, addr: Ipv4Addr, ttl: u32) {
        self.add(rtype::A, ttl, &addr.octets());
    }

    /// Adds a TXT record with one character-string (at most 255 bytes).
    pub(crate) fn add_txt(&mut self, text: &[u8], ttl: u32) {
        let text = &text[..text.len().min(255)];
        let mut rdata = std::mem::take(&mut self.scratch);
        rdata.clear();
        rdata.push(u8::try_from(text.len()).unwrap_or(255));
        rdata.extend_from_slice(text);
        self.add(rtype::TXT, ttl, &rdata);
        self.scratch = rdata;
    }

    /// Expands a TXT template for `subject` and adds it; an empty result adds nothing.
    pub(crate) fn add_txt_template(
        &mut self,
        template: &[u8],
        subject: &[u8],
        vars: &Substitutions,
        ttl: u32,
    ) {
        let mut text = std::mem::take(&mut self.expanded);
        expand_txt(template, subject, vars, &mut text);
        if !text.is_empty() {
            self.add_txt(&text, ttl);
        }
        self.expanded = text;
    }

    /// Adds an MX record (preference and exchange in wire form).
    pub(crate) fn add_mx(&mut self, preference: u16, exchange: &[u8], ttl: u32) {
        let mut rdata = Vec::with_capacity(exchange.len() + 2);
        rdata.extend_from_slice(&preference.to_be_bytes());
        rdata.extend_from_slice(exchange);
        self.add(rtype::MX, ttl, &rdata);
    }

    /// Adds a record of any type with its data in wire form.
    pub(crate) fn add_record(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) {
        self.add(rtype, ttl, rdata);
    }

    /// Adds a record unless the same data is there already. All records of one type share the
    /// smallest TTL any of them was given, so that a resolver caches the set as one RRset
    /// (RFC 2181 section 5.2 forbids differing TTLs within an RRset).
    fn add(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) {
        let mut ttl = ttl;
        let mut duplicate = false;
        for record in self.records.iter().filter(|r| r.rtype == rtype) {
            ttl = ttl.min(record.ttl);
            duplicate |= self.rdata(record) == rdata;
        }
        for record in self.records.iter_mut().filter(|r| r.rtype == rtype) {
            record.ttl = ttl;
        }
        if duplicate {
            return;
        }
        let start = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(rdata.len()).unwrap_or(0);
        self.data.extend_from_slice(rdata);
        self.records.push(Record {
            rtype,
            ttl,
            start,
            len,
        });
    }

    /// Replaces all A records by one whose address is the bitwise OR of theirs (a bitmask
    /// list such as 127.0.0.2 | 127.0.0.4 = 127.0.0.6).
    pub(crate) fn merge_a_bitmask(&mut self) {
        let a_records: Vec<Record> = self
            .records
            .iter()
            .filter(|r| r.rtype == rtype::A)
            .copied()
            .collect();
        if a_records.len() < 2 {
            return;
        }
        let mut merged = [0u8; 4];
        for record in &a_records {
            for (m, b) in merged.iter_mut().zip(self.rdata(record)) {
                *m |= b;
            }
        }
        let ttl = a_records[0].ttl;
        self.records.retain(|r| r.rtype != rtype::A);
        self.add(rtype::A, ttl, &merged);
        // Keep A first, as a client reading only the first record expects.
        if let Some(last) = self.records.pop() {
            self.records.insert(0, last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_dropped_and_ttls_unified_to_the_smallest() {
        let mut answers = Answers::default();
        answers.add_a(Ipv4Addr::new(127, 0, 0, 2), 2100);
        answers.add_a(Ipv4Addr::new(127, 0, 0, 2), 2100);
        answers.add_a(Ipv4Addr::new(127, 0, 0, 3), 60);
        answers.add_txt(b"x", 300);
        let ttls: Vec<(u16, u32)> = answers.records().iter().map(|r| (r.rtype, r.ttl)).collect();
        assert_eq!(
            ttls,
            vec![(rtype::A, 60), (rtype::A, 60), (rtype::TXT, 300)]
        );
    }

    #[test]
    fn bitmask_merge_ors_the_addresses() {
        let mut answers = Answers::default();
        answers.add_a(Ipv4Addr::new(127, 0, 0, 2), 60);
        answers.add_txt(b"x", 60);
        answers.add_a(Ipv4Addr::new(127, 0, 0, 4), 60);
        answers.merge_a_bitmask();
        let first = answers.records()[0];
        assert_eq!(answers.rdata(&first), &[127, 0, 0, 6]);
        assert_eq!(answers.records().len(), 2);
    }
}
