//! Moat's triplet greylisting: an embedded store or MySQL shards, in process or as a Postfix
//! policy service.
//!
//! A tour of the path of one request:
//!
//! - A [`TripletRequest`] (client address and forward-confirmed name, reverse-path,
//!   recipient, and what earlier checks found) comes from the SMTP gateway's RCPT stage, or from
//!   Postfix through [`PolicyService`] (`policy_protocol` reads its wire format).
//! - [`Greylist::check`] first asks [`Exemptions`] (listed networks and domains, SPF-passing
//!   providers, DNS allowlists, gating by score or forward-confirmed DNS).
//! - Otherwise the request becomes a [`Triplet`]: the client's network or pool, the
//!   reverse-path without BATV, SRS, `+extension` or VERP numbers, and the recipient.
//! - A [`Store`] applies the rule of `policy` ([`Rules`]: delay, retry window, max age,
//!   auto-whitelist) to the triplet's record at its own clock, within the budget:
//!   [`EmbeddedStore`] (one redb file) or [`MysqlStore`] (shards by rendezvous hash, replicas
//!   for reads).
//! - The answer is a [`Decision`]; `reply` turns it into the SMTP reply, the `X-Greylist`
//!   header or the Postfix action, and [`Metrics`] counts it per shard.
//!
//! [`GreylistSection`] is the `[greylist]` configuration section; [`Clock`] is injected so
//! tests can step through days.

mod clock;
mod config;
mod exemptions;
mod greylister;
mod metrics;
mod policy;
mod policy_protocol;
mod policy_service;
mod reply;
mod store;
mod triplet;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Backend, ConfigError, DEFAULT_BUDGET, DEFAULT_EXPIRE_INTERVAL, GreylistSection,
    GreylistSettings, ShardSection, ShardSettings,
};
pub use exemptions::{Cidr, Exemption, Exemptions};
pub use greylister::Greylist;
pub use metrics::Metrics;
pub use policy::{
    DEFAULT_AUTO_WHITELIST_CLIENTS, DEFAULT_DELAY, DEFAULT_MAX_AGE, DEFAULT_RETRY_WINDOW, Rules,
    Verdict,
};
pub use policy_protocol::ProtocolError;
pub use policy_service::PolicyService;
pub use reply::{Decision, FailureMode, Known, Outcome, SmtpReply};
pub use store::embedded::EmbeddedStore;
pub use store::mysql::MysqlStore;
pub use store::placement::Placement;
pub use store::{Store, StoreError, StoreFuture};
pub use triplet::{ClientGrouping, Triplet, TripletRequest};
