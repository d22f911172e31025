//! What the results mean for the message: the action its author's DMARC policy asks for, and
//! the points authentication adds to the message's spam score.
//!
//! Every weight is here, in one table, on the scale of the other checks (positive is spammy,
//! about 5 points mark spam, as in SpamAssassin and rspamd, whose weights these follow in
//! size). Only failures that a legitimate sender controls are punished: a `temperror` costs
//! nothing, and neither does a missing record.

use super::arc::{ArcCheck, ArcResult};
use super::dkim::{DkimCheck, DkimResult};
use super::dmarc::{DmarcCheck, DmarcPolicy, DmarcResult};
use super::settings::{AuthSettings, DmarcEnforcement};
use super::spf::{SpfReport, SpfResult};

/// The MAIL FROM domain says the client may not send its mail (`-all`).
const SPF_FAIL: f32 = 1.0;
/// The MAIL FROM domain says the client probably may not send its mail (`~all`).
const SPF_SOFTFAIL: f32 = 0.5;
/// The MAIL FROM domain authorises the client: weak evidence, spammers publish SPF too.
const SPF_PASS: f32 = -0.2;
/// The HELO name's domain says the client may not use it.
const SPF_HELO_FAIL: f32 = 0.5;
/// Signatures were present and none verified: altered in transit, or forged.
const DKIM_FAIL: f32 = 1.0;
/// A signature aligned with the author's domain verified: the author's domain vouches for
/// the message, the strongest evidence here, and one that survives forwarding.
const DKIM_ALIGNED_PASS: f32 = -1.0;
/// DMARC failed for a domain that publishes `p=none` (monitoring only).
const DMARC_FAIL_POLICY_NONE: f32 = 0.5;
/// DMARC failed for a domain that asks for quarantine.
const DMARC_FAIL_POLICY_QUARANTINE: f32 = 1.5;
/// DMARC failed for a domain that asks for rejection (kept when `dmarc_reject` lets the
/// message through, so that content checks can still tip it over).
const DMARC_FAIL_POLICY_REJECT: f32 = 2.0;
/// The ARC chain is broken or forged. A passing chain earns nothing: anyone can seal.
const ARC_FAIL: f32 = 1.0;

/// What the author domain's DMARC policy, as configured here, asks of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcAction {
    /// Refuse the message at the end of DATA with 550 5.7.1.
    Reject,
    /// Accept the message and quarantine it.
    Quarantine,
}

/// The action for a DMARC result: only a `fail` acts, and only as far as the configuration
/// lets the domain's policy go.
pub(super) fn dmarc_action(dmarc: &DmarcCheck, settings: &AuthSettings) -> Option<DmarcAction> {
    if dmarc.result != DmarcResult::Fail {
        return None;
    }
    let enforcement = match dmarc.policy {
        DmarcPolicy::None => return None,
        DmarcPolicy::Quarantine => settings.dmarc_quarantine,
        DmarcPolicy::Reject => settings.dmarc_reject,
    };
    match enforcement {
        DmarcEnforcement::Reject => Some(DmarcAction::Reject),
        DmarcEnforcement::Quarantine => Some(DmarcAction::Quarantine),
        DmarcEnforcement::Tag => None,
    }
}

