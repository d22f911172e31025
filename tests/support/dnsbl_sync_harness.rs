//! The harness of the DNSBL sync tests: publisher and subscriber nodes as real
//! `moat dnsbl serve` processes, large datasets to change by a percent, and a proxy on loopback
//! that damages the publisher's answers in transit.
//!
//! A test file includes it after the DNS harness:
//! `#[path = "support/dnsbl_harness.rs"] mod harness;`
//! `#[path = "support/dnsbl_sync_harness.rs"] mod sync_harness;`
//! * [`Node::publisher`] and [`Node::subscriber`] write a configuration with `[dnsbl.sync]` and
//!   start a node on it; [`Node::hangup`] makes a subscriber pull now.
//! * [`write_dataset`] lays down an ip4set of `10.x.y.z` lines, some runs replaced by
//!   `172.16.x.y` lines, renamed into place.
//! * [`Proxy`] forwards subscriber and publisher bytes, and in a [`Tamper`] mode flips, cuts or
//!   replays the publisher's delta frames (a proxy, so the nodes run their production code).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Moat, TempDir, Via, dig, ip4_name};

/// The zone every node serves.
pub const ZONE: &str = "bl.test";

/// The dataset file's name, the same on every node.
pub const DATASET: &str = "spam.txt";

const HEADER: &str = "$SOA 0 ns1.bl.test hostmaster.bl.test 0 1h 1h 2d 1h\n$NS 1d ns1.bl.test\n";

/// The `i`th base address of a dataset.
pub fn base_ip(i: u32) -> String {
    format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)
}

/// The address that replaces line `i` when it is changed.
pub fn changed_ip(i: u32) -> String {
    format!("172.16.{}.{}", (i >> 8) & 255, i & 255)
}

/// Writes `lines` addresses to `path` (aside, then renamed into place), line `i` being
/// [`changed_ip`] when `changed(i)` and [`base_ip`] otherwise.
pub fn write_dataset(path: &Path, lines: u32, changed: impl Fn(u32) -> bool) {
    let mut text = String::from(HEADER);
    for i in 0..lines {
        let ip = if changed(i) {
            changed_ip(i)
        } else {
            base_ip(i)
        };
        let _ = writeln!(text, "{ip}");
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write the dataset");
    std::fs::rename(&temporary, path).expect("rename the dataset into place");
}

/// Whether `runs` runs of `run_len` lines, spread evenly over `lines`, hold line `i`.
pub fn in_runs(i: u32, lines: u32, runs: u32, run_len: u32) -> bool {
    let stride = lines / runs;
    i % stride >= stride / 2 && i % stride < stride / 2 + run_len
}

/// A running node with its own directory, configuration and dataset file.
pub struct Node {
    /// The process.
    pub moat: Moat,
    /// Its dataset file.
    pub dataset: PathBuf,
    /// Where it publishes, for a publisher.
    pub sync_addr: Option<SocketAddr>,
    dir: TempDir,
}

impl Node {
    /// Starts a publisher of `dataset` (which must exist), publishing on a loopback port, with
    /// `extra` added to `[dnsbl.sync.publish]` and its files checked every second.
    pub fn publisher(dir: TempDir, extra: &str) -> Node {
        let config = format!(
            "[dnsbl]\ncheck_interval = \"1s\"\n{}\n[dnsbl.sync.publish]\n\
             listen = [\"127.0.0.1:0\"]\n{extra}\n",
            zone_section()
        );
        let mut node = Node::start(dir, &config);
        let start = Instant::now();
        node.sync_addr = loop {
            if let Some(addr) = logged_field(&node.moat.log(), "dnsbl sync publishing", "addr") {
                break Some(addr.parse().expect("an address"));
            }
            assert!(
                start.elapsed() < crate::harness::STARTUP,
                "no publishing address:\n{}",
                node.moat.log()
            );
            thread::sleep(Duration::from_millis(20));
        };
        node
    }

    /// Starts a subscriber of `publisher`, pulling every `interval` (a time such as `1h`).
    pub fn subscriber(dir: TempDir, publisher: SocketAddr, interval: &str) -> Node {
        Node::keyed_subscriber(dir, publisher, interval, "")
    }

    /// Starts a subscriber as [`Node::subscriber`] does, with `extra` added to
    /// `[dnsbl.sync.subscribe]` (a `key_file`).
    pub fn keyed_subscriber(
        dir: TempDir,
        publisher: SocketAddr,
        interval: &str,
        extra: &str,
    ) -> Node {
        let config = format!(
            "[dnsbl]\ncheck_interval = \"0\"\n{}\n[dnsbl.sync.subscribe]\n\
             publisher = \"{publisher}\"\ninterval = \"{interval}\"\ntimeout = \"10s\"\n{extra}\n",
            zone_section()
        );
        Node::start(dir, &config)
    }

    fn start(dir: TempDir, config: &str) -> Node {
        let path = dir.path().join("moat.toml");
        std::fs::write(&path, config).expect("write the configuration");
        let moat = Moat::start(&[format!("--config={}", path.display())]);
        Node {
            moat,
            dataset: dir.path().join(DATASET),
            sync_addr: None,
            dir,
        }
    }

    /// Whether the node lists `ip`.
    pub fn lists(&self, ip: &str) -> bool {
        dig(self.moat.addr, &ip4_name(ip, ZONE), "A", Via::Udp).listed()
    }

    /// Everything the node logged.
    pub fn log(&self) -> String {
        self.moat.log()
    }

    /// The lines the node logged with `message`.
    pub fn lines(&self, message: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(message))
            .map(str::to_owned)
            .collect()
    }

    /// Sends SIGHUP: a subscriber pulls at once.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.moat.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends SIGHUP and waits until the node has logged one more line with `message`; returns
    /// that line.
    pub fn pull_until_logged(&self, message: &str) -> String {
        let before = self.lines(message).len();
        self.hangup();
        wait_for(
            &format!("{message:?} in the log"),
            Duration::from_secs(30),
            || self.lines(message).len() > before,
        );
        self.lines(message).swap_remove(before)
    }
}

