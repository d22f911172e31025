//! hickory-server's [`RequestHandler`] for Moat's zones: what answers TCP (and UDP when the
//! hickory engine is chosen).
//!
//! The reply is decided by the same code as the UDP loop (`wire::respond`, with TCP's size
//! limit); hickory-server then frames and encodes it. One place decides every answer, so the
//! two transports cannot disagree.

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::counters::QueryCounters;
use crate::answer::Answers;
use crate::wire::{self, Transport};
use crate::zones::Zones;

/// Answers hickory-server's requests from the zones.
#[derive(Clone)]
pub(crate) struct Handler {
    zones: Zones,
    counters: QueryCounters,
}

impl Handler {
    /// A handler over `zones`, counting what it answers in `counters`.
    pub(crate) fn new(zones: Zones, counters: QueryCounters) -> Handler {
        Handler { zones, counters }
    }

    /// Our reply to raw query bytes, as a parsed message; `None` for no reply.
    fn reply(&self, raw: &[u8], transport: Transport) -> Option<Message> {
        let mut answers = Answers::default();
        let mut out = Vec::with_capacity(512);
        let catalog = self.zones.catalog().load();
        let outcome = wire::respond(raw, &catalog, transport, &mut answers, &mut out)?;
        self.counters.add(transport, outcome);
        match Message::from_vec(&out) {
            Ok(message) => Some(message),
            Err(error) => {
                tracing::error!(%error, "our own reply does not parse; answering SERVFAIL");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let Some(message) = self.reply(request.as_slice(), transport) else {
            return servfail_info(&request.metadata);
        };
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &message.edns {
            builder.edns(edns);
        }
        let response = builder.build(
            message.metadata,
            message.answers.iter(),
            message.authorities.iter(),
            std::iter::empty(),
            message.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending a reply failed");
                servfail_info(&request.metadata)
            }
        }
    }
}

/// The response information hickory-server expects when no reply was sent.
fn servfail_info(request: &Metadata) -> ResponseInfo {
    let mut metadata = Metadata::new(request.id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
