//! Every row of shared/cases/greylist.md: postgrey 1.37's observed answers over the policy
//! protocol, replayed against Moat's greylist with an injected clock (G19, G21 and G22 over a
//! real socket).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use moat_greylist::{
    EmbeddedStore, Greylist, GreylistSection, GreylistSettings, ManualClock, Outcome,
    PolicyService, Rules, Store, StoreFuture, Triplet, TripletRequest, Verdict,
};

#[path = "support/greylist_harness.rs"]
mod harness;
use harness::{PolicyClient, postfix_request, wire};

/// t0 of every scenario: any fixed instant will do.
const T0: u64 = 1_767_225_600;
const TWO_DAYS: u64 = 2 * 24 * 3600;
const HOST: &str = "mx.rcpt.example";

/// A fresh greylist with postgrey's profile, its clock standing at t0.
struct Scenario {
    clock: ManualClock,
    greylist: Arc<Greylist>,
    _dir: TempDir,
}

fn settings(dir: &TempDir) -> GreylistSettings {
    let mut settings = GreylistSection::default()
        .validate(dir.path())
        .expect("the defaults are valid");
    settings.hostname = HOST.to_owned();
    settings
}

impl Scenario {
    fn new() -> Scenario {
        let dir = TempDir::new("greylist-cases");
        let clock = ManualClock::starting_at(T0);
        let settings = settings(&dir);
        let path = dir.path().join("greylist.redb");
        let store = EmbeddedStore::open(&path, Arc::new(clock.clone()), Duration::from_secs(1))
            .expect("open the embedded store");
        let greylist = Arc::new(Greylist::with_store(Arc::new(store), &settings));
        Scenario {
            clock,
            greylist,
            _dir: dir,
        }
    }

    /// The policy action for one attempt at t0 + `offset`.
    async fn at(&self, offset: u64, client: &str, sender: &str, recipient: &str) -> String {
        self.clock.set(T0 + offset);
        let ip = client.parse().expect("a test address");
        let request =
            TripletRequest::new(ip, sender, recipient).with_client_name("mx1.sender.example");
        let decision = self.greylist.check(&request).await;
        decision.policy_action(HOST)
    }

    async fn baseline(&self, offset: u64) -> String {
        self.at(
            offset,
            "192.0.2.10",
            "alice@sender.example",
            "bob@rcpt.example",
        )
        .await
    }

    /// Serves the policy protocol from this scenario's greylist on a loopback port.
    async fn serve(&self) -> SocketAddr {
        serve(Arc::clone(&self.greylist)).await
    }
}

async fn serve(greylist: Arc<Greylist>) -> SocketAddr {
    let addr = "127.0.0.1:0".parse().expect("an address");
    let service = PolicyService::bind(addr, greylist)
        .await
        .expect("bind the policy service");
    let addr = service.local_addr().expect("bound address");
    tokio::spawn(service.serve());
    addr
}

fn assert_defer(action: &str, retry_after: u64) {
    let expected =
        format!("DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in {retry_after} seconds");
    assert_eq!(action, expected);
}

fn assert_pass_with_header(action: &str, delayed: u64) {
    let expected = format!("PREPEND X-Greylist: delayed {delayed} seconds by Moat at {HOST}");
    assert_eq!(action, expected);
}

#[tokio::test]
async fn g01_first_attempt_is_deferred_saying_when_to_retry() {
    let scenario = Scenario::new();
    assert_defer(&scenario.baseline(0).await, 300);
}

#[tokio::test]
async fn g02_early_retry_is_deferred() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    assert_defer(&scenario.baseline(299).await, 1);
}

#[tokio::test]
async fn g03_retry_after_exactly_the_delay_passes_with_a_header() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    scenario.baseline(299).await;
    assert_pass_with_header(&scenario.baseline(300).await, 300);
}

#[tokio::test]
async fn g04_passed_triplet_is_dunno_without_a_second_header() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    scenario.baseline(300).await;
    assert_eq!(scenario.baseline(400).await, "DUNNO");
}

#[tokio::test]
async fn g05_same_slash_24_client_passes() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    scenario.baseline(300).await;
    let action = scenario
        .at(
            500,
            "192.0.2.77",
            "alice@sender.example",
            "bob@rcpt.example",
        )
        .await;
    assert_eq!(action, "DUNNO");
}

#[tokio::test]
async fn g06_another_slash_24_is_deferred() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    scenario.baseline(300).await;
    let action = scenario
        .at(
            600,
            "192.0.3.10",
            "alice@sender.example",
            "bob@rcpt.example",
        )
        .await;
    assert_defer(&action, 300);
}

#[tokio::test]
async fn g07_keys_are_case_insensitive() {
    let scenario = Scenario::new();
    scenario.baseline(0).await;
    scenario.baseline(300).await;
    let action = scenario
        .at(
            700,
            "192.0.2.10",
            "ALICE@Sender.Example",
            "BOB@RCPT.example",
        )
        .await;
    assert_eq!(action, "DUNNO");
}

#[tokio::test]
async fn g08_plus_extensions_are_stripped() {
    let scenario = Scenario::new();
    let first = scenario.at(
        800,
        "192.0.2.10",
        "carol+list123@sender.example",
        "bob@rcpt.example",
    );
    assert_defer(&first.await, 300);
    let retry = scenario.at(
        1100,
        "192.0.2.10",
        "carol+other@sender.example",
        "bob@rcpt.example",
    );
    assert_pass_with_header(&retry.await, 300);
}

