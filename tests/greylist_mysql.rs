//! The MySQL backend against real MariaDB servers: three shard primaries and one replica,
//! started by the test from their own data directories on loopback ports.
//!
//! Covers where keys are placed, reads from the replica and the fall back to the primary, a
//! lagging replica (its records are checked before a write relies on them), a shard going down
//! and coming back, two nodes racing on one new triplet (with and without a replica), the
//! auto-whitelist read with the triplet or from another shard, bulk expiry by dropping daily
//! partitions, and `moat greylist policy` keeping state across a restart.

mod common;

use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::TempDir;
use moat_greylist::{
    Decision, Greylist, GreylistSection, Known, Outcome, Placement, SystemClock, Triplet,
    TripletRequest,
};

#[path = "support/greylist_mariadb.rs"]
mod mariadb;
use mariadb::Mariadb;

#[path = "support/greylist_harness.rs"]
mod harness;
use harness::{PolicyProcess, postfix_request};

const SHARDS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// The three primaries and the replica of the first, shared by the tests of this file; each
/// test uses its own triplets, so they run side by side.
struct Cluster {
    primaries: Vec<Mariadb>,
    replica: Mariadb,
    _dir: TempDir,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = TempDir::new("greylist-mariadb");
        let primaries: Vec<Mariadb> = SHARDS
            .iter()
            .enumerate()
            .map(|(i, name)| Mariadb::start(dir.path(), name, i as u32 + 1))
            .collect();
        let replica = Mariadb::start_replica(dir.path(), "alpha-replica", 10, &primaries[0]);
        // A static is never dropped: remove the directory once this test process is gone.
        if std::env::var_os("MOAT_TEST_KEEP").is_none() {
            let cleanup = format!(
                "while kill -0 {} 2>/dev/null; do sleep 0.5; done; sleep 2; rm -rf '{}'",
                std::process::id(),
                dir.path().display()
            );
            let _ = std::process::Command::new("sh")
                .args(["-c", &cleanup])
                .stdin(std::process::Stdio::null())
                .spawn();
        }
        Cluster {
            primaries,
            replica,
            _dir: dir,
        }
    })
}

/// The `[greylist]` body for the shared cluster, with a short delay.
fn cluster_section(extra: &str) -> String {
    cluster_section_with_delay(extra, "1s")
}

/// The section with a greylist delay of its own, for tests that must not see a retry pass
/// however slowly a loaded machine runs them.
fn cluster_section_with_delay(extra: &str, delay: &str) -> String {
    let cluster = cluster();
    let mut section = format!(
        "store = \"mysql\"\ndelay = \"{delay}\"\nretry_window = \"2h\"\nmax_age = \"1d\"\n{extra}\n"
    );
    for (i, name) in SHARDS.iter().enumerate() {
        section.push_str(&format!(
            "[[shard]]\nname = \"{name}\"\nprimary = \"{}\"\n",
            cluster.primaries[i].url()
        ));
        if i == 0 {
            section.push_str(&format!("replicas = [\"{}\"]\n", cluster.replica.url()));
        }
    }
    section
}

async fn open_greylist(section: &str) -> Greylist {
    let dir = std::env::temp_dir();
    let section: GreylistSection = toml::from_str(section).expect("a valid [greylist] body");
    let settings = section.validate(&dir).expect("valid settings");
    Greylist::open(&settings, Arc::new(SystemClock))
        .await
        .expect("open the MySQL store")
}

fn request(sender: &str) -> TripletRequest {
    TripletRequest::new(
        "192.0.2.10".parse().expect("ip"),
        sender,
        "bob@rcpt.example",
    )
}

fn rows(server: &Mariadb, sender_like: &str) -> usize {
    let count = server.sql(&format!(
        "SELECT COUNT(*) FROM moat.greylist_triplets WHERE triplet LIKE '%{sender_like}%'"
    ));
    count.parse().expect("a count")
}

