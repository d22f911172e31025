//! The DNS wire format: reading queries and writing replies, without allocating, for the UDP
//! hot path. (TCP goes through hickory-server, which frames and encodes the same replies.)

pub(crate) mod request;
pub(crate) mod response;

use crate::answer::Answers;
use crate::outcome::Outcome;
use crate::zone::{Catalog, Resolution};
pub(crate) use response::Transport;

/// Answers one raw query from `catalog`, writing the reply into `out`. Returns the outcome,
/// or `None` when the query gets no reply at all.
pub(crate) fn respond(
    raw: &[u8],
    catalog: &Catalog,
    transport: Transport,
    answers: &mut Answers,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    let request = match request::parse(raw) {
        Ok(request) => request,
        Err(malformed) => {
            return response::write_malformed(malformed, out).then_some(Outcome::FormatError);
        }
    };
    let resolution = if request.opcode != 0 {
        answers.clear();
        Resolution {
            outcome: Outcome::NotImplemented,
            zone: None,
        }
    } else if request.edns.is_some_and(|e| e.version > 0) {
        answers.clear();
        Resolution {
            outcome: Outcome::BadVersion,
            zone: None,
        }
    } else {
        catalog.resolve(&request.name, request.qtype, request.qclass, answers)
    };
    response::write(&request, &resolution, answers, transport, out);
    Some(resolution.outcome)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{DatasetSpec, DnsblConfig, ZoneSpec};
    use crate::name::Name;
    use crate::zone::Aggregate;
    use crate::zones::Zones;

    /// Zone `bl.test` from a dataset of the cases table (tests/support/dnsbl_zones).
    fn zones(file: &str) -> Zones {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/support/dnsbl_zones");
        let mut settings = DnsblConfig::default()
            .validate(Path::new(""))
            .expect("defaults");
        settings.zones = vec![ZoneSpec {
            name: Name::parse(b"bl.test").expect("a name"),
            datasets: vec![DatasetSpec::parse(&format!("ip4set:{file}"), &dir).expect("a spec")],
            aggregate: Aggregate::All,
        }];
        Zones::load(&settings).expect("loads")
    }

    fn query(name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(Name::parse(name.as_bytes()).expect("a name").wire());
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        q
    }

    /// The reply's flags byte, rcode and section counts.
    fn answer(zones: &Zones, raw: &[u8], transport: Transport) -> (Vec<u8>, Option<Outcome>) {
        let mut answers = Answers::default();
        let mut out = Vec::new();
        let outcome = respond(
            raw,
            &zones.catalog().load(),
            transport,
            &mut answers,
            &mut out,
        );
        (out, outcome)
    }

    fn counts(reply: &[u8]) -> [u16; 4] {
        [4, 6, 8, 10].map(|at| u16::from_be_bytes([reply[at], reply[at + 1]]))
    }

    #[test]
    fn a_listed_address_gets_aa_the_answer_and_ns_authority() {
        let zones = zones("d01.txt");
        let (reply, outcome) = answer(&zones, &query("4.3.2.1.bl.test", 1, 1), Transport::Udp);
        assert_eq!(outcome, Some(Outcome::Listed));
        assert_eq!(reply[2] & 0x85, 0x85, "QR, AA and RD");
        assert_eq!(counts(&reply), [1, 1, 1, 0]);
        let question_end = 12 + "4.3.2.1.bl.test".len() + 2 + 4;
        assert_eq!(
            &reply[question_end + 12..question_end + 16],
            &[127, 0, 0, 2]
        );
    }

    #[test]
    fn an_unlisted_address_gets_nxdomain_with_the_soa_at_its_minimum_ttl() {
        let zones = zones("d01.txt");
        let (reply, outcome) = answer(&zones, &query("5.3.2.1.bl.test", 1, 1), Transport::Udp);
        assert_eq!(outcome, Some(Outcome::NxDomain));
        assert_eq!(reply[3] & 0x0f, 3);
        assert_eq!(counts(&reply), [1, 0, 1, 0]);
        // Owner (pointer), type, class, then the TTL: 1h, the SOA's minimum.
        let question_end = 12 + "5.3.2.1.bl.test".len() + 2 + 4;
        let ttl = &reply[question_end + 6..question_end + 10];
        assert_eq!(u32::from_be_bytes(ttl.try_into().expect("4 bytes")), 3600);
    }

    #[test]
    fn class_any_gets_the_data_without_aa() {
        let zones = zones("d01.txt");
        let (reply, _) = answer(&zones, &query("4.3.2.1.bl.test", 1, 255), Transport::Udp);
        assert_eq!(reply[2] & 0x04, 0);
        assert_eq!(counts(&reply)[1], 1);
    }

    #[test]
    fn an_answer_over_512_bytes_is_truncated_over_udp_and_whole_over_tcp() {
        let zones = zones("d30.txt");
        let raw = query("1.0.0.10.bl.test", 16, 1);
        let (udp, _) = answer(&zones, &raw, Transport::Udp);
        assert!(
            udp.len() <= 512 && udp[2] & 0x02 != 0,
            "TC within 512 bytes"
        );
        let (tcp, _) = answer(&zones, &raw, Transport::Tcp);
        assert_eq!((tcp[2] & 0x02, counts(&tcp)[1]), (0, 60));
    }
}