fn zone_section() -> String {
    format!("[[dnsbl.zone]]\nname = \"{ZONE}\"\ndatasets = [\"ip4set:{DATASET}\"]\n")
}

/// The value of `field` in the first log line containing `message`.
pub fn logged_field(log: &str, message: &str, field: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(message))?;
    field_of(line, field)
}

/// The value of `field=` in one log line.
pub fn field_of(line: &str, field: &str) -> Option<String> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    let value = line[at..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}

/// A numeric field of one log line.
pub fn number_of(line: &str, field: &str) -> u64 {
    field_of(line, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {field} in {line}"))
}

/// Waits until `condition` holds, failing the test after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `secret` (hex) to `name` in `dir`, readable by its owner only; returns its path.
pub fn write_key(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("write the key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// What the proxy does to the publisher's delta frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Forward them, and keep a copy of each.
    Pass,
    /// Flip one byte of the delta and leave the frame's CRC-32 as it was.
    Flip,
    /// Flip one byte of the delta's first literal data and compute the CRC-32 again, as a
    /// publisher with a bad disk or a bug would send it: only the SHA-256 can tell.
    FlipResealed,
    /// Send the first half of the frame, then close the connection.
    Truncate,
    /// Send the first delta frame kept in [`Tamper::Pass`] mode instead.
    ReplayFirst,
}

/// A proxy on a loopback port in front of a publisher.
pub struct Proxy {
    /// Where subscribers connect.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Tamper>>,
}

/// The kind byte of a delta frame.
const DELTA_KIND: u8 = 0x82;

/// The kind byte of the publisher's last handshake frame: every frame after it carries a tag.
const ACCEPT_KIND: u8 = 0x84;

/// The length of the HMAC-SHA256 tag after each frame of a keyed connection.
const TAG_LEN: usize = 32;

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(Mutex::new(Tamper::Pass));
        let kept: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let shared = Arc::clone(&mode);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mode, kept) = (Arc::clone(&shared), Arc::clone(&kept));
                thread::spawn(move || relay(client, server, &mode, &kept));
            }
        });
        Proxy { addr, mode }
    }

    /// Changes what happens to the next delta frames.
    pub fn set(&self, mode: Tamper) {
        *self.mode.lock().expect("the mode") = mode;
    }
}