fn is_defer(decision: &Decision) -> bool {
    matches!(decision, Decision::Defer { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triplets_land_on_the_shard_their_rendezvous_hash_names() {
    let greylist = open_greylist(&cluster_section("auto_whitelist_clients = 0")).await;
    let placement = Placement::new(&SHARDS.map(str::to_owned));
    let mut per_shard = [0; 3];
    for i in 0..30 {
        let sender = format!("place{i}x@sender.example");
        assert!(is_defer(&greylist.check(&request(&sender)).await));
        let triplet = Triplet::from_request(&request(&sender), &Default::default());
        let owner = placement.shard_of(&triplet.key());
        per_shard[owner] += 1;
        for (shard, server) in cluster().primaries.iter().enumerate() {
            let expected = usize::from(shard == owner);
            assert_eq!(
                rows(server, &format!("place{i}x@")),
                expected,
                "{sender} on shard {shard}"
            );
        }
        assert_eq!(
            greylist.metrics().outcome_count(owner, Outcome::Deferred),
            per_shard[owner] as u64
        );
    }
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "30 triplets should reach all 3 shards: {per_shard:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_fall_back_to_the_primary() {
    let greylist = open_greylist(&cluster_section_with_delay(
        "auto_whitelist_clients = 0",
        "1h",
    ))
    .await;
    let placement = Placement::new(&SHARDS.map(str::to_owned));
    // A triplet of shard alpha, the one with a replica.
    let sender = (0..)
        .map(|i| format!("replica{i}x@sender.example"))
        .find(|s| {
            placement.shard_of(&Triplet::from_request(&request(s), &Default::default()).key()) == 0
        })
        .expect("some sender lands on alpha");
    assert!(is_defer(&greylist.check(&request(&sender)).await));

    // Mark it passed on the replica only: a pass at once can then only come from the replica.
    let cluster = cluster();
    wait_for(
        || rows(&cluster.replica, &sender) == 1,
        "the row to replicate",
    );
    cluster.replica.sql(&format!(
        "SET SESSION sql_log_bin = 0; UPDATE moat.greylist_triplets SET passed = 1
         WHERE triplet LIKE '%{sender}%'"
    ));
    let known = Decision::PassAtOnce {
        because: Known::Triplet,
    };
    assert_eq!(greylist.check(&request(&sender)).await, known);
    let on_primary = cluster.primaries[0].sql(&format!(
        "SELECT passed FROM moat.greylist_triplets WHERE triplet LIKE '%{sender}%'"
    ));
    assert_eq!(
        on_primary, "0",
        "the replica's row must not have been written to the primary"
    );

    // A replica that refuses connections: reads fall back to alpha's primary.
    let dead = format!("mysql://moat:moat@127.0.0.1:{}/moat", common::free_port());
    let section = cluster_section_with_delay("auto_whitelist_clients = 0", "1h").replacen(
        &cluster.replica.url(),
        &dead,
        1,
    );
    let fallback = open_greylist(&section).await;
    let decision = fallback.check(&request(&sender)).await;
    assert!(
        is_defer(&decision),
        "the primary's row says not passed: {decision:?}"
    );
    assert_eq!(fallback.metrics().total(Outcome::StoreFailed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_seeing_a_new_triplet_at_once_leave_one_row() {
    let section = cluster_section("auto_whitelist_clients = 0");
    let (node_a, node_b) = (
        Arc::new(open_greylist(&section).await),
        Arc::new(open_greylist(&section).await),
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 {
            Arc::clone(&node_a)
        } else {
            Arc::clone(&node_b)
        };
        tasks.push(tokio::spawn(async move {
            node.check(&request("race@sender.example")).await
        }));
    }
    for task in tasks {
        assert!(is_defer(&task.await.expect("join")));
    }
    let total: usize = cluster()
        .primaries
        .iter()
        .map(|s| rows(s, "race@sender"))
        .sum();
    assert_eq!(total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_days_go_by_dropping_their_partitions() {
    let greylist = open_greylist(&cluster_section("auto_whitelist_clients = 0")).await;
    for i in 0..12 {
        greylist
            .check(&request(&format!("fresh{i}x@sender.example")))
            .await;
    }
    // Give each shard a partition from 100 days ago holding one old row.
    for server in &cluster().primaries {
        let today: i64 = server
            .sql("SELECT UNIX_TIMESTAMP() DIV 86400")
            .parse()
            .expect("a day");
        let lowest: i64 = server
            .sql(
                "SELECT MIN(PARTITION_DESCRIPTION + 0) FROM information_schema.PARTITIONS
                  WHERE TABLE_SCHEMA = 'moat' AND TABLE_NAME = 'greylist_triplets'
                  AND PARTITION_DESCRIPTION <> 'MAXVALUE'",
            )
            .parse()
            .expect("a partition bound");
        let old = today - 100;
        server.sql(&format!(
            "ALTER TABLE moat.greylist_triplets REORGANIZE PARTITION d{first} INTO (
                PARTITION d{old} VALUES LESS THAN ({}),
                PARTITION d{first} VALUES LESS THAN ({lowest}));
             INSERT INTO moat.greylist_triplets VALUES ('stale-triplet', {old}, 1, 1, 1)",
            old + 1,
            first = lowest - 1,
        ));
    }
    let removed = greylist.expire().await.expect("expire");
    assert!(removed <= 3, "an estimate of the old rows: {removed}");
    for server in &cluster().primaries {
        assert_eq!(rows(server, "stale-triplet"), 0);
        let partitions = server.sql(
            "SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = 'moat'
             AND TABLE_NAME = 'greylist_triplets' AND PARTITION_DESCRIPTION <> 'MAXVALUE'
             AND PARTITION_DESCRIPTION + 0 < UNIX_TIMESTAMP() DIV 86400 - 5",
        );
        assert_eq!(partitions, "0");
    }
    let fresh: usize = cluster().primaries.iter().map(|s| rows(s, "fresh")).sum();
    assert_eq!(fresh, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_gets_the_failure_mode_and_works_again_when_it_comes_back() {
    let dir = TempDir::new("greylist-mariadb-down");
    let mut lone = Mariadb::start(dir.path(), "lone", 20);
    let section = format!(
        "store = \"mysql\"\nbudget = \"1s\"\nauto_whitelist_clients = 0\n\
         [[shard]]\nname = \"lone\"\nprimary = \"{}\"\n",
        lone.url()
    );
    let greylist = open_greylist(&section).await;
    assert!(is_defer(
        &greylist.check(&request("before@sender.example")).await
    ));

    lone.kill();
    let start = Instant::now();
    let decision = greylist.check(&request("during@sender.example")).await;
    assert!(
        matches!(decision, Decision::Unavailable { .. }),
        "{decision:?}"
    );
    assert_eq!(decision.policy_action("h"), "DUNNO");
    assert!(
        start.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(greylist.metrics().total(Outcome::StoreFailed), 1);

    lone.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let decision = greylist.check(&request("after@sender.example")).await;
        if is_defer(&decision) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shard did not come back: {decision:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        rows(&lone, "during@"),
        0,
        "nothing is written while the shard is down"
    );
    assert_eq!(rows(&lone, "before@"), 1);
}

#[test]
fn moat_restart_keeps_state_in_the_shards_and_the_schema_is_made_once() {
    let dir = TempDir::new("greylist-mariadb-policy");
    // In a whole file the shards are `[[greylist.shard]]`.
    let section = cluster_section("hostname = \"mx.rcpt.example\"")
        .replace("[[shard]]", "[[greylist.shard]]");
    let mut moat = PolicyProcess::start(dir.path(), &section);
    let mail = postfix_request(
        "192.0.2.10",
        "restart@sender.example",
        "bob@rcpt.example",
        "1",
    );
    assert!(
        moat.client()
            .ask(&mail)
            .starts_with("DEFER_IF_PERMIT 4.7.1 ")
    );
    moat.stop();
    thread::sleep(Duration::from_millis(1_100));
    moat.restart();
    let action = moat.client().ask(&mail);
    assert!(
        action.starts_with("PREPEND X-Greylist: delayed "),
        "{action}"
    );
    // A triplet on every shard, so that each has made its schema whatever ran before.
    for shard in 0..SHARDS.len() {
        let sender = sender_on(shard, "restart-schema");
        let mail = postfix_request("192.0.2.10", &sender, "bob@rcpt.example", "2");
        assert!(moat.client().ask(&mail).starts_with("DEFER_IF_PERMIT"));
    }
    for server in &cluster().primaries {
        assert_eq!(
            server.sql("SELECT GROUP_CONCAT(version) FROM moat.moat_greylist_schema"),
            "1"
        );
    }
}

/// A sender whose triplet (client 192.0.2.10) lands on `shard`.
fn sender_on(shard: usize, stem: &str) -> String {
    let placement = Placement::new(&SHARDS.map(str::to_owned));
    (0..)
        .map(|i| format!("{stem}{i}x@sender.example"))
        .find(|s| {
            let triplet = Triplet::from_request(&request(s), &Default::default());
            placement.shard_of(&triplet.key()) == shard
        })
        .expect("some sender lands on every shard")
}

/// Waits until alpha's replica holds the triplet's row, then runs `statements` on the
/// replica alone (not logged, so the primary never sees them): a replica that lags.
fn diverge_replica(sender: &str, statements: &str) {
    let cluster = cluster();
    wait_for(
        || rows(&cluster.replica, sender) == 1,
        "the row to replicate",
    );
    cluster.replica.sql(&format!(
        "SET SESSION sql_log_bin = 0; {}",
        statements.replace("{sender}", sender)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_a_new_triplet_of_a_replicated_shard_leave_one_row() {
    // Shard alpha reads from its replica, so these writes are the checked ones.
    let sender = sender_on(0, "replicarace");
    let section = cluster_section_with_delay("auto_whitelist_clients = 0", "1h");
    let (node_a, node_b) = (
        Arc::new(open_greylist(&section).await),
        Arc::new(open_greylist(&section).await),
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = Arc::clone(if i % 2 == 0 { &node_a } else { &node_b });
        let sender = sender.clone();
        tasks.push(tokio::spawn(
            async move { node.check(&request(&sender)).await },
        ));
    }
    for task in tasks {
        let decision = task.await.expect("join");
        assert!(is_defer(&decision), "{decision:?}");
    }
    assert_eq!(rows(&cluster().primaries[0], &sender), 1);
    let failed =
        node_a.metrics().total(Outcome::StoreFailed) + node_b.metrics().total(Outcome::StoreFailed);
    assert_eq!(failed, 0, "a race is not a store failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_cannot_let_a_triplet_pass_early() {
    let section = cluster_section_with_delay("auto_whitelist_clients = 0", "1h");
    let greylist = open_greylist(&section).await;
    let sender = sender_on(0, "lagpass");
    assert!(is_defer(&greylist.check(&request(&sender)).await));

    // The replica shows a first attempt 90 minutes old, which would pass; the primary's
    // is from just now.
    diverge_replica(
        &sender,
        "UPDATE moat.greylist_triplets SET first_seen = first_seen - 5400
         WHERE triplet LIKE '%{sender}%'",
    );
    let decision = greylist.check(&request(&sender)).await;
    assert!(
        is_defer(&decision),
        "the primary's record decides: {decision:?}"
    );
    let primary = &cluster().primaries[0];
    let passed = primary.sql(&format!(
        "SELECT passed FROM moat.greylist_triplets WHERE triplet LIKE '%{sender}%'"
    ));
    assert_eq!(
        passed, "0",
        "no pass may be written from the replica's record"
    );
    assert_eq!(rows(primary, &sender), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_missing_a_record_does_not_restart_its_round() {
    let section = cluster_section_with_delay("auto_whitelist_clients = 0", "1h");
    let greylist = open_greylist(&section).await;
    let sender = sender_on(0, "lagmissing");
    assert!(is_defer(&greylist.check(&request(&sender)).await));

    // The primary's record is yesterday's row, 90 minutes old: the retry passes. The replica
    // has not seen it yet, so it reads as a new triplet, whose write must not shadow it.
    diverge_replica(
        &sender,
        "DELETE FROM moat.greylist_triplets WHERE triplet LIKE '%{sender}%'",
    );
    let primary = &cluster().primaries[0];
    primary.sql(&format!(
        "SET SESSION sql_log_bin = 0;
         UPDATE moat.greylist_triplets SET day = day - 1, first_seen = first_seen - 5400,
            last_seen = last_seen - 5400 WHERE triplet LIKE '%{sender}%'"
    ));
    let decision = greylist.check(&request(&sender)).await;
    let Decision::Pass { delayed } = decision else {
        panic!("the primary's record says the retry passes: {decision:?}");
    };
    assert!(
        (5_400..5_400 + 60).contains(&delayed.as_secs()),
        "{delayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whitelisted_client_passes_whether_its_triplet_is_on_its_shard_or_another() {
    let greylist = open_greylist(&cluster_section_with_delay("", "1h")).await;
    let placement = Placement::new(&SHARDS.map(str::to_owned));
    let grouping = Default::default();
    // A client network on shard bravo, which has no replica, counted five times already.
    let (client_ip, client_key) = (1..)
        .map(|i| format!("2001:db8:{i:x}::25"))
        .map(|ip| {
            let network = Triplet::from_request(
                &TripletRequest::new(
                    ip.parse().expect("ip"),
                    "a@sender.example",
                    "b@rcpt.example",
                ),
                &grouping,
            )
            .client;
            (ip, network)
        })
        .find(|(_, network)| placement.shard_of(network.as_bytes()) == 1)
        .expect("some network lands on bravo");
    // A first request to bravo makes its schema.
    greylist
        .check(&request(&sender_on(1, "bravo-schema")))
        .await;
    cluster().primaries[1].sql(&format!(
        "INSERT INTO moat.greylist_clients VALUES ('{client_key}', UNIX_TIMESTAMP() DIV 86400,
         5, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())"
    ));

    let mut shards_seen = [false; 3];
    for i in 0..30 {
        let mail = TripletRequest::new(
            client_ip.parse().expect("ip"),
            format!("whitelisted{i}x@sender.example"),
            "bob@rcpt.example",
        );
        let triplet = Triplet::from_request(&mail, &grouping);
        shards_seen[placement.shard_of(&triplet.key())] = true;
        let known = Decision::PassAtOnce {
            because: Known::AutoWhitelistedClient,
        };
        assert_eq!(greylist.check(&mail).await, known);
    }
    assert_eq!(
        shards_seen, [true; 3],
        "triplets on bravo and on the others"
    );

    // A network without a record is greylisted as usual.
    let stranger = TripletRequest::new(
        "2001:db8:ffff::25".parse().expect("ip"),
        "stranger@sender.example",
        "bob@rcpt.example",
    );
    assert!(is_defer(&greylist.check(&stranger).await));
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
