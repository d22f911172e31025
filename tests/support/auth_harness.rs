//! The harness of the sender authentication tests: a real authoritative DNS server (Debian's
//! Knot DNS) serving the test's records on a loopback port, keys the tests generate, and
//! helpers that sign and seal messages with mail-auth as a sending domain or a forwarder would.
//!
//! A test file includes it with `mod common;` and `#[path = "support/auth_harness.rs"] mod
//! harness;`: temporary directories and free ports come from the shared harness.
//!
//! * [`Dns::start`] runs `knotd` in the foreground, authoritative for the root zone, so every
//!   name the checks ask about is answered: the test's records, NXDOMAIN for the rest (as the
//!   DMARC tree walk needs for `_dmarc.com`). It is stopped when dropped.
//! * [`Record`] builds the zone's records; long TXT values are split into 255-byte strings,
//!   as a 2048-bit DKIM key must be.
//! * [`TestKey`] makes an Ed25519 key (ring, through mail-auth) or an RSA 2048 key (openssl),
//!   with the public half in the form a DKIM key record takes.
//! * [`sender_auth`] is Moat's checker pointed at a server; [`silent_server`] and
//!   [`closed_port`] stand for a DNS server that hangs and one that is down.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, MessageAuthenticator};
use moat_gateway::{AuthSettings, SenderAuth, caching_resolver};

use crate::common::{TempDir, free_port};

/// How long knotd may take to answer its first query.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The authserv-id of the checker under test.
pub const AUTHSERV_ID: &str = "mx.example.net";

/// The time each check may take in the tests: short, so a hang shows quickly.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The time each DNS query may take in the tests.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Records

/// One resource record of the test zone.
#[derive(Debug, Clone)]
pub struct Record(String);

impl Record {
    /// A TXT record, split into strings of at most 255 bytes.
    pub fn txt(name: &str, text: &str) -> Record {
        let mut data = String::new();
        for chunk in text.as_bytes().chunks(255) {
            let chunk = std::str::from_utf8(chunk).expect("ASCII TXT data");
            let escaped = chunk.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = write!(data, " \"{escaped}\"");
        }
        Record(format!("{} TXT{data}", absolute(name)))
    }

    /// An A or AAAA record.
    pub fn address(name: &str, ip: &str) -> Record {
        let ip: IpAddr = ip.parse().expect("an IP address");
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        Record(format!("{} {rtype} {ip}", absolute(name)))
    }

    /// An MX record.
    pub fn mx(name: &str, preference: u16, exchange: &str) -> Record {
        Record(format!(
            "{} MX {preference} {}",
            absolute(name),
            absolute(exchange)
        ))
    }

    /// The PTR record of an IPv4 address.
    pub fn ptr(ip: &str, host: &str) -> Record {
        let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
        let [a, b, c, d] = ip.octets();
        Record(format!(
            "{d}.{c}.{b}.{a}.in-addr.arpa. PTR {}",
            absolute(host)
        ))
    }

    /// A DKIM key record for `selector` and `domain`.
    pub fn dkim_key(selector: &str, domain: &str, key: &TestKey) -> Record {
        Record::txt(
            &format!("{selector}._domainkey.{domain}"),
            &key.dns_record(),
        )
    }

    /// A line of mail-auth's test vector files: `name value`, a TXT record.
    pub fn from_vector_line(line: &str) -> Record {
        let (name, value) = line.split_once(' ').expect("name and value");
        Record::txt(name, value)
    }
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

// ---------------------------------------------------------------------------------------------
// The DNS server

/// A running knotd, authoritative for `.` on a loopback port.
pub struct Dns {
    /// Where it answers, over UDP and TCP.
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Dns {
    /// Starts knotd serving `records`, and waits until it answers.
    pub fn start(records: &[Record]) -> Dns {
        let dir = TempDir::new("dns");
        let mut zone = String::from(
            "$TTL 60\n\
             . SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n\
             . NS ns.test.\n\
             ns.test. A 127.0.0.1\n",
        );
        for record in records {
            zone.push_str(&record.0);
            zone.push('\n');
        }
        fs::write(dir.path().join("root.zone"), zone).expect("write the zone file");

        // The port must be known up front; one that was taken between the probe and knotd's
        // bind makes knotd exit, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = start_knot(dir.path(), port) {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                return Dns { addr, child, dir };
            }
        }
        panic!(
            "knotd did not start; its log:\n{}",
            fs::read_to_string(dir.path().join("knot.log")).unwrap_or_default()
        );
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "knotd log:\n{}",
                fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
            );
        }
    }
}

