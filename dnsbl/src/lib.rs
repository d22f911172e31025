//! Moat's DNS blocklists: zones in rbldnsd's dataset formats, served over DNS and looked up
//! in-process by the gateway.
//!
//! # A tour
//!
//! * [`DnsblConfig`] is the `[dnsbl]` section of the configuration; [`DnsblConfig::validate`]
//!   turns it into [`Settings`]: listen addresses and zones, each a name and a list of
//!   [`DatasetSpec`]s written as rbldnsd writes them (`ip4set:/path/file,/path/other`).
//! * [`Zones::load`] reads every dataset (`dataset/`: one file per rbldnsd type, parsed in
//!   parallel by `dataset/reader.rs`) into a compact sorted index (`index.rs`) and builds the
//!   catalog of zones (`zone.rs`). The catalog is immutable and swapped whole on reload
//!   ([`Zones::reload_changed`], [`Zones::reload_path`]), so no query sees a half-loaded zone.
//! * [`Zones::lookup_ip`] and [`Zones::lookup_domain`] answer the gateway in-process with a
//!   [`Listing`], through the same code as a DNS query.
//! * [`DnsServer::start`] answers DNS: UDP in Moat's own batched loop and packet codec
//!   (`server/udp.rs`, `wire/`), TCP through hickory-server with Moat's request handler
//!   (`server/handler.rs`). Both end in `zone.rs`; every outcome's response code and
//!   authority section come from one table, [`Outcome`].
//! * [`watch`] reloads on SIGHUP and when dataset files change.
//! * `sync/` keeps a cluster's datasets the same: a [`Publisher`] serves its files, each
//!   [`Subscriber`] pulls rsync deltas on a schedule, verifies the rebuilt file's SHA-256,
//!   renames it into place and calls [`Zones::reload_path`] (`[dnsbl.sync]`, [`SyncSettings`]).

mod answer;
mod config;
mod dataset;
mod error;
mod index;
mod name;
mod outcome;
mod query;
mod server;
mod sync;
mod watch;
mod wire;
mod zone;
mod zones;

pub use config::{
    DEFAULT_CHECK_INTERVAL, DEFAULT_LISTEN, DatasetConfig, DatasetSpec, DetailedDataset,
    DnsblConfig, Settings, UdpEngine, ZoneConfig, ZoneSpec,
};
pub use dataset::DatasetType;
pub use dataset::special::DEFAULT_TTL;
pub use error::Error;
pub use name::Name;
pub use outcome::Outcome;
pub use server::{DnsServer, QueryCounters};
pub use sync::{
    DEFAULT_SYNC_ALLOW, DEFAULT_SYNC_INTERVAL, DEFAULT_SYNC_TIMEOUT, MIN_KEY_LEN, Network,
    PublishConfig, PublishSettings, Publisher, PullSummary, Refusal, SubscribeConfig,
    SubscribeSettings, Subscriber, SyncConfig, SyncError, SyncKey, SyncMetrics, SyncOutcome,
    SyncSettings,
};
pub use watch::watch;
pub use zone::Aggregate;
pub use zones::{Listing, ReloadSummary, Zones};