#[tokio::test]
async fn g09_verp_numbers_are_normalised() {
    let scenario = Scenario::new();
    let first = scenario.at(
        0,
        "192.0.2.10",
        "bounce-12345@list.example",
        "bob@rcpt.example",
    );
    assert_defer(&first.await, 300);
    let retry = scenario.at(
        301,
        "192.0.2.10",
        "bounce-67890@list.example",
        "bob@rcpt.example",
    );
    assert_pass_with_header(&retry.await, 301);
}

#[tokio::test]
async fn g10_null_sender_is_its_own_key() {
    let scenario = Scenario::new();
    assert_defer(
        &scenario.at(0, "192.0.2.10", "", "bob@rcpt.example").await,
        300,
    );
    let retry = scenario.at(300, "192.0.2.10", "", "bob@rcpt.example").await;
    assert_pass_with_header(&retry, 300);
    // A named sender from the same client is not the null sender's triplet.
    let named = scenario.at(
        301,
        "192.0.2.10",
        "alice@sender.example",
        "bob@rcpt.example",
    );
    assert_defer(&named.await, 300);
}

#[tokio::test]
async fn g11_ipv6_clients_group_by_slash_64() {
    let scenario = Scenario::new();
    let (from, to) = ("v6@sender.example", "bob@rcpt.example");
    assert_defer(&scenario.at(0, "2001:db8:1:2::10", from, to).await, 300);
    assert_pass_with_header(&scenario.at(300, "2001:db8:1:2::99", from, to).await, 300);
    assert_defer(&scenario.at(400, "2001:db8:1:3::10", from, to).await, 300);
}

#[tokio::test]
async fn g12_retry_after_the_window_starts_over() {
    let scenario = Scenario::new();
    let (client, from, to) = ("192.0.2.10", "late@sender.example", "bob@rcpt.example");
    assert_defer(&scenario.at(0, client, from, to).await, 300);
    let late = TWO_DAYS + 1;
    assert_defer(&scenario.at(late, client, from, to).await, 300);
    assert_pass_with_header(&scenario.at(late + 300, client, from, to).await, 300);
}

#[tokio::test]
async fn g19_crlf_framed_request_gets_a_normal_reply() {
    let scenario = Scenario::new();
    let addr = scenario.serve().await;
    let reply = tokio::task::spawn_blocking(move || {
        let mut client = PolicyClient::connect(addr);
        let request = postfix_request(
            "192.0.2.10",
            "alice@sender.example",
            "bob@rcpt.example",
            "1",
        );
        client.send(&wire(&request, "\r\n"));
        client.read_reply()
    })
    .await
    .expect("client thread");
    let action = reply.strip_prefix("action=").expect("an action line");
    assert_defer(action.trim_end_matches('\r'), 300);
}

#[tokio::test]
async fn g21_two_requests_back_to_back_get_two_replies_in_order() {
    let scenario = Scenario::new();
    let addr = scenario.serve().await;
    let clock = scenario.clock.clone();
    let (first, second, third) = tokio::task::spawn_blocking(move || {
        let mut client = PolicyClient::connect(addr);
        let known = postfix_request(
            "192.0.2.10",
            "alice@sender.example",
            "bob@rcpt.example",
            "1",
        );
        let other = postfix_request("192.0.2.10", "dave@sender.example", "bob@rcpt.example", "2");
        // Both requests in one write: the second must wait for the first's reply, in order.
        let mut both = wire(&known, "\n");
        both.extend(wire(&other, "\n"));
        client.send(&both);
        let first = client.read_reply();
        let second = client.read_reply();
        // The connection stays open for a third.
        clock.advance(300);
        let third = client.ask(&known);
        (first, second, third)
    })
    .await
    .expect("client thread");
    assert_eq!(
        first,
        "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds"
    );
    assert_eq!(second, first);
    assert_pass_with_header(&third, 300);
}

/// A store whose shard never answers: a MySQL server that accepted the connection and hung.
struct HungStore;

impl Store for HungStore {
    fn shard_names(&self) -> Vec<String> {
        vec!["hung".to_owned()]
    }

    fn shard_of(&self, _triplet: &Triplet) -> usize {
        0
    }

    fn decide<'a>(&'a self, _triplet: &'a Triplet, _rules: &'a Rules) -> StoreFuture<'a, Verdict> {
        Box::pin(std::future::pending())
    }

    fn expire<'a>(&'a self, _rules: &'a Rules) -> StoreFuture<'a, u64> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn g22_a_hung_store_gets_dunno_within_the_budget_and_is_counted() {
    let dir = TempDir::new("greylist-g22");
    let mut settings = settings(&dir);
    settings.budget = Duration::from_millis(300);
    let greylist = Arc::new(Greylist::with_store(Arc::new(HungStore), &settings));
    let addr = serve(Arc::clone(&greylist)).await;

    let (action, elapsed) = tokio::task::spawn_blocking(move || {
        let mut client = PolicyClient::connect(addr);
        let request = postfix_request(
            "192.0.2.10",
            "alice@sender.example",
            "bob@rcpt.example",
            "1",
        );
        let start = Instant::now();
        let action = client.ask(&request);
        (action, start.elapsed())
    })
    .await
    .expect("client thread");
    assert_eq!(action, "DUNNO");
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the budget: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1_500),
        "answered late: {elapsed:?}"
    );
    assert_eq!(greylist.metrics().total(Outcome::StoreFailed), 1);
    assert_eq!(greylist.metrics().total(Outcome::Deferred), 0);
}