/// Runs knotd on `port`; `None` when it exits before answering (the port was taken).
fn start_knot(dir: &Path, port: u16) -> Option<Child> {
    let d = dir.display();
    let config = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\n    \
         udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: {d}/db\n\
         log:\n  - target: stderr\n    any: info\n\
         template:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n    \
         journal-content: none\n    semantic-checks: off\n\
         zone:\n  - domain: .\n    file: root.zone\n"
    );
    fs::write(dir.join("knot.conf"), config).expect("write knot.conf");
    let log = fs::File::create(dir.join("knot.log")).expect("create knot.log");
    let mut child = Command::new(knotd())
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log)
        .spawn()
        .expect("run knotd (Debian package knot; scripts/setup installs it)");

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < STARTUP {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if answers_soa(addr) {
            return Some(child);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn knotd() -> PathBuf {
    ["/usr/sbin/knotd", "/usr/local/sbin/knotd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("knotd"))
}

/// Whether the server at `addr` answers `. SOA` with NOERROR and the AA bit.
fn answers_soa(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    // Header: id 0x4d54, RD clear, one question; then the root name, type SOA, class IN.
    let query = [0x4d, 0x54, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
    if socket.send_to(&query, addr).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    match socket.recv(&mut reply) {
        Ok(len) if len >= 12 => {
            reply[..2] == query[..2] && reply[2] & 0x84 == 0x84 && reply[3] & 0x0f == 0
        }
        _ => false,
    }
}

/// A DNS server that is down: a loopback port with nothing listening.
pub fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A DNS server that hangs: it takes queries over UDP and TCP and never answers. Keep the
/// sockets alive for as long as it should hang.
pub fn silent_server() -> (SocketAddr, UdpSocket, TcpListener) {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let addr = udp.local_addr().expect("local address");
    let tcp = TcpListener::bind(addr).expect("bind TCP on the same port");
    (addr, udp, tcp)
}

// ---------------------------------------------------------------------------------------------
// The checker under test

/// Moat's checker asking the server at `dns`, with the tests' short timeouts.
pub fn sender_auth(dns: SocketAddr) -> SenderAuth {
    sender_auth_with(dns, |_| {})
}

/// Moat's checker with settings changed by `change`.
pub fn sender_auth_with(dns: SocketAddr, change: impl FnOnce(&mut AuthSettings)) -> SenderAuth {
    let mut settings = AuthSettings::new(AUTHSERV_ID, Some(dns));
    settings.timeout = CHECK_TIMEOUT;
    settings.dns_timeout = QUERY_TIMEOUT;
    change(&mut settings);
    SenderAuth::new(settings).expect("valid settings")
}

/// A mail-auth verifier asking the server at `dns`, as a forwarder runs before sealing.
pub fn forwarder_verifier(dns: SocketAddr) -> MessageAuthenticator {
    MessageAuthenticator(caching_resolver(Some(dns), QUERY_TIMEOUT).expect("resolver"))
}

/// The Received header Moat puts on top of every message, before the checks see it.
pub fn with_received(message: &str) -> String {
    format!(
        "Received: from mail.example.com ([192.0.2.10])\r\n\tby {AUTHSERV_ID} (Moat) with ESMTP \
         id 0123456789abcdef; Fri, 04 Dec 2026 18:00:00 +0000\r\n{message}"
    )
}

// ---------------------------------------------------------------------------------------------
// Keys, signatures and seals

/// A signing key made for the test, with its public half for the DNS.
pub enum TestKey {
    /// An Ed25519 key (RFC 8463) as PKCS#8 DER.
    Ed25519 { pkcs8: Vec<u8>, public: Vec<u8> },
    /// An RSA key as PKCS#8 PEM, and its SubjectPublicKeyInfo DER.
    Rsa { pem: String, public: Vec<u8> },
}

impl TestKey {
    /// A new Ed25519 key.
    pub fn ed25519() -> TestKey {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate an Ed25519 key");
        let public = Ed25519Key::from_pkcs8_der(&pkcs8)
            .expect("read the Ed25519 key")
            .public_key();
        TestKey::Ed25519 { pkcs8, public }
    }

    /// A new RSA 2048 key, made by openssl (ring cannot generate RSA keys).
    pub fn rsa2048() -> TestKey {
        let dir = TempDir::new("rsa");
        let key = dir.path().join("key.pem");
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .arg("-out")
            .arg(&key));
        let public = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key));
        let pem = fs::read_to_string(&key).expect("read the RSA key");
        TestKey::Rsa { pem, public }
    }

    /// The DKIM key record's text (RFC 6376 section 3.6.1).
    pub fn dns_record(&self) -> String {
        match self {
            TestKey::Ed25519 { public, .. } => {
                format!("v=DKIM1; k=ed25519; p={}", base64(public))
            }
            TestKey::Rsa { public, .. } => format!("v=DKIM1; k=rsa; p={}", base64(public)),
        }
    }

    /// A DKIM-Signature header field (with its CRLF) for `message`.
    pub fn dkim_signature(&self, domain: &str, selector: &str, message: &str) -> String {
        let headers = ["From", "To", "Subject", "Date", "Message-ID"];
        let signature = match self {
            TestKey::Ed25519 { pkcs8, .. } => DkimSigner::from_key(ed25519(pkcs8))
                .domain(domain)
                .selector(selector)
                .headers(headers)
                .sign(message.as_bytes()),
            TestKey::Rsa { pem, .. } => DkimSigner::from_key(rsa(pem))
                .domain(domain)
                .selector(selector)
                .headers(headers)
                .sign(message.as_bytes()),
        };
        signature.expect("sign the message").to_header()
    }

    /// `message` with a DKIM signature of `domain` on top.
    pub fn sign(&self, domain: &str, selector: &str, message: &str) -> String {
        format!(
            "{}{message}",
            self.dkim_signature(domain, selector, message)
        )
    }

    /// `message` with an ARC set added by `domain`, as a forwarder seals it after verifying
    /// what it received (`received`, which may differ from `message` when it altered it).
    pub async fn seal(
        &self,
        verifier: &MessageAuthenticator,
        domain: &str,
        selector: &str,
        received: &str,
        message: &str,
    ) -> String {
        let before = AuthenticatedMessage::parse(received.as_bytes()).expect("parse");
        let dkim = verifier.verify_dkim(&before).await;
        let arc = verifier.verify_arc(&before).await;
        let results = AuthenticationResults::new(domain)
            .with_dkim_results(&dkim, "")
            .with_arc_result(&arc, "192.0.2.10".parse().expect("address"));

        let after = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
        let headers = ["From", "To", "Subject", "DKIM-Signature"];
        let set = match self {
            TestKey::Ed25519 { pkcs8, .. } => ArcSealer::from_key(ed25519(pkcs8))
                .domain(domain)
                .selector(selector)
                .headers(headers)
                .seal(&after, &results, &arc),
            TestKey::Rsa { pem, .. } => ArcSealer::from_key(rsa(pem))
                .domain(domain)
                .selector(selector)
                .headers(headers)
                .seal(&after, &results, &arc),
        };
        format!("{}{message}", set.expect("seal the message").to_header())
    }
}

fn ed25519(pkcs8: &[u8]) -> Ed25519Key {
    Ed25519Key::from_pkcs8_der(pkcs8).expect("read the Ed25519 key")
}

// The replacement, from_key_der, takes a rustls-pki-types key, a crate this package does not
// otherwise need; the PEM reader it wraps is the same.
#[allow(deprecated)]
fn rsa(pem: &str) -> RsaKey<Sha256> {
    RsaKey::<Sha256>::from_pkcs8_pem(pem).expect("read the RSA key")
}

fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(output.status.success(), "{command:?} failed");
    output.stdout
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (i, &b)| group | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(
                    ALPHABET[(group >> (18 - 6 * i) & 0x3f) as usize],
                ));
            } else {
                text.push('=');
            }
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A plain message from `from` with CRLF line endings.
pub fn message(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: Sender <{from}>\r\n\
         To: Recipient <rcpt@example.net>\r\n\
         Subject: {subject}\r\n\
         Date: Fri, 04 Dec 2026 17:59:00 +0000\r\n\
         Message-ID: <test-message@example.com>\r\n\
         \r\n\
         {body}\r\n"
    )
}

/// A message file of `tests/support/auth_vectors/`: its DNS records and the message with CRLF
/// line endings.
pub fn vector(name: &str) -> (Vec<Record>, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/auth_vectors")
        .join(name);
    let text = fs::read_to_string(&path).expect("read the vector");
    let (records, message) = text
        .split_once("\n\n")
        .expect("records, a blank line, a message");
    let records = records.lines().map(Record::from_vector_line).collect();
    (records, message.replace('\n', "\r\n"))
}
