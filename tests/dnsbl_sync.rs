//! Sync across the cluster, with real `moat dnsbl serve` nodes on loopback: subscribers
//! bootstrap with full copies, converge on a change of 1% moving a few percent of the bytes,
//! and keep answering from the old data when a delta arrives corrupt, cut or out of order.

#[path = "support/dnsbl_harness.rs"]
mod harness;
#[path = "support/dnsbl_sync_harness.rs"]
mod sync_harness;

use std::time::Duration;

use harness::TempDir;
use sync_harness::{
    DATASET, Node, Proxy, Tamper, base_ip, changed_ip, in_runs, number_of, wait_for, write_dataset,
};

/// Lines of the large dataset: 200,000 addresses, about 2.8 MB.
const LARGE: u32 = 200_000;

/// Lines of the datasets of the failure tests, small enough to load at once.
const SMALL: u32 = 20_000;

/// A change of 1%: 20 runs of 100 lines, spread over the file.
fn one_percent(i: u32) -> bool {
    in_runs(i, LARGE, 20, 100)
}

/// The first line of the first run of [`one_percent`].
const FIRST_CHANGED: u32 = LARGE / 20 / 2;

/// A publisher of `lines` base addresses.
fn publisher(label: &str, lines: u32, extra: &str) -> Node {
    let dir = TempDir::new(label);
    write_dataset(&dir.path().join(DATASET), lines, |_| false);
    Node::publisher(dir, extra)
}

#[test]
fn two_subscribers_bootstrap_then_converge_on_a_one_percent_change_moving_under_5_percent() {
    let publisher = publisher("sync-pub", LARGE, "");
    let upstream = publisher.sync_addr.expect("publishing");
    let subscribers = [
        Node::subscriber(TempDir::new("sync-sub1"), upstream, "1h"),
        Node::subscriber(TempDir::new("sync-sub2"), upstream, "1h"),
    ];

    // A new node has no copy: its first pull, before it loads, is the whole file.
    for node in &subscribers {
        assert!(node.lists(&base_ip(FIRST_CHANGED)), "{}", node.log());
        let line = &node.lines("dataset synced")[0];
        let full = number_of(line, "full_size");
        assert!(number_of(line, "bytes_moved") >= full, "{line}");
        assert_eq!(
            std::fs::read(&node.dataset).expect("the copy"),
            std::fs::read(&publisher.dataset).expect("the original")
        );
    }

    write_dataset(&publisher.dataset, LARGE, one_percent);
    for node in &subscribers {
        let line = node.pull_until_logged("dataset synced");
        let (moved, full) = (
            number_of(&line, "bytes_moved"),
            number_of(&line, "full_size"),
        );
        eprintln!(
            "1% change: {moved} of {full} bytes moved ({:.2}%)",
            moved as f64 * 100.0 / full as f64
        );
        assert!(moved * 20 < full, "more than 5% moved: {line}");
        assert!(node.lists(&changed_ip(FIRST_CHANGED)), "{}", node.log());
        assert!(!node.lists(&base_ip(FIRST_CHANGED)), "{}", node.log());
        assert_eq!(
            std::fs::read(&node.dataset).expect("the copy"),
            std::fs::read(&publisher.dataset).expect("the original")
        );
    }

    // Nothing changed since: the next pull moves the listing alone.
    let line = subscribers[0].pull_until_logged("dnsbl sync done");
    assert_eq!(number_of(&line, "updated"), 0, "{line}");
    assert!(number_of(&line, "bytes_moved") < 1000, "{line}");
}

/// Starts a publisher and a subscriber that pulls through a proxy, lets the subscriber
/// bootstrap, then changes the publisher's first run of lines.
fn behind_a_proxy(label: &str) -> (Node, Proxy, Node) {
    let publisher = publisher(&format!("{label}-pub"), SMALL, "");
    let proxy = Proxy::start(publisher.sync_addr.expect("publishing"));
    let subscriber = Node::subscriber(TempDir::new(&format!("{label}-sub")), proxy.addr, "1h");
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());
    write_dataset(&publisher.dataset, SMALL, |i| i < 1000);
    (publisher, proxy, subscriber)
}

