//! DMARC at the end of DATA against a real authoritative DNS server (Knot DNS on loopback):
//! a pass through aligned DKIM or aligned SPF, a failure under `p=reject` that asks for a
//! 550 (or less, as configured), `p=quarantine` and `p=none`, the organisational domain's
//! record applied to a subdomain (`sp=`), strict alignment, and a domain without a record.

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use harness::{Dns, Record, TestKey, message, sender_auth, sender_auth_with, with_received};
use moat_gateway::{
    AuthReport, DmarcAction, DmarcEnforcement, DmarcPolicy, DmarcResult, SenderAuth,
};

/// An authorised and an unauthorised client of example.com.
const AUTHORISED: &str = "192.0.2.10";
const STRANGER: &str = "203.0.113.5";

fn records(key: &TestKey) -> Vec<Record> {
    vec![
        Record::txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all"),
        Record::txt("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine"),
        Record::dkim_key("ed", "example.com", key),
        Record::address("news.example.com", "192.0.2.40"),
        Record::txt(
            "_dmarc.strict.example.com",
            "v=DMARC1; p=reject; adkim=s; aspf=s",
        ),
        Record::txt("_dmarc.monitor.example.org", "v=DMARC1; p=none"),
        Record::txt("_dmarc.careful.example.org", "v=DMARC1; p=quarantine"),
        Record::txt("other.example.org", "v=spf1 ip4:203.0.113.0/24 -all"),
        Record::dkim_key("ed", "esp.example.org", key),
    ]
}

/// Runs both stages as the session will: SPF at MAIL FROM, the rest at the end of DATA.
async fn check(auth: &SenderAuth, ip: &str, reverse_path: &str, raw: &str) -> AuthReport {
    let spf = auth
        .check_spf(
            ip.parse().expect("address"),
            "mail.example.com",
            reverse_path,
        )
        .await;
    auth.check_message(with_received(raw).as_bytes(), &spf)
        .await
}

#[tokio::test]
async fn an_aligned_dkim_signature_passes_even_when_spf_fails() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@example.com", "Hi", "Signed."),
    );

    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "user@example.com",
        &signed,
    )
    .await;
    assert_eq!(report.dmarc.result, DmarcResult::Pass, "{report:#?}");
    assert!(report.dmarc.dkim_aligned);
    assert!(!report.dmarc.spf_aligned);
    assert_eq!(report.dmarc.policy, DmarcPolicy::Reject);
    assert_eq!(report.dmarc_action, None);
}

#[tokio::test]
async fn an_aligned_spf_pass_passes_an_unsigned_message() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let raw = message("user@example.com", "Hi", "Unsigned.");

    let report = check(
        &sender_auth(dns.addr),
        AUTHORISED,
        "bounce@example.com",
        &raw,
    )
    .await;
    assert_eq!(report.dmarc.result, DmarcResult::Pass, "{report:#?}");
    assert!(report.dmarc.spf_aligned);
    assert!(!report.dmarc.dkim_aligned);
    assert_eq!(report.dmarc_action, None);
}

#[tokio::test]
async fn a_failure_under_p_reject_asks_for_a_rejection() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let forged = message("ceo@example.com", "Urgent transfer", "Pay now.");

    let report = check(&sender_auth(dns.addr), STRANGER, "ceo@example.com", &forged).await;
    assert_eq!(report.dmarc.result, DmarcResult::Fail, "{report:#?}");
    assert_eq!(report.dmarc.policy, DmarcPolicy::Reject);
    assert_eq!(report.dmarc.domain, "example.com");
    assert_eq!(report.dmarc_action, Some(DmarcAction::Reject));
    assert!(report.score > 0.0);
    assert!(
        report
            .authentication_results
            .ends_with("\tdmarc=fail (p=reject dis=reject) header.from=example.com"),
        "{}",
        report.authentication_results
    );
}

#[tokio::test]
async fn spf_passing_for_an_unrelated_domain_does_not_align() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let forged = message("ceo@example.com", "Urgent", "Pay now.");

    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "x@other.example.org",
        &forged,
    )
    .await;
    assert_eq!(report.spf.mail_from.result, moat_gateway::SpfResult::Pass);
    assert_eq!(report.dmarc.result, DmarcResult::Fail);
    assert_eq!(report.dmarc_action, Some(DmarcAction::Reject));
}

