//! The sync's shared key, with real `moat dnsbl serve` nodes on loopback: nodes with the same
//! key converge; a wrong key, a key on one side only, a frame changed in transit and a
//! recorded session played back are all rejected, and the subscriber keeps answering from its
//! old data.

#[path = "support/dnsbl_harness.rs"]
mod harness;
#[path = "support/dnsbl_sync_harness.rs"]
mod sync_harness;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::TempDir;
use sync_harness::{DATASET, Node, Proxy, Tamper, base_ip, changed_ip, write_dataset, write_key};

/// Lines of the datasets: small enough to load at once.
const LINES: u32 = 20_000;

const KEY: &str = "5f1c0e7a9b3d2468ace13579bdf02468ace13579bdf02468ace13579bdf02468";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn key_line(dir: &Path, secret: &str) -> String {
    let path = write_key(dir, "sync.key", secret);
    format!("key_file = \"{}\"", path.display())
}

/// A publisher of `LINES` base addresses, with the key `secret` if given.
fn publisher(label: &str, secret: Option<&str>) -> Node {
    let dir = TempDir::new(label);
    write_dataset(&dir.path().join(DATASET), LINES, |_| false);
    let extra = secret.map(|s| key_line(dir.path(), s)).unwrap_or_default();
    Node::publisher(dir, &extra)
}

/// A subscriber that already holds a copy with line 3 changed, with the key `secret`.
fn subscriber(label: &str, publisher: std::net::SocketAddr, secret: Option<&str>) -> Node {
    let dir = TempDir::new(label);
    write_dataset(&dir.path().join(DATASET), LINES, |i| i == 3);
    let extra = secret.map(|s| key_line(dir.path(), s)).unwrap_or_default();
    Node::keyed_subscriber(dir, publisher, "1h", &extra)
}

/// The subscriber's first pull failed with `outcome` and its own copy still answers.
fn kept_its_copy(subscriber: &Node, outcome: &str) -> String {
    let line = subscriber.lines("dnsbl sync failed")[0].clone();
    assert!(line.contains(&format!("outcome={outcome}")), "{line}");
    assert!(line.contains("current data kept"), "{line}");
    assert!(subscriber.lists(&changed_ip(3)), "{}", subscriber.log());
    assert!(!subscriber.lists(&base_ip(3)), "{}", subscriber.log());
    line
}

#[test]
fn nodes_with_the_same_key_bootstrap_and_converge() {
    let publisher = publisher("auth-same-pub", Some(KEY));
    let upstream = publisher.sync_addr.expect("publishing");
    let dir = TempDir::new("auth-same-sub");
    let extra = key_line(dir.path(), KEY);
    let subscriber = Node::keyed_subscriber(dir, upstream, "1h", &extra);
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());

    write_dataset(&publisher.dataset, LINES, |i| i < 1000);
    subscriber.pull_until_logged("dataset synced");
    assert!(subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
    assert_eq!(
        std::fs::read(&subscriber.dataset).expect("the copy"),
        std::fs::read(&publisher.dataset).expect("the original")
    );
}

#[test]
fn a_wrong_key_is_refused_and_the_old_zone_still_answers() {
    let publisher = publisher("auth-wrong-pub", Some(KEY));
    let subscriber = subscriber(
        "auth-wrong-sub",
        publisher.sync_addr.expect("publishing"),
        Some(OTHER_KEY),
    );
    let line = kept_its_copy(&subscriber, "unauthenticated");
    assert!(line.contains("keys must match"), "{line}");
    let refused = publisher.lines("sync client refused");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("client=127.0.0.1") && l.contains("keys must match")),
        "{}",
        publisher.log()
    );
}

#[test]
fn a_key_on_the_publisher_only_is_refused_with_the_keys_must_match() {
    let publisher = publisher("auth-pubonly-pub", Some(KEY));
    let subscriber = subscriber(
        "auth-pubonly-sub",
        publisher.sync_addr.expect("publishing"),
        None,
    );
    let line = kept_its_copy(&subscriber, "unauthenticated");
    assert!(line.contains("keys must match"), "{line}");
    let refused = publisher.lines("sync client refused");
    assert!(
        refused.iter().any(|l| l.contains("subscriber has no key")),
        "{}",
        publisher.log()
    );
}

