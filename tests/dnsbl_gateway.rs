//! `moat serve` checks each client against DNSBLs: a zone it serves itself, looked up
//! in-process, and a remote list (real rbldnsd) through the resolver, with weights and a
//! threshold. A list that refuses our resolver (127.255.255.x) never counts as a listing.

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const SOA: &str = "$SOA 0 ns1.bl.test hostmaster.bl.test 0 1h 1h 2d 1h\n$NS 1d ns1.bl.test\n";

/// rbldnsd serving one ip4set zone on a free loopback port, killed on drop.
struct Rbldnsd {
    child: Child,
    port: u16,
}

impl Rbldnsd {
    fn start(dir: &TempDir, zone: &str, dataset: &str) -> Rbldnsd {
        let file = dir.path().join(format!("{zone}.txt"));
        fs::write(&file, format!("{SOA}{dataset}")).expect("write dataset");
        let port = free_port();
        let child = Command::new("rbldnsd")
            .args(["-n", "-u", "nobody", "-b", &format!("127.0.0.1/{port}")])
            .arg(format!("{zone}:ip4set:{}", file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rbldnsd (Debian package rbldnsd; scripts/setup installs it)");
        // rbldnsd answers once its zone is loaded; a TCP connect cannot tell, so give it a
        // moment and let the test's first lookup retry through Moat's timeout if needed.
        std::thread::sleep(Duration::from_millis(300));
        Rbldnsd { child, port }
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rcpt_reply(moat: &Moat) -> Reply {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<a@example.org>").code, 250);
    let reply = smtp.command("RCPT TO:<bob@localhost>");
    smtp.command("QUIT");
    reply
}

#[test]
fn a_client_listed_in_a_locally_served_zone_is_refused_in_process() {
    let dir = TempDir::new("dnsbl-local");
    let dataset = dir.path().join("local.txt");
    fs::write(&dataset, format!("{SOA}127.0.0.1\n")).expect("write dataset");
    // The resolver is a port that never answers: only an in-process lookup can list.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP port");
    let silent_port = silent.local_addr().expect("address").port();
    let moat = Moat::start(&format!(
        "[smtp]\ndnsbl_threshold = 2\ndns_resolver = \"127.0.0.1:{silent_port}\"\n\n[[smtp.dnsbl_site]]\nzone = \"bl.test\"\nweight = 2\n\n\
         [dnsbl]\nlisten = [\"127.0.0.1:0\"]\n\n[[dnsbl.zone]]\nname = \"bl.test\"\n\
         datasets = [\"ip4set:{}\"]\n",
        dataset.display()
    ));
    assert!(
        !service_addrs(&moat.log(), "dnsbl").is_empty(),
        "no DNS listener:\n{}",
        moat.log()
    );

    let reply = rcpt_reply(&moat);
    assert_eq!(reply.code, 554, "{reply:?}");
    assert_eq!(
        reply.text(),
        "5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test"
    );
}

#[test]
fn remote_lists_are_weighed_and_a_refusal_code_never_lists() {
    let dir = TempDir::new("dnsbl-remote");
    let listing = Rbldnsd::start(&dir, "listing.test", "127.0.0.1\n");
    let refusing = Rbldnsd::start(
        &dir,
        "refusing.test",
        ":127.255.255.254:refused\n127.0.0.1\n",
    );

    // Each rbldnsd is its own "resolver" here; two gateways, one per list.
    let under = Moat::start(&format!(
        "[smtp]\ndnsbl_threshold = 3\ndns_resolver = \"127.0.0.1:{}\"\n\n\
         [[smtp.dnsbl_site]]\nzone = \"listing.test\"\nweight = 2\n",
        listing.port
    ));
    assert_eq!(
        rcpt_reply(&under).code,
        250,
        "weight 2 is under the threshold 3"
    );

    let over = Moat::start(&format!(
        "[smtp]\ndnsbl_threshold = 2\ndns_resolver = \"127.0.0.1:{}\"\n\n\
         [[smtp.dnsbl_site]]\nzone = \"listing.test\"\nweight = 2\n",
        listing.port
    ));
    let reply = rcpt_reply(&over);
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(
        reply.text().ends_with("blocked using listing.test"),
        "{reply:?}"
    );

    let refused = Moat::start(&format!(
        "[smtp]\ndnsbl_threshold = 1\ndns_resolver = \"127.0.0.1:{}\"\n\n\
         [[smtp.dnsbl_site]]\nzone = \"refusing.test\"\nweight = 5\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        refusing.port
    ));
    assert_eq!(
        rcpt_reply(&refused).code,
        250,
        "a 127.255.255.254 answer must not list"
    );
    wait_until(Duration::from_secs(5), "the refusal to be raised", || {
        refused.log().contains("DNSBL refuses our resolver")
    });

    // The refusal is counted in the metrics endpoint.
    let metrics = service_addrs(&refused.log(), "metrics")[0];
    let mut stream = std::net::TcpStream::connect(metrics).expect("connect to metrics");
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).expect("read metrics");
    assert!(
        body.contains("moat_dnsbl_refusals_total{zone=\"refusing.test\"} 1"),
        "{body}"
    );
}

#[test]
fn a_list_that_does_not_answer_gives_no_verdict() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a silent UDP port");
    let port = silent.local_addr().expect("address").port();
    let moat = Moat::start(&format!(
        "[smtp]\ndnsbl_timeout = \"500ms\"\ndns_resolver = \"127.0.0.1:{port}\"\n\n\
         [[smtp.dnsbl_site]]\nzone = \"silent.test\"\nweight = 5\n"
    ));
    assert_eq!(rcpt_reply(&moat).code, 250);
    assert!(
        moat.log().contains("DNSBL lookup timed out"),
        "{}",
        moat.log()
    );
}

#[test]
fn a_message_linking_to_a_listed_domain_scores_the_uri_list_weight() {
    let dir = TempDir::new("uribl-local");
    let dataset = dir.path().join("domains.txt");
    fs::write(&dataset, format!("{SOA}.bad.example\n")).expect("write dataset");
    let moat = Moat::start(&format!(
        "[smtp]\n\n[[smtp.uribl_site]]\nzone = \"dbl.test\"\nweight = 20\n\n[content]\n\n\
         [dnsbl]\nlisten = [\"127.0.0.1:0\"]\n\n[[dnsbl.zone]]\nname = \"dbl.test\"\n\
         datasets = [\"dnset:{}\"]\n",
        dataset.display()
    ));

    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<a@example.org>").code, 250);
    assert_eq!(smtp.command("RCPT TO:<bob@localhost>").code, 250);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(b"Subject: deal\r\n\r\nSee http://www.bad.example/offer now\r\n.\r\n");
    let reply = smtp.read_reply();
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(moat.log().contains("uribl:dbl.test=20.0"), "{}", moat.log());
}
