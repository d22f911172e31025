//! Published test vectors, their key records served by a real authoritative DNS server (Knot
//! DNS on loopback) and checked by Moat's `SenderAuth`: RFC 8463's Ed25519 and RSA example,
//! RFC 6376's example message signed `simple/simple`, and a two-hop ARC chain, all from
//! mail-auth's test resources (see `tests/support/auth_vectors/README.md`).

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use harness::{Dns, sender_auth, vector, with_received};
use moat_gateway::{ArcResult, AuthReport, DkimResult};

async fn check_vector(name: &str, reverse_path: &str) -> AuthReport {
    let (records, raw) = vector(name);
    let dns = Dns::start(&records);
    let auth = sender_auth(dns.addr);
    let spf = auth
        .check_spf(
            "192.0.2.1".parse().expect("address"),
            "client1.football.example.com",
            reverse_path,
        )
        .await;
    auth.check_message(with_received(&raw).as_bytes(), &spf)
        .await
}

#[tokio::test]
async fn rfc_8463_example_passes_with_both_its_signatures() {
    let report = check_vector("rfc8463-ed25519-and-rsa.txt", "joe@football.example.com").await;
    let seen: Vec<(&str, &str, DkimResult)> = report
        .dkim
        .iter()
        .map(|check| (check.domain.as_str(), check.selector.as_str(), check.result))
        .collect();
    assert_eq!(
        seen,
        [
            ("football.example.com", "brisbane", DkimResult::Pass),
            ("football.example.com", "test", DkimResult::Pass),
        ],
        "{report:#?}"
    );
}

#[tokio::test]
async fn rfc_6376_example_signed_simple_simple_passes_below_our_received_header() {
    // The signature covers the sender's Received header; ours, added on top, is not the one
    // the verifier takes (RFC 6376 section 5.4.2: instances are taken from the bottom).
    let report = check_vector("rfc6376-simple-simple.txt", "joe@football.example.com").await;
    assert_eq!(report.dkim.len(), 1);
    assert_eq!(report.dkim[0].result, DkimResult::Pass, "{report:#?}");
    assert_eq!(report.dkim[0].domain, "example.com");
}

#[tokio::test]
async fn a_two_hop_arc_chain_passes() {
    let report = check_vector("arc-two-hops.txt", "queso@manchego.org").await;
    assert_eq!(report.arc.result, ArcResult::Pass, "{report:#?}");
    assert_eq!(report.arc.instances, 2);
    assert_eq!(report.arc.sealer.as_deref(), Some("manchego.org"));
    assert!(
        report
            .dkim
            .iter()
            .any(|check| check.domain == "manchego.org" && check.result == DkimResult::Pass),
        "{report:#?}"
    );
}