#[tokio::test]
async fn a_third_party_signature_does_not_align() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let signed = key.sign(
        "esp.example.org",
        "ed",
        &message("ceo@example.com", "Hi", "Signed by someone else."),
    );

    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "x@esp.example.org",
        &signed,
    )
    .await;
    assert_eq!(report.dkim[0].result, moat_gateway::DkimResult::Pass);
    assert_eq!(report.dmarc.result, DmarcResult::Fail);
    assert!(!report.dmarc.dkim_aligned);
}

#[tokio::test]
async fn the_configuration_decides_how_far_p_reject_goes() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let forged = message("ceo@example.com", "Urgent", "Pay now.");

    for (enforcement, action) in [
        (DmarcEnforcement::Quarantine, Some(DmarcAction::Quarantine)),
        (DmarcEnforcement::Tag, None),
    ] {
        let auth = sender_auth_with(dns.addr, |settings| settings.dmarc_reject = enforcement);
        let report = check(&auth, STRANGER, "ceo@example.com", &forged).await;
        assert_eq!(report.dmarc.result, DmarcResult::Fail);
        assert_eq!(report.dmarc_action, action, "{enforcement:?}");
    }
}

#[tokio::test]
async fn a_subdomain_without_a_record_takes_its_organisational_domains_sp_policy() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));

    let forged = message("alerts@news.example.com", "News", "Unsigned.");
    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "alerts@news.example.com",
        &forged,
    )
    .await;
    assert_eq!(report.dmarc.domain, "news.example.com");
    assert_eq!(report.dmarc.result, DmarcResult::Fail, "{report:#?}");
    assert_eq!(report.dmarc.policy, DmarcPolicy::Quarantine);
    assert_eq!(report.dmarc_action, Some(DmarcAction::Quarantine));

    // The organisational domain's signature aligns in relaxed mode.
    let signed = key.sign(
        "example.com",
        "ed",
        &message("alerts@news.example.com", "News", "Signed by the parent."),
    );
    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "alerts@news.example.com",
        &signed,
    )
    .await;
    assert_eq!(report.dmarc.result, DmarcResult::Pass, "{report:#?}");
    assert!(report.dmarc.dkim_aligned);
}

#[tokio::test]
async fn strict_alignment_refuses_the_organisational_domains_signature() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let signed = key.sign(
        "example.com",
        "ed",
        &message("user@strict.example.com", "Hi", "Signed by the parent."),
    );

    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "user@strict.example.com",
        &signed,
    )
    .await;
    assert_eq!(report.dkim[0].result, moat_gateway::DkimResult::Pass);
    assert_eq!(report.dmarc.result, DmarcResult::Fail, "{report:#?}");
    assert_eq!(report.dmarc_action, Some(DmarcAction::Reject));
}

#[tokio::test]
async fn p_quarantine_quarantines_and_p_none_only_tags() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let auth = sender_auth(dns.addr);

    let careful = message("user@careful.example.org", "Hi", "Unsigned.");
    let report = check(&auth, STRANGER, "user@careful.example.org", &careful).await;
    assert_eq!(report.dmarc.result, DmarcResult::Fail);
    assert_eq!(report.dmarc.policy, DmarcPolicy::Quarantine);
    assert_eq!(report.dmarc_action, Some(DmarcAction::Quarantine));

    let monitored = message("user@monitor.example.org", "Hi", "Unsigned.");
    let report = check(&auth, STRANGER, "user@monitor.example.org", &monitored).await;
    assert_eq!(report.dmarc.result, DmarcResult::Fail);
    assert_eq!(report.dmarc.policy, DmarcPolicy::None);
    assert_eq!(report.dmarc_action, None);
    assert!(
        report
            .authentication_results
            .contains("dmarc=fail (p=none dis=none) header.from=monitor.example.org"),
        "{}",
        report.authentication_results
    );
}

#[tokio::test]
async fn a_domain_without_a_record_has_no_dmarc_result() {
    let key = TestKey::ed25519();
    let dns = Dns::start(&records(&key));
    let raw = message("user@norecord.example.net", "Hi", "Unsigned.");

    let report = check(
        &sender_auth(dns.addr),
        STRANGER,
        "user@norecord.example.net",
        &raw,
    )
    .await;
    assert_eq!(report.dmarc.result, DmarcResult::None);
    assert_eq!(report.dmarc.policy, DmarcPolicy::None);
    assert_eq!(report.dmarc_action, None);
    assert!(
        report
            .authentication_results
            .ends_with("\tdmarc=none header.from=norecord.example.net"),
        "{}",
        report.authentication_results
    );
}
