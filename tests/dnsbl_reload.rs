//! Reloads: a dataset replaced (written aside, renamed into place) is picked up on SIGHUP or by
//! the periodic check, swapped in whole while queries go on, and not one query fails. A file
//! that cannot be read on reload leaves the previous data in service.

#[path = "support/dnsbl_harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Moat, TempDir, Via, dig, ip4_name};

const HEADER: &str = "$SOA 0 ns1.bl.test hostmaster.bl.test 0 1h 1h 2d 1h\n$NS 1d ns1.bl.test\n";

/// Writes a dataset of `extra` plus 100,000 addresses (so a load takes a while), the way
/// operators must: a temporary file renamed into place.
fn publish(path: &Path, extra: &[&str]) {
    let mut text = String::from(HEADER);
    for i in 0..100_000u32 {
        let _ = writeln!(text, "10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
    }
    text.push_str("192.0.2.1 :2:always listed\n");
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write the dataset");
    std::fs::rename(&temporary, path).expect("rename the dataset into place");
}

fn listed(server: SocketAddr, ip: &str) -> bool {
    dig(server, &ip4_name(ip, "bl.test"), "A", Via::Udp).listed()
}

fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Queries 192.0.2.1 (listed in every version) as fast as one client can, counting replies
/// that are not a listing and queries with no reply.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(server: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let thread = thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut id = 0u16;
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let mut q = id.to_be_bytes().to_vec();
                q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
                q.extend_from_slice(b"\x011\x012\x010\x03192\x02bl\x04test\x00\x00\x01\x00\x01");
                socket.send_to(&q, server).expect("send");
                n.fetch_add(1, Ordering::Relaxed);
                let ok = match socket.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        len > 12
                            && buf[..2] == id.to_be_bytes()
                            && buf[3] & 0x0f == 0
                            && buf[7] >= 1
                    }
                    Err(_) => false,
                };
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Load {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the load thread");
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn hangup(moat: &Moat) {
    let status = Command::new("kill")
        .args(["-HUP", &moat.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn sighup_reloads_under_load_without_a_single_failed_query() {
    let dir = TempDir::new("reload");
    let file = dir.path().join("list.txt");
    publish(&file, &[]);
    let moat = Moat::start(&[
        format!("--zone=bl.test:ip4set:{}", file.display()),
        "--check-interval=0".into(),
    ]);
    assert!(listed(moat.addr, "192.0.2.1"));

    let load = Load::start(moat.addr);
    for round in 1..=3 {
        let marker = format!("192.0.2.{}", 100 + round);
        publish(&file, &[&marker]);
        hangup(&moat);
        wait_for(
            &format!("{marker} after reload {round}"),
            Duration::from_secs(30),
            || listed(moat.addr, &marker),
        );
    }
    let (sent, failed) = load.finish();
    assert!(sent > 100, "only {sent} queries were sent");
    assert_eq!(
        failed,
        0,
        "{failed} of {sent} queries failed during reloads\n{}",
        moat.log()
    );
    assert_eq!(
        moat.log().matches("zones reloaded").count(),
        3,
        "{}",
        moat.log()
    );
}

#[test]
fn a_changed_file_is_picked_up_by_the_periodic_check() {
    let dir = TempDir::new("poll");
    let file = dir.path().join("list.txt");
    publish(&file, &[]);
    let moat = Moat::start(&[
        format!("--zone=bl.test:ip4set:{}", file.display()),
        "--check-interval=1s".into(),
    ]);
    assert!(!listed(moat.addr, "192.0.2.50"));
    publish(&file, &["192.0.2.50"]);
    wait_for(
        "the periodic check to reload",
        Duration::from_secs(20),
        || listed(moat.addr, "192.0.2.50"),
    );
}

#[test]
fn a_reload_that_fails_keeps_the_previous_data_in_service() {
    let dir = TempDir::new("broken");
    let file = dir.path().join("list.txt");
    publish(&file, &["192.0.2.60"]);
    let moat = Moat::start(&[
        format!("--zone=bl.test:ip4set:{}", file.display()),
        "--check-interval=0".into(),
    ]);
    std::fs::remove_file(&file).expect("remove the dataset");
    hangup(&moat);
    wait_for(
        "the failed reload to be logged",
        Duration::from_secs(10),
        || moat.log().contains("dataset reload failed"),
    );
    assert!(listed(moat.addr, "192.0.2.60"), "{}", moat.log());
}

#[test]
fn strict_mode_refuses_a_malformed_dataset_at_start_naming_file_and_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["dnsbl", "serve", "--listen", "127.0.0.1:0", "--strict"])
        .arg(format!(
            "--zone=bl.test:ip4set:{}",
            harness::zone_file("d06.txt").display()
        ))
        .output()
        .expect("run moat");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("d06.txt line 3"), "{stderr}");
}
