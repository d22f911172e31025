//! The checks that judge a session beyond its syntax: DNSBL/DNSWL scores of the client,
//! greylisting, sender authentication, and the verdict policy they feed; content checks plug in
//! here as they land.

mod dnsbl;

use std::sync::Arc;

use moat_delivery::Quarantine;
use moat_greylist::Greylist;

use crate::auth::SenderAuth;
use crate::content::ContentScanner;
use crate::verdict::VerdictPolicy;

pub use dnsbl::{DEFAULT_DNSBL_TIMEOUT, DnsblCheck, DnsblScore, DnsblSettings, DnsblSite};

/// The optional checks a gateway runs; each is off when `None`.
#[derive(Clone, Default)]
pub struct Checks {
    /// Triplet greylisting at RCPT (issue #4): a first attempt from an unknown client,
    /// sender and recipient is told to come back later.
    pub greylist: Option<Arc<Greylist>>,
    /// DNSBL and DNSWL lookups of the client's address (issue #3): a listed client's
    /// recipients are refused; an allowlisted one skips greylisting.
    pub dnsbl: Option<Arc<DnsblCheck>>,
    /// SPF at MAIL FROM, DKIM, ARC and DMARC at the end of DATA, and an
    /// Authentication-Results header on every accepted message (issue #5).
    pub auth: Option<Arc<SenderAuth>>,
    /// MIME analysis, content rules and both anti-virus layers at the end of DATA.
    pub content: Option<Arc<ContentScanner>>,
    /// How the checks' scores become an action.
    pub verdict: VerdictPolicy,
    /// Where messages the verdict holds are kept; without it they are refused instead.
    pub quarantine: Option<Quarantine>,
}

impl Checks {
    /// Whether any check that scores messages is on. Without one, a message is delivered
    /// exactly as received, with no spam headers of a verdict that weighed nothing.
    pub fn score_messages(&self) -> bool {
        self.dnsbl.is_some() || self.auth.is_some() || self.content.is_some()
    }
}