#[test]
fn a_key_on_the_subscriber_only_is_refused_with_the_keys_must_match() {
    let publisher = publisher("auth-subonly-pub", None);
    let subscriber = subscriber(
        "auth-subonly-sub",
        publisher.sync_addr.expect("publishing"),
        Some(KEY),
    );
    let line = kept_its_copy(&subscriber, "unauthenticated");
    assert!(line.contains("keys must match"), "{line}");
    let refused = publisher.lines("sync client refused");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("publisher none") && l.contains("keys must match")),
        "{}",
        publisher.log()
    );
}

/// A keyed publisher and subscriber, the subscriber pulling through a proxy, bootstrapped;
/// then the publisher's first 1000 lines change.
fn keyed_behind_a_proxy(label: &str) -> (Node, Proxy, Node) {
    let publisher = publisher(&format!("{label}-pub"), Some(KEY));
    let proxy = Proxy::start(publisher.sync_addr.expect("publishing"));
    let dir = TempDir::new(&format!("{label}-sub"));
    let extra = key_line(dir.path(), KEY);
    let subscriber = Node::keyed_subscriber(dir, proxy.addr, "1h", &extra);
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());
    write_dataset(&publisher.dataset, LINES, |i| i < 1000);
    (publisher, proxy, subscriber)
}

fn rejected_with(subscriber: &Node, outcome: &str) {
    let line = subscriber.pull_until_logged(&format!("outcome={outcome}"));
    assert!(line.contains("current data kept"), "{line}");
    assert!(line.contains("publisher=127.0.0.1:"), "{line}");
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());
    assert!(!subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
}

#[test]
fn a_frame_changed_in_transit_fails_its_mac_even_with_its_crc_fixed() {
    let (_publisher, proxy, subscriber) = keyed_behind_a_proxy("auth-tamper");
    proxy.set(Tamper::Flip);
    rejected_with(&subscriber, "bad_mac");
    proxy.set(Tamper::FlipResealed);
    rejected_with(&subscriber, "bad_mac");
    // A delta frame of an earlier session, in place of this one's.
    proxy.set(Tamper::ReplayFirst);
    rejected_with(&subscriber, "bad_mac");

    proxy.set(Tamper::Pass);
    subscriber.pull_until_logged("dataset synced");
    assert!(subscriber.lists(&changed_ip(500)), "{}", subscriber.log());
}

/// A proxy that records the publisher's bytes of each session, and once told to replay,
/// answers every new connection with the bytes of the first recorded session instead.
struct Recorder {
    addr: std::net::SocketAddr,
    replay: Arc<Mutex<bool>>,
}

impl Recorder {
    fn start(upstream: std::net::SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = listener.local_addr().expect("recorder address");
        let replay = Arc::new(Mutex::new(false));
        let recorded: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let mode = Arc::clone(&replay);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (mode, recorded) = (Arc::clone(&mode), Arc::clone(&recorded));
                thread::spawn(move || session(client, upstream, &mode, &recorded));
            }
        });
        Recorder { addr, replay }
    }
}