/// The points authentication adds to the message's score.
pub(super) fn score(
    spf: &SpfReport,
    dkim: &[DkimCheck],
    arc: &ArcCheck,
    dmarc: &DmarcCheck,
) -> f32 {
    let mut score = match spf.mail_from.result {
        SpfResult::Fail => SPF_FAIL,
        SpfResult::SoftFail => SPF_SOFTFAIL,
        SpfResult::Pass => SPF_PASS,
        _ => 0.0,
    };
    if spf.helo.result == SpfResult::Fail && !spf.reverse_path.is_empty() {
        // With the null reverse-path the HELO result is already the MAIL FROM result.
        score += SPF_HELO_FAIL;
    }

    let any_pass = dkim.iter().any(|check| check.result == DkimResult::Pass);
    let any_fail = dkim.iter().any(|check| check.result == DkimResult::Fail);
    if dmarc.dkim_aligned {
        score += DKIM_ALIGNED_PASS;
    } else if any_fail && !any_pass {
        score += DKIM_FAIL;
    }

    if dmarc.result == DmarcResult::Fail {
        score += match dmarc.policy {
            DmarcPolicy::None => DMARC_FAIL_POLICY_NONE,
            DmarcPolicy::Quarantine => DMARC_FAIL_POLICY_QUARANTINE,
            DmarcPolicy::Reject => DMARC_FAIL_POLICY_REJECT,
        };
    }
    if arc.result == ArcResult::Fail {
        score += ARC_FAIL;
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::spf::SpfCheck;

    fn dmarc(result: DmarcResult, policy: DmarcPolicy) -> DmarcCheck {
        DmarcCheck {
            result,
            policy,
            domain: "example.com".into(),
            ..DmarcCheck::none()
        }
    }

    fn settings(reject: DmarcEnforcement, quarantine: DmarcEnforcement) -> AuthSettings {
        AuthSettings {
            dmarc_reject: reject,
            dmarc_quarantine: quarantine,
            ..AuthSettings::new("mx.example.net", None)
        }
    }

    #[test]
    fn a_dmarc_fail_under_p_reject_is_refused_by_default() {
        let defaults = AuthSettings::new("mx.example.net", None);
        let fail = dmarc(DmarcResult::Fail, DmarcPolicy::Reject);
        assert_eq!(dmarc_action(&fail, &defaults), Some(DmarcAction::Reject));
        let quarantine = dmarc(DmarcResult::Fail, DmarcPolicy::Quarantine);
        assert_eq!(
            dmarc_action(&quarantine, &defaults),
            Some(DmarcAction::Quarantine)
        );
        let monitoring = dmarc(DmarcResult::Fail, DmarcPolicy::None);
        assert_eq!(dmarc_action(&monitoring, &defaults), None);
    }

    #[test]
    fn the_configuration_can_soften_a_domains_policy() {
        let fail = dmarc(DmarcResult::Fail, DmarcPolicy::Reject);
        let quarantine_only = settings(DmarcEnforcement::Quarantine, DmarcEnforcement::Quarantine);
        assert_eq!(
            dmarc_action(&fail, &quarantine_only),
            Some(DmarcAction::Quarantine)
        );
        let tag_only = settings(DmarcEnforcement::Tag, DmarcEnforcement::Tag);
        assert_eq!(dmarc_action(&fail, &tag_only), None);
    }

    #[test]
    fn only_a_fail_acts_never_a_temporary_error_or_a_pass() {
        let defaults = AuthSettings::new("mx.example.net", None);
        for result in [
            DmarcResult::Pass,
            DmarcResult::None,
            DmarcResult::TempError,
            DmarcResult::PermError,
        ] {
            let check = dmarc(result, DmarcPolicy::Reject);
            assert_eq!(dmarc_action(&check, &defaults), None, "{result:?}");
        }
    }

    fn spf(result: SpfResult) -> SpfReport {
        let check = SpfCheck {
            result,
            domain: "example.com".into(),
        };
        SpfReport {
            client_ip: "192.0.2.1".parse().expect("address"),
            helo_name: "mail.example.com".into(),
            reverse_path: "user@example.com".into(),
            mail_from: check.clone(),
            helo: SpfCheck {
                result: SpfResult::None,
                ..check
            },
            output: mail_auth::SpfOutput::new("example.com".into()),
        }
    }

    #[test]
    fn failures_add_points_and_an_aligned_signature_takes_them_away() {
        let none = ArcCheck::none();
        let forged = score(
            &spf(SpfResult::Fail),
            &[],
            &none,
            &dmarc(DmarcResult::Fail, DmarcPolicy::Reject),
        );
        assert_eq!(forged, SPF_FAIL + DMARC_FAIL_POLICY_REJECT);

        let mut aligned = dmarc(DmarcResult::Pass, DmarcPolicy::Reject);
        aligned.dkim_aligned = true;
        let signed = score(&spf(SpfResult::Pass), &[], &none, &aligned);
        assert_eq!(signed, SPF_PASS + DKIM_ALIGNED_PASS);
        assert!(signed < 0.0);
    }

    #[test]
    fn a_temporary_error_costs_nothing() {
        let unknown = score(
            &spf(SpfResult::TempError),
            &[],
            &ArcCheck {
                result: ArcResult::TempError,
                ..ArcCheck::none()
            },
            &dmarc(DmarcResult::TempError, DmarcPolicy::Reject),
        );
        assert_eq!(unknown, 0.0);
    }
}