/// Copies requests as they are, and the publisher's frames one by one through the tamper.
fn relay(client: TcpStream, server: TcpStream, mode: &Mutex<Tamper>, kept: &Mutex<Vec<Vec<u8>>>) {
    let (Ok(mut requests_in), Ok(mut requests_out)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut requests_in, &mut requests_out);
        let _ = requests_out.shutdown(Shutdown::Write);
    });
    let (mut answers_in, mut answers_out) = (server, client);
    let mut tag_len = 0;
    while let Some(mut frame) = read_frame(&mut answers_in, tag_len) {
        if frame[1] == ACCEPT_KIND {
            tag_len = TAG_LEN;
        }
        if frame[1] == DELTA_KIND {
            let mode = *mode.lock().expect("the mode");
            match mode {
                Tamper::Pass => kept.lock().expect("kept").push(frame.clone()),
                Tamper::Flip => {
                    let at = frame.len() - tag_len - 20;
                    frame[at] ^= 0x40;
                }
                Tamper::FlipResealed => {
                    let at = first_literal_byte(&frame);
                    frame[at] ^= 0x40;
                    reseal(&mut frame, tag_len);
                }
                Tamper::Truncate => {
                    let _ = answers_out.write_all(&frame[..frame.len() / 2]);
                    let _ = answers_out.shutdown(Shutdown::Both);
                    let _ = answers_in.shutdown(Shutdown::Both);
                    return;
                }
                Tamper::ReplayFirst => {
                    if let Some(first) = kept.lock().expect("kept").first() {
                        frame = first.clone();
                    }
                }
            }
        }
        if answers_out.write_all(&frame).is_err() {
            return;
        }
    }
    let _ = answers_out.shutdown(Shutdown::Write);
}

/// Reads one whole frame (header, payload, CRC-32, and a tag of `tag_len` bytes), or `None`
/// at the end.
fn read_frame(stream: &mut TcpStream, tag_len: usize) -> Option<Vec<u8>> {
    let mut frame = vec![0u8; 6];
    stream.read_exact(&mut frame).ok()?;
    let len = u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]) as usize;
    frame.resize(6 + len + 4 + tag_len, 0);
    stream.read_exact(&mut frame[6..]).ok()?;
    Some(frame)
}

/// The offset in a delta frame of the first data byte of the delta's first literal run:
/// walks the rsync commands (librsync's encoding) past the name, version and magic.
fn first_literal_byte(frame: &[u8]) -> usize {
    let name_len = usize::from(u16::from_be_bytes([frame[6], frame[7]]));
    let mut at = 6 + 2 + name_len + 48 + 4;
    loop {
        let command = frame[at];
        match command {
            0x01..=0x40 => return at + 1,
            0x41..=0x44 => return at + 1 + (1 << (command - 0x41)),
            0x45..=0x54 => {
                let mode = command - 0x45;
                at += 1 + (1 << (mode / 4)) + (1 << (mode % 4));
            }
            _ => panic!("no literal in the delta (command {command:#x})"),
        }
    }
}

/// Writes a frame's CRC-32 again after its bytes changed (a tag, if any, left as it was).
fn reseal(frame: &mut [u8], tag_len: usize) {
    let end = frame.len() - tag_len - 4;
    let crc = crc32(&frame[..end]);
    frame[end..end + 4].copy_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (IEEE 802.3, as zlib and crc32fast compute it), bit by bit: the proxy's few frames
/// need no table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32_matches_the_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
