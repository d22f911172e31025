//! The checks that judge a session beyond its syntax: DNSBL/DNSWL scores of the client and
//! greylisting now; sender authentication and content checks plug in here as they land.

mod dnsbl;

use std::sync::Arc;

use moat_greylist::Greylist;

pub use dnsbl::{
    DEFAULT_DNSBL_TIMEOUT, DnsblCheck, DnsblScore, DnsblSettings, DnsblSite, ResolverError,
};

/// The optional checks a gateway runs; each is off when `None`.
#[derive(Clone, Default)]
pub struct Checks {
    /// Triplet greylisting at RCPT (issue #4): a first attempt from an unknown client,
    /// sender and recipient is told to come back later.
    pub greylist: Option<Arc<Greylist>>,
    /// DNSBL and DNSWL lookups of the client's address (issue #3): a listed client's
    /// recipients are refused; an allowlisted one skips greylisting.
    pub dnsbl: Option<Arc<DnsblCheck>>,
}
