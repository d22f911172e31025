//! Sync across the cluster: a publisher node hands its dataset files to subscriber nodes, which
//! pull rsync deltas on a schedule, so a change of 1% moves about 1% of the bytes.
//!
//! # How a pull goes
//!
//! 1. The subscriber connects ([`Subscriber::pull`]) and asks for the listing: each published
//!    file by name with its version, a generation (the file's modification time in
//!    nanoseconds), its length and its SHA-256 (`wire.rs`, messages over frames with a version
//!    byte, bounded lengths and a CRC-32).
//! 2. For each file of its own zones that the publisher lists under the same name, and whose
//!    checksum differs from its copy's, it sends an rsync signature of its copy (`delta.rs`;
//!    an empty copy's for a new node, so the first pull is a full copy).
//! 3. The publisher ([`Publisher`]) reads its file from disk, answers with the delta and the
//!    version it rebuilds.
//! 4. The subscriber refuses a generation older than its copy's, rebuilds the file, checks its
//!    length and SHA-256, writes it aside, syncs it, stamps it with the generation and renames
//!    it into place (`copy.rs`), then reloads the zones that read it
//!    ([`Zones::reload_path`](crate::Zones::reload_path)). Any failure leaves the old copy in
//!    service, is logged at warn with its [`SyncOutcome`] name and counted in [`SyncMetrics`].
//!
//! # Authentication
//!
//! Without a key the sync trusts the network: any allowed address reads the datasets, and
//! anyone on the path can change what subscribers install. It is then for private networks
//! only. With `key_file` set on both sides, a connection opens with a challenge-response over
//! nonces from both ends (`handshake.rs`), and every frame after it carries an HMAC-SHA256 tag
//! over its bytes and a sequence number per direction (`mac.rs`, `link.rs`), as TSIG does for
//! zone transfers. A failed proof or tag closes the connection and counts as `unauthenticated`
//! or `bad_mac`; the copy held stays in service. Frames are not encrypted: blocklists are not
//! secret.
//!
//! Files dropped into a data directory by another tool (rsync from a blocklist vendor) need
//! none of this: the periodic check of [`watch`](crate::watch) reloads them, and a publisher
//! serves whatever is on disk.

mod config;
mod copy;
mod delta;
mod error;
mod handshake;
mod key;
mod link;
mod mac;
mod metrics;
mod outcome;
mod publisher;
mod refusal;
mod subscriber;
mod wire;

pub use config::{
    DEFAULT_SYNC_ALLOW, DEFAULT_SYNC_INTERVAL, DEFAULT_SYNC_TIMEOUT, Network, PublishConfig,
    PublishSettings, SubscribeConfig, SubscribeSettings, SyncConfig, SyncSettings,
};
pub use error::SyncError;
pub use key::{MIN_KEY_LEN, SyncKey};
pub use metrics::SyncMetrics;
pub use outcome::SyncOutcome;
pub use publisher::Publisher;
pub use refusal::Refusal;
pub use subscriber::{PullSummary, Subscriber};
