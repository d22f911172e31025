//! Moat's durable queue and the relay to downstream mailbox storage.
//!
//! The path of a message through this crate:
//!
//! 1. The gateway calls [`Queue::accept`] with a [`QueueId`], the [`Envelope`] and the content.
//!    The [`Spool`] writes both into one file, fsyncs it and its directory, and only then
//!    returns, so the gateway's 250 reply is a promise that survives a crash.
//! 2. The queue manager (in `queue`) groups the recipients by their domain's [`Route`] and
//!    hands them to a transport: [`transport::maildir`] for local Maildirs, or
//!    [`transport::smtp`] for LMTP/SMTP storage hosts, primary first, then standbys.
//! 3. Each recipient ends delivered, failed (bounced with [`bounce::build_dsn`]), or deferred
//!    and retried by the schedule until the queue lifetime runs out.

pub mod bounce;
pub mod envelope;
mod quarantine;
mod queue;
mod queue_file;
mod queue_id;
pub mod route;
mod spool;
pub mod transport;

pub use envelope::{BodyType, Envelope};
pub use quarantine::{HeldMessage, HeldVerdict, Quarantine};
pub use queue::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE_LIFETIME, DEFAULT_RETRY_SCHEDULE, DeliveryConfig, Queue,
};
pub use queue_id::QueueId;
pub use route::{Route, RouteError};
pub use spool::{Progress, Spool, SpoolError};
pub use transport::smtp::{Protocol, Timeouts};