/// Makes `subscriber` pull, expects `outcome` logged, and the old data still answering.
fn rejected_with(subscriber: &Node, outcome: &str) {
    let line = subscriber.pull_until_logged(&format!("outcome={outcome}"));
    assert!(line.contains("current data kept"), "{line}");
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());
    assert!(!subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
}

#[test]
fn a_corrupted_delta_is_rejected_and_the_old_zone_still_answers() {
    let (_publisher, proxy, subscriber) = behind_a_proxy("sync-corrupt");

    // Damage the frame's CRC-32 catches.
    proxy.set(Tamper::Flip);
    rejected_with(&subscriber, "frame_corrupt");

    // Damage only the SHA-256 of the rebuilt file can catch.
    proxy.set(Tamper::FlipResealed);
    rejected_with(&subscriber, "checksum_mismatch");

    // The next clean pull goes through.
    proxy.set(Tamper::Pass);
    subscriber.pull_until_logged("dataset synced");
    assert!(subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
}

#[test]
fn a_truncated_delta_is_rejected_and_the_old_zone_still_answers() {
    let (_publisher, proxy, subscriber) = behind_a_proxy("sync-cut");
    proxy.set(Tamper::Truncate);
    rejected_with(&subscriber, "truncated");
}

#[test]
fn an_out_of_order_delta_is_rejected_and_the_newer_zone_still_answers() {
    let (publisher, proxy, subscriber) = behind_a_proxy("sync-replay");
    // The proxy kept the bootstrap's delta (the first version); the subscriber now takes the
    // second.
    subscriber.pull_until_logged("dataset synced");
    assert!(subscriber.lists(&changed_ip(500)), "{}", subscriber.log());

    // A third version is published, but the first one's delta is replayed in its place.
    write_dataset(&publisher.dataset, SMALL, |i| i < 2000);
    proxy.set(Tamper::ReplayFirst);
    let line = subscriber.pull_until_logged("outcome=out_of_order");
    assert!(line.contains("is older than the copy held"), "{line}");
    assert!(subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
    assert!(!subscriber.lists(&changed_ip(1500)), "{}", subscriber.log());
}

#[test]
fn a_feed_dropped_in_by_rsync_is_reloaded_and_reaches_subscribers_on_their_interval() {
    let publisher = publisher("sync-rsync-pub", SMALL, "");
    let subscriber = Node::subscriber(
        TempDir::new("sync-rsync-sub"),
        publisher.sync_addr.expect("addr"),
        "1s",
    );
    assert!(subscriber.lists(&base_ip(7)), "{}", subscriber.log());

    // A vendor's feed arrives by rsync, which writes a hidden file and renames it into place.
    let staging = TempDir::new("sync-rsync-feed");
    let feed = staging.path().join(DATASET);
    write_dataset(&feed, SMALL, |i| i == 7);
    let status = std::process::Command::new("rsync")
        .arg(&feed)
        .arg(&publisher.dataset)
        .status()
        .expect("run rsync (scripts/setup installs it)");
    assert!(status.success());

    wait_for(
        "the publisher to reload the feed",
        Duration::from_secs(20),
        || publisher.lists(&changed_ip(7)),
    );
    wait_for(
        "the subscriber's scheduled pull",
        Duration::from_secs(20),
        || subscriber.lists(&changed_ip(7)),
    );
    assert!(!subscriber.lists(&base_ip(7)), "{}", subscriber.log());
}

#[test]
fn a_subscriber_outside_allow_is_refused_and_keeps_its_copy() {
    let publisher = publisher("sync-allow-pub", SMALL, "allow = [\"192.0.2.0/24\"]");
    let dir = TempDir::new("sync-allow-sub");
    write_dataset(&dir.path().join(DATASET), SMALL, |i| i == 3);
    let subscriber = Node::subscriber(dir, publisher.sync_addr.expect("addr"), "1h");

    let line = &subscriber.lines("dnsbl sync failed")[0];
    assert!(
        line.contains("outcome=refused") && line.contains("not_allowed"),
        "{line}"
    );
    assert!(subscriber.lists(&changed_ip(3)), "{}", subscriber.log());
    assert!(
        !publisher.lines("sync client refused").is_empty(),
        "{}",
        publisher.log()
    );
}
