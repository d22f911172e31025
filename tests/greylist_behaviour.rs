//! The greylist's behaviour in process, with an injected clock: the rule's life cycle, expiry,
//! the auto-whitelist, grouping, BATV and SRS, exemptions, gating, failure modes and metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use moat_greylist::{
    Decision, EmbeddedStore, Exemption, FailureMode, Greylist, GreylistSection, Known, ManualClock,
    Outcome, Rules, Store, StoreFuture, Triplet, TripletRequest, Verdict,
};

const T0: u64 = 1_767_225_600;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

struct Scenario {
    clock: ManualClock,
    greylist: Greylist,
    _dir: TempDir,
}

impl Scenario {
    /// A greylist configured by the body of a `[greylist]` section.
    fn new(section: &str) -> Scenario {
        let dir = TempDir::new("greylist-behaviour");
        let section: GreylistSection = toml::from_str(section).expect("a valid [greylist] body");
        let settings = section.validate(dir.path()).expect("valid settings");
        let clock = ManualClock::starting_at(T0);
        let path = dir.path().join("greylist.redb");
        let store = EmbeddedStore::open(&path, Arc::new(clock.clone()), Duration::from_secs(1))
            .expect("open the embedded store");
        let greylist = Greylist::with_store(Arc::new(store), &settings);
        Scenario {
            clock,
            greylist,
            _dir: dir,
        }
    }

    async fn at(&self, offset: u64, request: &TripletRequest) -> Decision {
        self.clock.set(T0 + offset);
        self.greylist.check(request).await
    }
}

fn request(client: &str, sender: &str, recipient: &str) -> TripletRequest {
    TripletRequest::new(client.parse().expect("a test address"), sender, recipient)
}

fn baseline() -> TripletRequest {
    request("192.0.2.10", "alice@sender.example", "bob@rcpt.example")
}

fn defer(seconds: u64) -> Decision {
    Decision::Defer {
        retry_after: Duration::from_secs(seconds),
    }
}

fn pass(seconds: u64) -> Decision {
    Decision::Pass {
        delayed: Duration::from_secs(seconds),
    }
}

const KNOWN: Decision = Decision::PassAtOnce {
    because: Known::Triplet,
};

#[tokio::test]
async fn first_attempt_deferred_early_retry_deferred_retry_accepted_then_passes_at_once() {
    let scenario = Scenario::new("");
    assert_eq!(scenario.at(0, &baseline()).await, defer(300));
    assert_eq!(scenario.at(120, &baseline()).await, defer(180));
    assert_eq!(scenario.at(900, &baseline()).await, pass(900));
    assert_eq!(scenario.at(901, &baseline()).await, KNOWN);
    assert_eq!(scenario.at(30 * DAY, &baseline()).await, KNOWN);
}

#[tokio::test]
async fn deferral_maps_to_450_4_7_1_and_pass_to_a_header() {
    let scenario = Scenario::new("hostname = \"mx.rcpt.example\"");
    let reply = scenario
        .at(0, &baseline())
        .await
        .smtp_reply()
        .expect("a refusal");
    assert_eq!((reply.code, reply.status), (450, "4.7.1"));
    assert_eq!(reply.text, "Greylisted, please try again in 300 seconds");
    let passed = scenario.at(300, &baseline()).await;
    assert_eq!(passed.smtp_reply(), None);
    let header = passed.header(scenario.greylist.hostname());
    assert_eq!(
        header.as_deref(),
        Some("X-Greylist: delayed 300 seconds by Moat at mx.rcpt.example")
    );
}

#[tokio::test]
async fn passed_triplet_is_forgotten_after_max_age_and_expiry_removes_it() {
    let scenario = Scenario::new("auto_whitelist_clients = 0");
    scenario.at(0, &baseline()).await;
    scenario.at(300, &baseline()).await;
    let pending = request("192.0.2.10", "once@sender.example", "bob@rcpt.example");
    scenario.at(400, &pending).await;

    // After the retry window the pending triplet goes; the passed one stays until max age.
    scenario.clock.set(T0 + 400 + 2 * DAY + 1);
    assert_eq!(scenario.greylist.expire().await.expect("expire"), 1);
    scenario.clock.set(T0 + 300 + 35 * DAY + 1);
    assert_eq!(scenario.greylist.expire().await.expect("expire"), 1);
    assert_eq!(scenario.greylist.expire().await.expect("expire"), 0);
    assert_eq!(
        scenario.at(300 + 35 * DAY + 2, &baseline()).await,
        defer(300)
    );
}

#[tokio::test]
async fn client_network_is_auto_whitelisted_after_five_deliveries_an_hour_apart() {
    let scenario = Scenario::new("");
    for n in 0..5 {
        let sender = format!("user{}x@sender.example", (b'a' + n as u8) as char);
        let mail = request("192.0.2.10", &sender, "bob@rcpt.example");
        let start = n * 2 * HOUR;
        assert_eq!(scenario.at(start, &mail).await, defer(300), "delivery {n}");
        assert_eq!(
            scenario.at(start + 300, &mail).await,
            pass(300),
            "delivery {n}"
        );
    }
    // A new triplet from a sibling address of the same /24 passes at once.
    let new = request("192.0.2.99", "new@other.example", "carol@rcpt.example");
    let whitelisted = Decision::PassAtOnce {
        because: Known::AutoWhitelistedClient,
    };
    assert_eq!(scenario.at(10 * HOUR, &new).await, whitelisted);
    // Another network is not.
    let elsewhere = request("198.51.100.1", "new@other.example", "carol@rcpt.example");
    assert_eq!(scenario.at(10 * HOUR, &elsewhere).await, defer(300));
}