fn session(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    replay: &Mutex<bool>,
    recorded: &Mutex<Vec<Vec<u8>>>,
) {
    if *replay.lock().expect("mode") {
        let bytes = recorded.lock().expect("recorded").first().cloned();
        let _ = client.write_all(&bytes.unwrap_or_default());
        // Hold the connection until the subscriber gives up on it.
        let _ = client.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = std::io::copy(&mut client, &mut std::io::sink());
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut requests_in), Ok(mut requests_out)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut requests_in, &mut requests_out);
        let _ = requests_out.shutdown(Shutdown::Write);
    });
    let mut answers = server;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64 << 10];
    while let Ok(n) = answers.read(&mut buf) {
        if n == 0 || client.write_all(&buf[..n]).is_err() {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let _ = client.shutdown(Shutdown::Write);
    recorded.lock().expect("recorded").push(bytes);
}

#[test]
fn a_recorded_session_played_back_is_rejected() {
    let publisher = publisher("auth-replay-pub", Some(KEY));
    let recorder = Recorder::start(publisher.sync_addr.expect("publishing"));
    let dir = TempDir::new("auth-replay-sub");
    let extra = key_line(dir.path(), KEY);
    let subscriber = Node::keyed_subscriber(dir, recorder.addr, "1h", &extra);
    assert!(subscriber.lists(&base_ip(500)), "{}", subscriber.log());

    // The bootstrap session, recorded, is played back to the next pull.
    *recorder.replay.lock().expect("mode") = true;
    write_dataset(&subscriber.dataset, LINES, |i| i == 3);
    let line = subscriber.pull_until_logged("dnsbl sync failed");
    assert!(line.contains("outcome=unauthenticated"), "{line}");
    assert!(line.contains("publisher's proof does not match"), "{line}");
    assert_eq!(
        std::fs::read(&subscriber.dataset).expect("the copy"),
        {
            let dir = TempDir::new("auth-replay-expected");
            let expected = dir.path().join(DATASET);
            write_dataset(&expected, LINES, |i| i == 3);
            std::fs::read(&expected).expect("expected")
        },
        "the replayed session changed the copy"
    );
}

/// Runs `moat dnsbl serve` on a configuration whose publisher has `key_file` = `key`; returns
/// what it printed when it exited (it must, within seconds).
fn refused_config(label: &str, secret: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new(label);
    write_dataset(&dir.path().join(DATASET), 10, |_| false);
    let key = write_key(dir.path(), "sync.key", secret);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let config = dir.path().join("moat.toml");
    let text = format!(
        "[dnsbl]\n[[dnsbl.zone]]\nname = \"bl.test\"\ndatasets = [\"ip4set:{DATASET}\"]\n\
         [dnsbl.sync.publish]\nlisten = [\"127.0.0.1:0\"]\nkey_file = \"{}\"\n",
        key.display()
    );
    std::fs::write(&config, text).expect("write the configuration");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["dnsbl", "serve", "--listen=127.0.0.1:0"])
        .arg(format!("--config={}", config.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moat");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("moat started on a refused key");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut output = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut output);
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut output);
    output
}

#[test]
fn a_short_key_is_a_config_error_naming_the_key_and_the_remedy() {
    let output = refused_config("auth-short", &"ab".repeat(16), 0o600);
    assert!(output.contains("dnsbl.sync.publish.key_file"), "{output}");
    assert!(output.contains("16 bytes"), "{output}");
    assert!(output.contains("openssl rand -hex 32"), "{output}");
}

#[test]
fn a_world_readable_key_file_is_a_config_error() {
    let output = refused_config("auth-open", KEY, 0o644);
    assert!(output.contains("dnsbl.sync.publish.key_file"), "{output}");
    assert!(output.contains("readable by every user"), "{output}");
    assert!(output.contains("chmod 600"), "{output}");
}

#[test]
fn a_keyed_publisher_reads_no_large_frame_before_the_handshake() {
    let publisher = publisher("auth-large-first", Some(KEY));
    let addr = publisher.sync_addr.expect("a publisher address");

    // A request-sized first frame (version 1, a pull, 16 MiB announced): a keyed publisher
    // takes a handshake of a few dozen octets first, so it refuses this at the header instead
    // of reading 16 MiB from someone who has not authenticated.
    let mut stream = TcpStream::connect(addr).expect("connect to the publisher");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let announced: u32 = 16 << 20;
    let mut header = vec![1u8, 2];
    header.extend_from_slice(&announced.to_be_bytes());
    stream.write_all(&header).expect("send the header");

    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the publisher waited for the announced payload instead of refusing the header"
    );
    let log = publisher.moat.log();
    assert!(log.contains("sync request unreadable"), "{log}");
}
