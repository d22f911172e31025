//! The checks that judge a session beyond its syntax: greylisting now; DNSBL, sender
//! authentication and content checks plug in here as they land.

use std::sync::Arc;

use moat_greylist::Greylist;

/// The optional checks a gateway runs; each is off when `None`.
#[derive(Clone, Default)]
pub struct Checks {
    /// Triplet greylisting at RCPT (issue #4): a first attempt from an unknown client,
    /// sender and recipient is told to come back later.
    pub greylist: Option<Arc<Greylist>>,
}
