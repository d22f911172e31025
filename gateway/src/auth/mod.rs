//! Sender authentication: SPF at MAIL FROM; DKIM, ARC and DMARC at the end of DATA; an
//! Authentication-Results header (RFC 8601) for every accepted message.
//!
//! A tour:
//!
//! - [`AuthSection`] is `[auth]` as written; [`AuthSection::validate`] turns it into
//!   [`AuthSettings`], and [`SenderAuth::new`] builds the checker, with one caching resolver
//!   ([`caching_resolver`]) that every check shares. The session holds one `SenderAuth`.
//! - At MAIL FROM, [`SenderAuth::check_spf`] checks the client against the HELO name's and the
//!   reverse-path domain's SPF policies (`spf`), giving an [`SpfReport`] that the transaction
//!   keeps.
//! - At the end of DATA, [`SenderAuth::check_message`] verifies the DKIM signatures (`dkim`)
//!   and the ARC chain (`arc`) at once, then evaluates DMARC (`dmarc`) with the SPF report.
//!   `verdict` turns the results into points for the spam score and the [`DmarcAction`] the
//!   author's policy asks for; `results_header` writes the header. Everything comes back in
//!   one [`AuthReport`].
//!
//! No check fails or hangs: each runs within the configured time, and a DNS failure or
//! time-out is the `temperror` its RFC defines, which never refuses a message by itself.
//! mail-auth (Stalwart's) does the cryptography and the record parsing; this module decides
//! what its results mean for Moat.

mod arc;
mod dkim;
mod dmarc;
mod error;
mod message;
mod reason;
mod resolver;
mod results_header;
mod settings;
mod spf;
mod verdict;

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use mail_auth::MessageAuthenticator;

pub use arc::{ArcCheck, ArcResult};
pub use dkim::{DkimCheck, DkimResult};
pub use dmarc::{DmarcCheck, DmarcPolicy, DmarcResult};
pub use error::AuthError;
pub use message::AuthReport;
pub use resolver::caching_resolver;
pub use settings::{
    AuthSection, AuthSettings, DEFAULT_AUTH_DNS_TIMEOUT, DEFAULT_AUTH_TIMEOUT, DmarcEnforcement,
};
pub use spf::{SpfCheck, SpfReport, SpfResult};
pub use verdict::DmarcAction;

/// The sender authentication checks, shared by every session of a gateway.
pub struct SenderAuth {
    authenticator: MessageAuthenticator,
    settings: AuthSettings,
}

impl SenderAuth {
    /// Builds the checks with a caching resolver of their own, at `settings.resolver`.
    ///
    /// # Errors
    /// [`AuthError::Value`] for settings out of range, [`AuthError::Resolver`] when no
    /// resolver is configured and /etc/resolv.conf cannot be read.
    pub fn new(settings: AuthSettings) -> Result<SenderAuth, AuthError> {
        settings.check()?;
        let resolver = caching_resolver(settings.resolver, settings.dns_timeout)?;
        Ok(SenderAuth {
            authenticator: MessageAuthenticator(resolver),
            settings,
        })
    }

    /// Builds the checks on a resolver shared with other checks (a clone of a
    /// [`caching_resolver`]); its timeouts take the place of `settings.dns_timeout`.
    ///
    /// # Errors
    /// [`AuthError::Value`] for settings out of range.
    pub fn with_resolver(
        settings: AuthSettings,
        resolver: TokioResolver,
    ) -> Result<SenderAuth, AuthError> {
        settings.check()?;
        Ok(SenderAuth {
            authenticator: MessageAuthenticator(resolver),
            settings,
        })
    }

    /// The resolver, to share its cache with other checks.
    pub fn resolver(&self) -> &TokioResolver {
        self.authenticator.resolver()
    }

    /// The settings in force.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// SPF at MAIL FROM: `helo_name` as the client gave it, `reverse_path` the address without
    /// angle brackets, empty for the null reverse-path. Takes at most the configured timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the lookups and changes nothing.
    pub async fn check_spf(
        &self,
        client_ip: IpAddr,
        helo_name: &str,
        reverse_path: &str,
    ) -> SpfReport {
        spf::check(
            &self.authenticator,
            &self.settings,
            client_ip,
            helo_name,
            reverse_path,
        )
        .await
    }

    /// DKIM, ARC and DMARC at the end of DATA. `message` is the content as it will be stored
    /// (our Received header on top does no harm); `spf` is what [`SenderAuth::check_spf`]
    /// gave for this transaction. Takes at most twice the configured timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the lookups and changes nothing.
    pub async fn check_message(&self, message: &[u8], spf: &SpfReport) -> AuthReport {
        message::check(&self.authenticator, &self.settings, message, spf).await
    }
}
