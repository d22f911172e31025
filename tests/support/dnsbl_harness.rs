//! The harness of the DNSBL end-to-end tests: a real `moat dnsbl serve`, a real rbldnsd, and
//! dig as the client, all on loopback ports the kernel picked.
//!
//! A test file includes it with `#[path = "support/dnsbl_harness.rs"] mod harness;`.
//! * [`Moat::start`] runs `moat dnsbl serve` with zones given as rbldnsd specs and waits until
//!   it logs its address; [`Rbldnsd::start`] runs Debian's rbldnsd in the foreground.
//! * [`dig`] sends one query with dig and parses what it prints into a [`Reply`].
//! * [`zone_file`] is a dataset from `tests/support/dnsbl_zones/`.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
pub const STARTUP: Duration = Duration::from_secs(20);

/// A dataset file of the cases table.
pub fn zone_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/dnsbl_zones")
        .join(name)
}

/// A running `moat dnsbl serve`.
pub struct Moat {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A temporary directory removed on drop unless the thread panicked.
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(label: &str) -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("moat-dnsbl-{label}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create a temporary directory");
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("kept test directory {}", self.0.display());
            } else {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

// Only some of the test files that include this module use it.
#[allow(unused_imports)]
pub use tempdir::Dir as TempDir;

impl Moat {
    /// Starts `moat dnsbl serve --listen 127.0.0.1:0` with `args` added (such as
    /// `--zone bl.test:ip4set:FILE`), and waits until it listens.
    pub fn start(args: &[String]) -> Moat {
        Moat::start_on(&["127.0.0.1:0"], args)
    }

    /// Starts `moat dnsbl serve` listening on each of `listen` (its `addr` is the first), with
    /// `args` added, and waits until it listens.
    pub fn start_on(listen: &[&str], args: &[String]) -> Moat {
        let dir = tempdir::Dir::new("moat");
        let log = dir.path().join("moat.log");
        let out = fs::File::create(&log).expect("create the log");
        let child = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(["dnsbl", "serve", "--udp-sockets", "2"])
            .args(listen.iter().map(|addr| format!("--listen={addr}")))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .expect("start moat");
        let mut moat = Moat {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
            dir,
        };
        let start = Instant::now();
        loop {
            if let Some(addr) = moat.logged_addr() {
                moat.addr = addr;
                return moat;
            }
            if let Ok(Some(status)) = moat.child.try_wait() {
                panic!("moat exited with {status}:\n{}", moat.log());
            }
            assert!(
                start.elapsed() < STARTUP,
                "moat did not start:\n{}",
                moat.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts moat serving one zone `bl.test` of type `kind` from `file`.
    pub fn zone(kind: &str, file: &Path) -> Moat {
        Moat::start(&[format!("--zone=bl.test:{kind}:{}", file.display())])
    }

    fn logged_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("dnsbl listening"))?;
        let at = line.find("addr=")? + 5;
        line[at..].split_whitespace().next()?.parse().ok()
    }

    /// Everything moat logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, to send signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running rbldnsd (Debian's package), in the foreground on a loopback port.
pub struct Rbldnsd {
    /// Where it answers (UDP only; rbldnsd has no TCP).
    pub addr: SocketAddr,
    child: Child,
}

impl Rbldnsd {
    /// Whether rbldnsd is installed.
    pub fn available() -> bool {
        Command::new("rbldnsd")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts `rbldnsd -n` with zone specs such as `bl.test:ip4set:FILE`, and waits until it
    /// answers.
    pub fn start(zones: &[String]) -> Rbldnsd {
        let port = free_udp_port();
        let mut command = Command::new("rbldnsd");
        command.args(["-n", "-b", &format!("127.0.0.1/{port}")]);
        if is_root() {
            // rbldnsd refuses to run as root; nobody can read the world-readable test files.
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(zones)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rbldnsd");
        let mut server = Rbldnsd {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let start = Instant::now();
        loop {
            if answers_udp(server.addr) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut err) = server.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("rbldnsd exited with {status}: {stderr}");
            }
            assert!(start.elapsed() < STARTUP, "rbldnsd did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    socket.local_addr().expect("local address").port()
}

/// Whether something answers a DNS query on `addr`.
fn answers_udp(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    // A query for "." SOA: any reply at all will do.
    let query = [0x42, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
    if socket.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    socket.recv_from(&mut buf).is_ok()
}

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rr {
    /// Owner name, lower case, with the trailing dot.
    pub name: String,
    /// TTL.
    pub ttl: u32,
    /// Type, such as `A`.
    pub rtype: String,
    /// Data as dig prints it.
    pub data: String,
}

/// A reply as dig prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The status (`NOERROR`, `NXDOMAIN`, ...), or `TIMEOUT` when nothing came back.
    pub status: String,
    /// The header flags (`qr`, `aa`, `tc`, ...).
    pub flags: Vec<String>,
    /// The answer section.
    pub answer: Vec<Rr>,
    /// The authority section.
    pub authority: Vec<Rr>,
    /// The additional section (without the OPT pseudo-record).
    pub additional: Vec<Rr>,
    /// The EDNS UDP size of an OPT record in the reply, if any.
    pub edns_udp: Option<u16>,
    /// The size dig reports.
    pub size: usize,
    /// dig's whole output, for failure messages.
    pub raw: String,
}

impl Reply {
    /// Whether a header flag is set.
    pub fn flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data of the answer records of `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        data.sort();
        data
    }

    /// The TXT texts of the answer, unquoted, sorted.
    pub fn txt(&self) -> Vec<String> {
        self.data("TXT")
            .iter()
            .map(|d| d.trim_matches('"').to_owned())
            .collect()
    }

    /// Whether the reply is a listing: NOERROR with AA and at least one answer.
    pub fn listed(&self) -> bool {
        self.status == "NOERROR" && self.flag("aa") && !self.answer.is_empty()
    }

    /// Whether the reply is NXDOMAIN with the zone's SOA in the authority section.
    pub fn nx(&self) -> bool {
        self.status == "NXDOMAIN" && self.authority.iter().any(|r| r.rtype == "SOA")
    }

    /// Whether the reply is NOERROR, no answer, with the SOA in the authority section.
    pub fn nodata(&self) -> bool {
        self.status == "NOERROR"
            && self.answer.is_empty()
            && self.authority.iter().any(|r| r.rtype == "SOA")
    }

    /// The TTL of the SOA in the authority section.
    pub fn soa_ttl(&self) -> Option<u32> {
        self.authority
            .iter()
            .find(|r| r.rtype == "SOA")
            .map(|r| r.ttl)
    }
}

/// How a query is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// UDP without EDNS, as the cases table's observations were made.
    Udp,
    /// UDP with EDNS and this buffer size.
    Edns(u16),
    /// TCP.
    Tcp,
}

/// Sends one query with dig to `server` and parses the reply. dig never retries over TCP
/// by itself (`+ignore`), so a truncated reply is seen as such.
pub fn dig(server: SocketAddr, name: &str, rtype: &str, via: Via) -> Reply {
    dig_many(server, &[(name.to_owned(), rtype)], via)
        .pop()
        .expect("one reply per query")
}

/// Sends several queries with one dig process (batch mode) and parses the replies, in order.
pub fn dig_many(server: SocketAddr, queries: &[(String, &str)], via: Via) -> Vec<Reply> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let batch = std::env::temp_dir().join(format!(
        "moat-dig-{}-{}.txt",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let lines: Vec<String> = queries
        .iter()
        .map(|(name, rtype)| format!("{name} {rtype}"))
        .collect();
    fs::write(&batch, lines.join("\n") + "\n").expect("write dig's batch file");

    let mut command = Command::new("dig");
    command
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+norec", "+nocookie", "+ignore", "+tries=1", "+time=3"]);
    match via {
        Via::Udp => command.args(["+noedns", "+notcp"]),
        Via::Edns(size) => command.args([
            "+edns=0".to_owned(),
            format!("+bufsize={size}"),
            "+notcp".to_owned(),
        ]),
        Via::Tcp => command.args(["+noedns", "+tcp"]),
    };
    let output = command.arg("-f").arg(&batch).output().expect("run dig");
    let _ = fs::remove_file(&batch);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut replies: Vec<Reply> = Vec::new();
    let mut block = String::new();
    for line in text.lines() {
        if line.starts_with("; <<>> DiG") && block.contains("<<>> DiG") {
            replies.push(parse_dig(&block));
            block.clear();
        }
        block.push_str(line);
        block.push('\n');
    }
    if block.contains("<<>> DiG") {
        replies.push(parse_dig(&block));
    }
    assert_eq!(replies.len(), queries.len(), "dig printed:\n{text}");
    replies
}

/// Parses dig's default output.
pub fn parse_dig(text: &str) -> Reply {
    let mut reply = Reply {
        raw: text.to_owned(),
        status: "TIMEOUT".into(),
        ..Reply::default()
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(at) = line.find("status: ") {
            reply.status = line[at + 8..]
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            reply.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if let Some(rest) = line.strip_prefix("; EDNS: ") {
            reply.edns_udp = rest
                .rsplit("udp: ")
                .next()
                .and_then(|u| u.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
            reply.size = rest.trim().parse().unwrap_or(0);
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else if let Some(rr) = parse_rr(line) {
            match section {
                "answer" => reply.answer.push(rr),
                "authority" => reply.authority.push(rr),
                "additional" => reply.additional.push(rr),
                _ => {}
            }
        }
    }
    reply
}

fn parse_rr(line: &str) -> Option<Rr> {
    let mut parts = line.split_whitespace();
    let name = parts.next()?.to_ascii_lowercase();
    let ttl = parts.next()?.parse().ok()?;
    let _class = parts.next()?;
    let rtype = parts.next()?.to_owned();
    let data = parts.collect::<Vec<_>>().join(" ");
    Some(Rr {
        name,
        ttl,
        rtype,
        data,
    })
}

/// The reversed-octet name of an IPv4 address in `zone`.
pub fn ip4_name(ip: &str, zone: &str) -> String {
    let octets: Vec<&str> = ip.split('.').rev().collect();
    format!("{}.{zone}", octets.join("."))
}

/// The nibble name of an IPv6 address in `zone`.
pub fn ip6_name(ip: &str, zone: &str) -> String {
    let addr: std::net::Ipv6Addr = ip.parse().expect("an IPv6 address");
    let hex = format!("{:032x}", u128::from(addr));
    let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
    format!("{}.{zone}", nibbles.join("."))
}
