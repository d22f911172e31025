//! Sync across the cluster, with real `moat dnsbl serve` nodes on loopback: subscribers
//! bootstrap with full copies, converge on a change of 1% moving a few percent of the bytes,
//! and keep answering from the old data when a delta arrives corrupt, cut or out of order.

#[path = "support/dnsbl_harness.rs"]
mod harness;
#[path = "support/dnsbl_sync_harness.rs"]
mod sync_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use harness::{Moat, TempDir, Via, dig, ip4_name};
use sync_harness::{
    DATASET, Node, Proxy, Tamper, ZONE, base_ip, changed_ip, in_runs, logged_field, number_of,
    wait_for, write_dataset,
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

/// The `[dnsbl]` section of a subscriber of `publisher` serving [`DATASET`] by a relative path,
/// with `extra` added to `[dnsbl]`.
fn subscriber_config(publisher: SocketAddr, extra: &str) -> String {
    format!(
        "[dnsbl]\nlisten = [\"127.0.0.1:0\"]\ncheck_interval = \"0\"\n{extra}\n\
         [[dnsbl.zone]]\nname = \"{ZONE}\"\ndatasets = [\"ip4set:{DATASET}\"]\n\
         [dnsbl.sync.subscribe]\npublisher = \"{publisher}\"\ninterval = \"1h\"\n\
         timeout = \"10s\"\n"
    )
}

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
    body.to_owned()
}

/// The value of the sample `name` (with its labels, if any) in a Prometheus text body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
}

/// The sum of `field` over every line of `log` with `message`.
fn logged_sum(log: &str, message: &str, field: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(message))
        .map(|l| number_of(l, field))
        .sum()
}

/// Waits until `log()` has a line with `message` and a field `addr`; returns that address.
fn logged_addr(log: impl Fn() -> String, message: &str) -> SocketAddr {
    let mut addr = None;
    wait_for(message, Duration::from_secs(20), || {
        addr = logged_field(&log(), message, "addr").and_then(|a| a.parse().ok());
        addr.is_some()
    });
    addr.expect("waited for")
}

#[test]
fn moat_dnsbl_serve_reports_the_sync_counters_on_its_metrics_endpoint() {
    let publisher = publisher("sync-metrics-pub", SMALL, "");
    let dir = TempDir::new("sync-metrics-sub");
    let config = dir.path().join("moat.toml");
    let section = subscriber_config(
        publisher.sync_addr.expect("publishing"),
        "metrics_listen = \"127.0.0.1:0\"",
    );
    std::fs::write(&config, section).expect("write the configuration");
    let node = Moat::start(&[format!("--config={}", config.display())]);
    let metrics = logged_addr(|| node.log(), "metrics listening");

    // The bootstrap pull: a full copy, counted as one update.
    let body = scrape(metrics);
    let moved = logged_sum(&node.log(), "dnsbl sync done", "bytes_moved");
    let size = std::fs::metadata(&publisher.dataset)
        .expect("the dataset")
        .len();
    assert!(
        moved >= size,
        "a bootstrap moves the whole file: {moved} < {size}"
    );
    assert_eq!(sample(&body, "moat_dnsbl_sync_bytes_moved_total"), moved);
    assert_eq!(sample(&body, "moat_dnsbl_sync_full_bytes_total"), size);
    assert_eq!(
        sample(&body, "moat_dnsbl_sync_total{outcome=\"updated\"}"),
        1
    );

    // A change, pulled on SIGHUP, adds its delta's bytes and a second update.
    write_dataset(&publisher.dataset, SMALL, |i| i < 100);
    let before = node
        .log()
        .lines()
        .filter(|l| l.contains("dnsbl sync done"))
        .count();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for("the second pull", Duration::from_secs(30), || {
        node.log()
            .lines()
            .filter(|l| l.contains("dnsbl sync done"))
            .count()
            > before
    });
    let body = scrape(metrics);
    let moved_now = logged_sum(&node.log(), "dnsbl sync done", "bytes_moved");
    assert!(moved_now > moved);
    assert_eq!(
        sample(&body, "moat_dnsbl_sync_bytes_moved_total"),
        moved_now
    );
    assert_eq!(
        sample(&body, "moat_dnsbl_sync_total{outcome=\"updated\"}"),
        2
    );
    assert!(lists(node.addr, &changed_ip(7)), "{}", node.log());
}

/// Whether the DNS server at `addr` lists `ip` in [`ZONE`].
fn lists(addr: SocketAddr, ip: &str) -> bool {
    dig(addr, &ip4_name(ip, ZONE), "A", Via::Udp).listed()
}

/// `moat serve` run from a working directory other than its configuration's, stopped by its
/// process id on drop.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Gateway {
    fn start(config: &Path, cwd: &Path) -> Gateway {
        let log = config.with_file_name("moat.log");
        let out = std::fs::File::create(&log).expect("create the log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .expect("start moat serve");
        Gateway { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn moat_serve_reads_datasets_beside_its_config_and_reports_the_sync_on_metrics() {
    let publisher = publisher("serve-metrics-pub", SMALL, "");
    let home = TempDir::new("serve-metrics-home");
    let elsewhere = TempDir::new("serve-metrics-cwd");
    let data_dir = home.path().join("data");
    let config = home.path().join("moat.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n[metrics]\n\
             listen = \"127.0.0.1:0\"\n{}",
            data_dir.display(),
            subscriber_config(publisher.sync_addr.expect("publishing"), "")
        ),
    )
    .expect("write the configuration");
    let gateway = Gateway::start(&config, elsewhere.path());
    let dns = logged_addr(|| gateway.log(), "dnsbl listening");
    let metrics = logged_addr(|| gateway.log(), "metrics listening");

    // The relative dataset path is the configuration's directory's, not the working one's.
    assert!(lists(dns, &base_ip(7)), "{}", gateway.log());
    assert_eq!(
        std::fs::read(home.path().join(DATASET)).expect("the copy beside the config"),
        std::fs::read(&publisher.dataset).expect("the original")
    );
    assert!(!elsewhere.path().join(DATASET).exists());

    // The bootstrap's bytes are on /metrics beside the gateway's counters.
    let body = scrape(metrics);
    let moved = logged_sum(&gateway.log(), "dnsbl sync done", "bytes_moved");
    assert!(moved > 0, "{}", gateway.log());
    assert_eq!(sample(&body, "moat_dnsbl_sync_bytes_moved_total"), moved);
    assert_eq!(
        sample(&body, "moat_dnsbl_sync_total{outcome=\"updated\"}"),
        1
    );
}
