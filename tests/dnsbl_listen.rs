//! Where `moat dnsbl serve` listens: an IPv6 address and an IPv4 address on the same port are
//! two listeners, as an appliance serving both `[::]:53` and `0.0.0.0:53` needs; and what its
//! metrics endpoint counts of the queries answered there.

#[path = "support/dnsbl_harness.rs"]
mod harness;

use std::net::{SocketAddr, TcpListener};

use harness::{Moat, Via, dig, free_udp_port, ip4_name, zone_file};

/// A port free for UDP and TCP on both loopback addresses at the moment of asking.
fn free_dual_port() -> u16 {
    for _ in 0..50 {
        let port = free_udp_port();
        let free = ["127.0.0.1", "[::1]"].iter().all(|host| {
            let addr: SocketAddr = format!("{host}:{port}").parse().expect("an address");
            TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and [::1]");
}

#[test]
fn ipv6_and_ipv4_loopback_share_a_port_over_udp_and_tcp() {
    let port = free_dual_port();
    let v6 = format!("[::1]:{port}");
    let v4 = format!("127.0.0.1:{port}");
    let moat = Moat::start_on(
        &[&v6, &v4],
        &[format!(
            "--zone=bl.test:ip4set:{}",
            zone_file("d01.txt").display()
        )],
    );

    let log = moat.log();
    for addr in [&v6, &v4] {
        assert!(
            log.contains(&format!("addr={addr}")),
            "not listening on {addr}:\n{log}"
        );
        let server: SocketAddr = addr.parse().expect("an address");
        for via in [Via::Udp, Via::Tcp] {
            let reply = dig(server, &ip4_name("1.2.3.4", "bl.test"), "A", via);
            assert!(reply.listed(), "{addr} {via:?}: {reply:?}");
        }
    }
}

#[test]
fn the_metrics_endpoint_counts_queries_by_transport_and_outcome() {
    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let moat = Moat::start(&[
        format!("--zone=bl.test:ip4set:{}", zone_file("d01.txt").display()),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
    ]);

    assert!(dig(moat.addr, &ip4_name("1.2.3.4", "bl.test"), "A", Via::Udp).listed());
    assert!(dig(moat.addr, &ip4_name("1.2.3.4", "bl.test"), "A", Via::Tcp).listed());
    assert_eq!(
        dig(moat.addr, "www.example.com", "A", Via::Udp).status,
        "REFUSED"
    );

    let body = scrape(metrics_port);
    for line in [
        "moat_dnsbl_queries_total{transport=\"udp\",outcome=\"listed\"} 1\n",
        "moat_dnsbl_queries_total{transport=\"tcp\",outcome=\"listed\"} 1\n",
        "moat_dnsbl_queries_total{transport=\"udp\",outcome=\"not_our_zone\"} 1\n",
    ] {
        assert!(body.contains(line), "no {line:?} in:\n{body}");
    }
}

/// The body of `GET /metrics` on a loopback port, waiting a moment for the endpoint to listen
/// (it starts after the DNS listeners that `Moat::start` waits for).
fn scrape(port: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) if std::time::Instant::now() > deadline => {
                panic!("metrics endpoint on port {port}: {error}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("read metrics");
    response
}
