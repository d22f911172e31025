//! The checks at the end of DATA: DKIM and ARC of the message as received, at once, then DMARC
//! with the SPF result of MAIL FROM, gathered into one [`AuthReport`].

use mail_auth::{AuthenticatedMessage, MessageAuthenticator};

use super::arc::{self, ArcCheck};
use super::dkim::{self, DkimCheck};
use super::dmarc::{self, DmarcCheck};
use super::results_header::Results;
use super::settings::AuthSettings;
use super::spf::SpfReport;
use super::verdict::{self, DmarcAction};

/// Everything sender authentication found about one message.
#[derive(Debug, Clone)]
pub struct AuthReport {
    /// SPF, as checked at MAIL FROM.
    pub spf: SpfReport,
    /// One entry per DKIM signature verified, in the message's order; empty when unsigned.
    pub dkim: Vec<DkimCheck>,
    /// The ARC chain.
    pub arc: ArcCheck,
    /// DMARC of the author's domain.
    pub dmarc: DmarcCheck,
    /// The Authentication-Results header field to prepend, folded, without the final CRLF.
    pub authentication_results: String,
    /// Points added to the message's spam score (negative when authentication vouches for it).
    pub score: f32,
    /// What the author's DMARC policy, as configured, asks the gateway to do.
    pub dmarc_action: Option<DmarcAction>,
}

/// Runs the checks on `message`, each within `settings.timeout`.
pub(super) async fn check(
    authenticator: &MessageAuthenticator,
    settings: &AuthSettings,
    message: &[u8],
    spf: &SpfReport,
) -> AuthReport {
    let (dkim, arc, dmarc) = match AuthenticatedMessage::parse(message) {
        Some(mut parsed) => {
            dkim::limit_signatures(&mut parsed);
            verify(authenticator, settings, &parsed, spf).await
        }
        None => {
            // mail-auth finds no header at all: nothing is signed and there is no author.
            tracing::debug!("message has no header to authenticate");
            (Vec::new(), ArcCheck::none(), DmarcCheck::none())
        }
    };

    let dmarc_action = verdict::dmarc_action(&dmarc, settings);
    let score = verdict::score(spf, &dkim, &arc, &dmarc);
    let authentication_results = Results {
        authserv_id: &settings.authserv_id,
        spf,
        dkim: &dkim,
        arc: &arc,
        dmarc: &dmarc,
        action: dmarc_action,
    }
    .header();
    tracing::debug!(
        spf = spf.mail_from.result.as_str(),
        dkim_signatures = dkim.len(),
        dkim_aligned = dmarc.dkim_aligned,
        arc = arc.result.as_str(),
        dmarc = dmarc.result.as_str(),
        dmarc_policy = dmarc.policy.as_str(),
        author_domain = %dmarc.domain,
        ?dmarc_action,
        score,
        "message authenticated"
    );
    AuthReport {
        spf: spf.clone(),
        dkim,
        arc,
        dmarc,
        authentication_results,
        score,
        dmarc_action,
    }
}

/// DKIM and ARC concurrently (both only fetch keys), then DMARC, which needs DKIM's outputs.
async fn verify(
    authenticator: &MessageAuthenticator,
    settings: &AuthSettings,
    message: &AuthenticatedMessage<'_>,
    spf: &SpfReport,
) -> (Vec<DkimCheck>, ArcCheck, DmarcCheck) {
    let (dkim_outputs, arc) = tokio::join!(
        dkim::verify(authenticator, message, settings.timeout),
        arc::verify(authenticator, message, settings.timeout),
    );
    let dmarc = dmarc::evaluate(authenticator, message, &dkim_outputs, spf, settings.timeout).await;
    (dkim::checks(&dkim_outputs), arc, dmarc)
}
