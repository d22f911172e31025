//! Writing the reply (RFC 1035 section 4.1): header, the question echoed, answers, the
//! authority section, and an OPT record when the query had one.
//!
//! Size limits are where rbldnsd was wrong: it silently dropped answers that did not fit 512
//! bytes. Here an answer that does not fit sets TC (RFC 2181 section 9) so the client retries
//! over TCP; an authority section that does not fit is left out without TC, as it is optional
//! for positive answers.

use crate::answer::{Answers, rtype};
use crate::outcome::{Authority, Outcome};
use crate::wire::request::{HEADER, Malformed, Request};
use crate::zone::{Resolution, Zone};

/// The largest UDP reply without EDNS (RFC 1035 section 4.2.1).
pub(crate) const MAX_PLAIN_UDP: usize = 512;

/// The largest UDP payload we answer with EDNS, whatever the client offers: 1232 bytes fits
/// the IPv6 minimum MTU without fragmentation (DNS flag day 2020).
pub(crate) const MAX_EDNS_UDP: u16 = 1232;

/// The Internet class (RFC 1035 section 3.2.4).
const CLASS_IN: u16 = 1;

/// The transport a reply goes over, which bounds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: 512 bytes, or the EDNS size up to [`MAX_EDNS_UDP`].
    Udp,
    /// TCP: 65,535 bytes.
    Tcp,
}

/// The size a reply to `request` may take.
pub(crate) fn reply_limit(request: &Request<'_>, transport: Transport) -> usize {
    match (transport, request.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => MAX_PLAIN_UDP,
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.clamp(512, MAX_EDNS_UDP)),
    }
}

/// Writes the reply to `request` into `out`.
pub(crate) fn write(
    request: &Request<'_>,
    resolution: &Resolution<'_>,
    answers: &Answers,
    transport: Transport,
    out: &mut Vec<u8>,
) {
    let outcome = resolution.outcome;
    let limit = reply_limit(request, transport);
    let opt_len = if request.edns.is_some() { 11 } else { 0 };
    let budget = limit.saturating_sub(opt_len);

    out.clear();
    write_header(out, request.id, request.opcode, request.rd, outcome);
    // Authority is claimed for class IN only; a class ANY query gets the same data without AA,
    // as rbldnsd answers it.
    if request.qclass != CLASS_IN {
        out[2] &= !0x04;
    }
    out.extend_from_slice(request.question);
    set_count(out, 4, 1);

    // Answers, each pointing at the question name for its owner.
    let mut truncated = false;
    let mut count = 0u16;
    for record in answers.records() {
        let before = out.len();
        write_record(
            out,
            &[0xc0, 0x0c],
            record.rtype,
            record.ttl,
            answers.rdata(record),
        );
        if out.len() > budget {
            out.truncate(before);
            truncated = true;
            break;
        }
        count += 1;
    }
    set_count(out, 6, count);

    if let (false, Some(zone)) = (truncated, resolution.zone) {
        truncated = write_authority(out, request, zone, outcome, budget);
    }
    if truncated {
        out[2] |= 0x02;
    }

    if request.edns.is_some() {
        write_opt(out, outcome);
        set_count(out, 10, 1);
    }
}

/// Writes the reply to a malformed query that still deserves one (FORMERR, header only).
pub(crate) fn write_malformed(malformed: Malformed, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Malformed::FormatError { id, opcode, rd } = malformed else {
        return false;
    };
    write_header(out, id, opcode, rd, Outcome::FormatError);
    true
}

fn write_header(out: &mut Vec<u8>, id: u16, opcode: u8, rd: bool, outcome: Outcome) {
    out.extend_from_slice(&id.to_be_bytes());
    let aa = if outcome.authoritative() { 0x04 } else { 0 };
    out.push(0x80 | (opcode << 3) | aa | u8::from(rd));
    out.push(outcome.rcode());
    out.extend_from_slice(&[0; 8]);
}

fn set_count(out: &mut [u8], at: usize, count: u16) {
    out[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

fn write_record(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Writes the SOA (negative answers) or NS records (positive ones). Returns whether the
/// reply must be marked truncated: only when a negative answer's SOA does not fit.
fn write_authority(
    out: &mut Vec<u8>,
    request: &Request<'_>,
    zone: &Zone,
    outcome: Outcome,
    budget: usize,
) -> bool {
    // The apex is the tail of the question name: point there.
    let apex_at = HEADER + request.name.offset(request.name.count() - zone.labels);
    let owner = (0xc000u16 | u16::try_from(apex_at).unwrap_or(0)).to_be_bytes();
    let before = out.len();
    match outcome.authority() {
        Authority::Empty => false,
        Authority::Soa => {
            let Some(soa) = &zone.soa else {
                return false;
            };
            write_record(out, &owner, rtype::SOA, soa.minimum, zone.soa_rdata());
            if out.len() > budget {
                out.truncate(before);
                return true;
            }
            set_count(out, 8, 1);
            false
        }
        Authority::Ns => {
            let Some(ns) = &zone.ns else {
                return false;
            };
            for server in &ns.names {
                write_record(out, &owner, rtype::NS, ns.ttl, server.wire());
            }
            if out.len() > budget {
                out.truncate(before);
            } else {
                set_count(out, 8, u16::try_from(ns.names.len()).unwrap_or(0));
            }
            false
        }
    }
}

/// Appends our OPT record: our payload size, and BADVERS in the extended code if needed.
fn write_opt(out: &mut Vec<u8>, outcome: Outcome) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&MAX_EDNS_UDP.to_be_bytes());
    let extended = if outcome == Outcome::BadVersion { 1 } else { 0 };
    out.extend_from_slice(&[extended, 0, 0, 0]);
    out.extend_from_slice(&[0, 0]);
}