#[tokio::test]
async fn deliveries_within_an_hour_do_not_whitelist_a_client() {
    let scenario = Scenario::new("");
    for n in 0..10u64 {
        let mail = request(
            "192.0.2.10",
            &format!("s{}x@sender.example", n + 10),
            "bob@rcpt.example",
        );
        scenario.at(n * 301, &mail).await;
        scenario.at(n * 301 + 300, &mail).await;
    }
    let new = request("192.0.2.10", "fresh@sender.example", "bob@rcpt.example");
    assert_eq!(scenario.at(4 * 301 * 10, &new).await, defer(300));
}

#[tokio::test]
async fn ipv6_retry_from_the_same_slash_64_matches_and_the_prefix_is_configurable() {
    let scenario = Scenario::new("ipv6_prefix = 48");
    let first = request("2001:db8:1:2::10", "v6@sender.example", "bob@rcpt.example");
    let sibling = request(
        "2001:db8:1:ffff::1",
        "v6@sender.example",
        "bob@rcpt.example",
    );
    let outside = request("2001:db8:2::1", "v6@sender.example", "bob@rcpt.example");
    assert_eq!(scenario.at(0, &first).await, defer(300));
    assert_eq!(scenario.at(300, &sibling).await, pass(300));
    assert_eq!(scenario.at(301, &outside).await, defer(300));
}

#[tokio::test]
async fn batv_tags_change_between_attempts_yet_the_retry_matches() {
    let scenario = Scenario::new("");
    let first = request(
        "192.0.2.10",
        "prvs=4123abcdef=alice@sender.example",
        "bob@rcpt.example",
    );
    let retry = request(
        "192.0.2.10",
        "prvs=4456fedcba=alice@sender.example",
        "bob@rcpt.example",
    );
    assert_eq!(scenario.at(0, &first).await, defer(300));
    assert_eq!(scenario.at(300, &retry).await, pass(300));
    // The untagged address is the same sender.
    assert_eq!(scenario.at(301, &baseline()).await, KNOWN);
}

#[tokio::test]
async fn srs_rewrites_by_a_forwarder_match_across_hashes_and_timestamps() {
    let scenario = Scenario::new("");
    let first = request(
        "192.0.2.10",
        "SRS0=Ab12=XY=sender.example=alice@fwd.example",
        "bob@rcpt.example",
    );
    let retry = request(
        "192.0.2.10",
        "SRS0=Zz99=XZ=sender.example=alice@fwd.example",
        "bob@rcpt.example",
    );
    let srs1 = request(
        "192.0.2.10",
        "SRS1=Qq11=fwd.example==Zz99=XZ=sender.example=alice@second.example",
        "bob@rcpt.example",
    );
    assert_eq!(scenario.at(0, &first).await, defer(300));
    assert_eq!(scenario.at(300, &retry).await, pass(300));
    assert_eq!(scenario.at(301, &srs1).await, KNOWN);
}

#[tokio::test]
async fn retry_from_another_address_of_a_pooled_provider_matches() {
    let scenario = Scenario::new("pool_domains = [\"outbound.bigmail.example\"]");
    let first = request("192.0.2.10", "alice@bigmail.example", "bob@rcpt.example")
        .with_client_name("a1.outbound.bigmail.example");
    let retry = request(
        "198.51.100.200",
        "alice@bigmail.example",
        "bob@rcpt.example",
    )
    .with_client_name("z9.outbound.bigmail.example");
    assert_eq!(scenario.at(0, &first).await, defer(300));
    assert_eq!(scenario.at(300, &retry).await, pass(300));
    // Without a confirmed name, the same address is grouped by its network as usual.
    let unnamed = request(
        "198.51.100.200",
        "alice@bigmail.example",
        "bob@rcpt.example",
    );
    assert_eq!(scenario.at(301, &unnamed).await, defer(300));
}

