//! ARC chains against a real authoritative DNS server (Knot DNS on loopback), sealed by the
//! tests as forwarders would: a mailing list that alters a signed message and seals it, a
//! second hop, a message altered after sealing, and a seal that does not match its key.

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use harness::{Dns, Record, TestKey, forwarder_verifier, message, sender_auth, with_received};
use moat_gateway::{ArcResult, AuthReport, DkimResult, DmarcAction, DmarcResult, SenderAuth};

/// The mailing list's sending host.
const LIST_HOST: &str = "198.51.100.7";

struct World {
    dns: Dns,
    author: TestKey,
    list: TestKey,
    forwarder: TestKey,
}

impl World {
    fn new() -> World {
        let author = TestKey::ed25519();
        let list = TestKey::ed25519();
        let forwarder = TestKey::rsa2048();
        let dns = Dns::start(&[
            Record::txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all"),
            Record::txt("_dmarc.example.com", "v=DMARC1; p=reject"),
            Record::dkim_key("ed", "example.com", &author),
            Record::txt("list.example.org", "v=spf1 ip4:198.51.100.0/24 -all"),
            Record::dkim_key("arc", "list.example.org", &list),
            Record::dkim_key("arc", "fwd.example.net", &forwarder),
        ]);
        World {
            dns,
            author,
            list,
            forwarder,
        }
    }

    /// The author's signed message, then the list's copy: subject tagged, footer added,
    /// sealed after verifying what it received.
    async fn through_the_list(&self) -> String {
        let original = self.author.sign(
            "example.com",
            "ed",
            &message("joe@example.com", "Meeting", "See you at ten."),
        );
        let altered = original
            .replace("Subject: Meeting", "Subject: [team] Meeting")
            .replace(
                "See you at ten.\r\n",
                "See you at ten.\r\n-- \r\nteam mailing list\r\n",
            );
        let verifier = forwarder_verifier(self.dns.addr);
        self.list
            .seal(&verifier, "list.example.org", "arc", &original, &altered)
            .await
    }
}

async fn check(auth: &SenderAuth, raw: &str) -> AuthReport {
    let spf = auth
        .check_spf(
            LIST_HOST.parse().expect("address"),
            "lists.example.org",
            "team-bounces@list.example.org",
        )
        .await;
    auth.check_message(with_received(raw).as_bytes(), &spf)
        .await
}

#[tokio::test]
async fn a_mailing_lists_seal_verifies_where_the_authors_signature_broke() {
    let world = World::new();
    let sealed = world.through_the_list().await;

    let report = check(&sender_auth(world.dns.addr), &sealed).await;
    assert_eq!(report.arc.result, ArcResult::Pass, "{report:#?}");
    assert_eq!(report.arc.instances, 1);
    assert_eq!(report.arc.sealer.as_deref(), Some("list.example.org"));
    assert_eq!(report.dkim[0].result, DkimResult::Fail);
    assert!(
        report
            .authentication_results
            .contains("\tarc=pass (i=1 d=list.example.org) smtp.remote-ip=198.51.100.7;"),
        "{}",
        report.authentication_results
    );

    // A chain proves who forwarded, not who wrote: DMARC still fails and is enforced, until a
    // policy trusts this sealer.
    assert_eq!(report.dmarc.result, DmarcResult::Fail);
    assert_eq!(report.dmarc_action, Some(DmarcAction::Reject));
}

#[tokio::test]
async fn a_second_hop_extends_the_chain() {
    let world = World::new();
    let sealed = world.through_the_list().await;
    let verifier = forwarder_verifier(world.dns.addr);
    let twice = world
        .forwarder
        .seal(&verifier, "fwd.example.net", "arc", &sealed, &sealed)
        .await;
    assert!(twice.contains("cv=pass"), "{twice}");

    let report = check(&sender_auth(world.dns.addr), &twice).await;
    assert_eq!(report.arc.result, ArcResult::Pass, "{report:#?}");
    assert_eq!(report.arc.instances, 2);
    assert_eq!(report.arc.sealer.as_deref(), Some("fwd.example.net"));
}

#[tokio::test]
async fn a_message_altered_after_the_seal_fails() {
    let world = World::new();
    let sealed = world.through_the_list().await;
    let altered = sealed.replace("See you at ten.", "See you at noon.");

    let report = check(&sender_auth(world.dns.addr), &altered).await;
    assert_eq!(report.arc.result, ArcResult::Fail, "{report:#?}");
    assert_eq!(report.arc.reason, Some("body hash did not verify"));
    assert!(
        report
            .authentication_results
            .contains("\tarc=fail (i=1 body hash did not verify) smtp.remote-ip="),
        "{}",
        report.authentication_results
    );
}

#[tokio::test]
async fn a_seal_made_with_another_key_fails() {
    let world = World::new();
    let impostor = TestKey::ed25519();
    let original = world.author.sign(
        "example.com",
        "ed",
        &message("joe@example.com", "Meeting", "See you at ten."),
    );
    let verifier = forwarder_verifier(world.dns.addr);
    let forged = impostor
        .seal(&verifier, "list.example.org", "arc", &original, &original)
        .await;

    let report = check(&sender_auth(world.dns.addr), &forged).await;
    assert_eq!(report.arc.result, ArcResult::Fail, "{report:#?}");
    assert_eq!(report.arc.reason, Some("signature did not verify"));
    // The untouched author signature still verifies, and DMARC passes through it.
    assert_eq!(report.dkim[0].result, DkimResult::Pass);
    assert_eq!(report.dmarc.result, DmarcResult::Pass);
}
