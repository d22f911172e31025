//! Reading a DNS query (RFC 1035 section 4.1) from raw bytes: header, the one question, and
//! an EDNS OPT record (RFC 6891) if there is one. Allocation-free: the hot path of the UDP
//! server.

use crate::answer::rtype;
use crate::query::QueryName;

/// Length of the DNS header.
pub(crate) const HEADER: usize = 12;

/// The EDNS parameters of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The requestor's UDP payload size.
    pub payload: u16,
    /// The EDNS version.
    pub version: u8,
}

/// A query that can be answered.
pub(crate) struct Request<'a> {
    /// The query ID.
    pub id: u16,
    /// The opcode (0 is QUERY).
    pub opcode: u8,
    /// Whether recursion was desired (copied into the reply).
    pub rd: bool,
    /// The question's name, lower-cased.
    pub name: QueryName,
    /// The question's type.
    pub qtype: u16,
    /// The question's class.
    pub qclass: u16,
    /// The question section as sent, to be echoed (RFC 1035 section 4.1.1; keeps the
    /// requestor's letter case for 0x20 checks).
    pub question: &'a [u8],
    /// EDNS, if the query had an OPT record.
    pub edns: Option<Edns>,
}

/// What to do with bytes that are not an answerable query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not worth a reply: shorter than a header, or a response (answering responses could make
    /// two servers loop).
    Drop,
    /// A header we can answer with FORMERR.
    FormatError {
        /// The query ID.
        id: u16,
        /// The opcode.
        opcode: u8,
        /// Whether RD was set.
        rd: bool,
    },
}

/// Parses a query.
pub(crate) fn parse(raw: &[u8]) -> Result<Request<'_>, Malformed> {
    if raw.len() < HEADER || raw[2] & 0x80 != 0 {
        return Err(Malformed::Drop);
    }
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    let opcode = (raw[2] >> 3) & 0x0f;
    let rd = raw[2] & 0x01 != 0;
    let formerr = Malformed::FormatError { id, opcode, rd };
    let count = |at: usize| u16::from_be_bytes([raw[at], raw[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 {
        return Err(formerr);
    }

    let (name, name_len) = QueryName::from_wire(&raw[HEADER..]).ok_or(formerr)?;
    let fixed = raw
        .get(HEADER + name_len..HEADER + name_len + 4)
        .ok_or(formerr)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let question_end = HEADER + name_len + 4;

    // An OPT record is looked for where clients put it: the only record after the question.
    let edns = if ancount == 0 && nscount == 0 && arcount >= 1 {
        opt_record(&raw[question_end..]).map_err(|()| formerr)?
    } else {
        None
    };
    Ok(Request {
        id,
        opcode,
        rd,
        name,
        qtype,
        qclass,
        question: &raw[HEADER..question_end],
        edns,
    })
}

/// Reads an OPT record at the start of `rest`, if the record there is one.
fn opt_record(rest: &[u8]) -> Result<Option<Edns>, ()> {
    let Some((&0, fixed)) = rest.split_first() else {
        // Not a root-owned record: not an OPT; another record type is ignored.
        return Ok(None);
    };
    let fixed = fixed.get(..10).ok_or(())?;
    if u16::from_be_bytes([fixed[0], fixed[1]]) != rtype::OPT {
        return Ok(None);
    }
    let payload = u16::from_be_bytes([fixed[2], fixed[3]]);
    let version = fixed[5];
    Ok(Some(Edns { payload, version }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, opt: Option<u16>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(size) = opt {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn a_query_with_edns_is_read() {
        let raw = query(b"\x011\x02bl\x04test\x00", 16, Some(1232));
        let request = parse(&raw).expect("valid");
        assert_eq!(
            (request.id, request.qtype, request.qclass, request.rd),
            (0x1234, 16, 1, true)
        );
        assert_eq!(
            request.edns,
            Some(Edns {
                payload: 1232,
                version: 0
            })
        );
        assert_eq!(request.question.len(), 15);
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        assert_eq!(parse(&[0; 11]).err(), Some(Malformed::Drop));
        let mut raw = query(b"\x00", 1, None);
        raw[2] |= 0x80;
        assert_eq!(parse(&raw).err(), Some(Malformed::Drop));
    }

    #[test]
    fn broken_questions_get_format_error() {
        let mut raw = query(b"\x05ab\x00", 1, None);
        raw.truncate(15);
        assert!(matches!(
            parse(&raw),
            Err(Malformed::FormatError { id: 0x1234, .. })
        ));
        let mut two = query(b"\x00", 1, None);
        two[5] = 2;
        assert!(matches!(parse(&two), Err(Malformed::FormatError { .. })));
        let pointer = query(b"\xc0\x0c", 1, None);
        assert!(matches!(
            parse(&pointer),
            Err(Malformed::FormatError { .. })
        ));
    }
}