#[tokio::test]
async fn exemptions_skip_greylisting_and_are_counted() {
    let scenario = Scenario::new(
        r#"
        exempt_clients = ["198.51.100.0/24"]
        exempt_sender_domains = ["partner.example"]
        exempt_recipient_domains = ["abuse.rcpt.example"]
        spf_pass_domains = ["bigmail.example"]
        "#,
    );
    let cases = [
        (
            request("198.51.100.7", "x@any.example", "bob@rcpt.example"),
            Exemption::ClientNetwork,
        ),
        (
            request("192.0.2.1", "x@mail.partner.example", "bob@rcpt.example"),
            Exemption::SenderDomain,
        ),
        (
            request(
                "192.0.2.1",
                "x@any.example",
                "postmaster@abuse.rcpt.example",
            ),
            Exemption::RecipientDomain,
        ),
    ];
    for (mail, exemption) in &cases {
        assert_eq!(
            scenario.at(0, mail).await,
            Decision::Exempt {
                because: *exemption
            }
        );
    }
    let mut spf = request("192.0.2.1", "x@bigmail.example", "bob@rcpt.example");
    assert_eq!(scenario.at(0, &spf).await, defer(300), "SPF did not pass");
    spf.spf_passed = true;
    let spf_exempt = Decision::Exempt {
        because: Exemption::SpfPassedProvider,
    };
    assert_eq!(scenario.at(0, &spf).await, spf_exempt);
    assert_eq!(scenario.greylist.metrics().total(Outcome::Exempted), 4);
}

#[tokio::test]
async fn dnswl_listed_clients_skip_greylisting() {
    let scenario = Scenario::new("");
    let mut listed = baseline();
    listed.dnswl_listed = true;
    let exempt = Decision::Exempt {
        because: Exemption::DnsAllowlisted,
    };
    assert_eq!(scenario.at(0, &listed).await, exempt);
}

#[tokio::test]
async fn score_gating_greylists_only_mail_above_the_threshold() {
    let scenario = Scenario::new("only_above_score = 3.0");
    let mut mail = baseline();
    mail.score = Some(1.0);
    let exempt = Decision::Exempt {
        because: Exemption::ScoreNotAboveThreshold,
    };
    assert_eq!(scenario.at(0, &mail).await, exempt);
    mail.score = Some(4.5);
    assert_eq!(scenario.at(0, &mail).await, defer(300));
}

#[tokio::test]
async fn fcrdns_gating_greylists_only_clients_without_a_confirmed_name() {
    let scenario = Scenario::new("only_without_fcrdns = true");
    let named = baseline().with_client_name("mx1.sender.example");
    let exempt = Decision::Exempt {
        because: Exemption::ForwardConfirmedClient,
    };
    assert_eq!(scenario.at(0, &named).await, exempt);
    assert_eq!(scenario.at(0, &baseline()).await, defer(300));
}

#[tokio::test]
async fn metrics_count_each_outcome_and_the_retry_delays() {
    let scenario = Scenario::new("exempt_clients = [\"203.0.113.0/24\"]");
    scenario.at(0, &baseline()).await;
    scenario.at(10, &baseline()).await;
    scenario.at(700, &baseline()).await;
    scenario.at(800, &baseline()).await;
    scenario
        .at(
            800,
            &request("203.0.113.5", "a@b.example", "bob@rcpt.example"),
        )
        .await;

    let metrics = scenario.greylist.metrics();
    assert_eq!(metrics.total(Outcome::Deferred), 2);
    assert_eq!(metrics.total(Outcome::PassedOnRetry), 1);
    assert_eq!(metrics.total(Outcome::PassedAtOnce), 1);
    assert_eq!(metrics.total(Outcome::Exempted), 1);
    assert_eq!(metrics.delays_observed(0), 1);
    let text = metrics.render();
    let bucket = "moat_greylist_retry_delay_seconds_bucket{shard=\"embedded\",le=\"900\"} 1";
    assert!(text.contains(bucket), "{text}");
    assert!(text.contains("outcome=\"passed_on_retry\"} 1"), "{text}");
}

/// A store whose every call fails, as a shard refusing connections does.
struct DownStore;

impl Store for DownStore {
    fn shard_names(&self) -> Vec<String> {
        vec!["down".to_owned()]
    }

    fn shard_of(&self, _triplet: &Triplet) -> usize {
        0
    }

    fn decide<'a>(&'a self, _triplet: &'a Triplet, _rules: &'a Rules) -> StoreFuture<'a, Verdict> {
        let error = moat_greylist::EmbeddedStore::open(
            std::path::Path::new("/nonexistent-moat-dir/greylist.redb"),
            Arc::new(ManualClock::starting_at(T0)),
            Duration::from_secs(1),
        )
        .err()
        .expect("a file in a missing directory cannot be opened");
        Box::pin(async move { Err(error) })
    }

    fn expire<'a>(&'a self, _rules: &'a Rules) -> StoreFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }
}

#[tokio::test]
async fn failure_mode_decides_what_a_failing_store_answers() {
    let dir = TempDir::new("greylist-failure-mode");
    for (mode_text, mode, code) in [
        ("accept", FailureMode::Accept, None),
        ("tempfail", FailureMode::TempFail, Some(451)),
    ] {
        let section: GreylistSection =
            toml::from_str(&format!("failure_mode = \"{mode_text}\"")).expect("toml");
        let settings = section.validate(dir.path()).expect("valid");
        let greylist = Greylist::with_store(Arc::new(DownStore), &settings);
        let decision = greylist.check(&baseline()).await;
        assert_eq!(decision, Decision::Unavailable { mode });
        assert_eq!(decision.smtp_reply().map(|r| r.code), code);
        assert_eq!(greylist.metrics().total(Outcome::StoreFailed), 1);
    }
}
