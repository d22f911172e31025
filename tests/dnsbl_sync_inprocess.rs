//! Sync in one process, through the library: a [`Publisher`] and a [`Subscriber`] on loopback,
//! the subscriber's [`Zones`] answering the new data, its metrics counting the bytes moved, and
//! the bytes a change costs depending on how it is spread over the file.

#[path = "support/dnsbl_harness.rs"]
mod harness;
#[path = "support/dnsbl_sync_harness.rs"]
mod sync_harness;

use std::path::Path;
use std::time::Duration;

use harness::TempDir;
use moat_dnsbl::{
    Network, PublishSettings, Publisher, Settings, SubscribeSettings, Subscriber, SyncOutcome,
    ZoneSpec, Zones,
};
use sync_harness::{DATASET, ZONE, base_ip, changed_ip, in_runs, write_dataset};

/// Lines of the dataset: 200,000 addresses, about 2.8 MB.
const LINES: u32 = 200_000;

fn zone(file: &Path) -> Vec<ZoneSpec> {
    let spec = format!("{ZONE}:ip4set:{}", file.display());
    vec![ZoneSpec::parse_rbldnsd(&spec).expect("a zone")]
}

/// A publisher of `file` on a loopback port, serving in the background.
async fn publish(file: &Path) -> String {
    let settings = PublishSettings {
        listen: vec!["127.0.0.1:0".parse().expect("an address")],
        allow: vec![Network::parse("127.0.0.1").expect("a network")],
        key: None,
    };
    let publisher = Publisher::bind(&settings, &zone(file))
        .await
        .expect("binds");
    let addr = publisher.local_addrs()[0];
    tokio::spawn(publisher.serve());
    addr.to_string()
}

fn subscriber(publisher: String, file: &Path) -> Subscriber {
    let settings = SubscribeSettings {
        publisher,
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(10),
        key: None,
    };
    Subscriber::new(&settings, &zone(file))
}

fn lists(zones: &Zones, ip: &str) -> bool {
    zones
        .lookup_ip(ZONE, ip.parse().expect("an address"))
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reloads_its_zones_and_counts_the_bytes_in_its_metrics() {
    let (origin, copy) = (TempDir::new("inproc-pub"), TempDir::new("inproc-sub"));
    let (original, local) = (origin.path().join(DATASET), copy.path().join(DATASET));
    write_dataset(&original, LINES, |_| false);
    let subscriber = subscriber(publish(&original).await, &local);

    let bootstrap = subscriber.pull(None).await.expect("bootstraps");
    assert_eq!(bootstrap.updated, 1);
    let settings = Settings::quick(&["127.0.0.1:0".into()], zone(&local)).expect("settings");
    let zones = tokio::task::spawn_blocking(move || Zones::load(&settings))
        .await
        .expect("loads")
        .expect("loads");
    assert!(lists(&zones, &base_ip(42)));

    write_dataset(&original, LINES, |i| in_runs(i, LINES, 20, 100));
    let update = subscriber.pull(Some(&zones)).await.expect("pulls");
    assert_eq!((update.updated, update.rejected), (1, 0));
    let first_changed = LINES / 20 / 2;
    assert!(lists(&zones, &changed_ip(first_changed)));
    assert!(!lists(&zones, &base_ip(first_changed)));

    let metrics = subscriber.metrics();
    assert_eq!(metrics.total(SyncOutcome::Updated), 2);
    assert_eq!(
        metrics.bytes_moved(),
        bootstrap.bytes_moved + update.bytes_moved
    );
    let full = std::fs::metadata(&original).expect("the file").len();
    assert!(metrics.full_bytes() > full, "two versions installed");
    assert!(update.bytes_moved * 20 < full, "{update:?} of {full}");
    assert!(metrics.render().contains(&format!(
        "moat_dnsbl_sync_bytes_moved_total {}",
        metrics.bytes_moved()
    )));
}

/// A deterministic scatter of about one line in a hundred.
fn scattered(i: u32) -> bool {
    i.wrapping_mul(2_654_435_761).is_multiple_of(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_a_change_moves_grow_with_how_scattered_it_is() {
    let (origin, copy) = (
        TempDir::new("inproc-cost-pub"),
        TempDir::new("inproc-cost-sub"),
    );
    let (original, local) = (origin.path().join(DATASET), copy.path().join(DATASET));
    write_dataset(&original, LINES, |_| false);
    let subscriber = subscriber(publish(&original).await, &local);
    let bootstrap = subscriber.pull(None).await.expect("bootstraps");
    let full = std::fs::metadata(&original).expect("the file").len();
    assert!(bootstrap.bytes_moved < full + full / 100, "{bootstrap:?}");

    // Each change is made from the base version, which the subscriber gets back after it.
    type Change = (&'static str, fn(u32) -> bool, f64);
    let changes: [Change; 5] = [
        ("one line", |i| i == LINES / 2, 1.0),
        (
            "1%, one run",
            |i| (LINES / 2..LINES / 2 + LINES / 100).contains(&i),
            2.5,
        ),
        (
            "1%, 20 runs of 100 lines",
            |i| in_runs(i, LINES, 20, 100),
            5.0,
        ),
        (
            "10%, 20 runs of 1000 lines",
            |i| in_runs(i, LINES, 20, 1000),
            15.0,
        ),
        ("1%, single lines scattered", scattered, 101.0),
    ];
    eprintln!("| change ({full} bytes) | bytes moved | of the file |");
    eprintln!("|---|---:|---:|");
    eprintln!("| no copy yet | {} | |", bootstrap.bytes_moved);
    for (label, change, bound) in changes {
        write_dataset(&original, LINES, change);
        let summary = subscriber.pull(None).await.expect("pulls");
        assert_eq!(summary.updated, 1, "{label}");
        let percent = summary.bytes_moved as f64 * 100.0 / full as f64;
        eprintln!("| {label} | {} | {percent:.2}% |", summary.bytes_moved);
        assert!(
            percent < bound,
            "{label}: {percent:.2}% moved, more than {bound}%"
        );

        write_dataset(&original, LINES, |_| false);
        subscriber.pull(None).await.expect("pulls back");
    }
    let unchanged = subscriber.pull(None).await.expect("pulls");
    eprintln!("| nothing | {} | |", unchanged.bytes_moved);
    assert_eq!((unchanged.updated, unchanged.unchanged), (0, 1));
}
