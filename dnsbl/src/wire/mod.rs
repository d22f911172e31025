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
