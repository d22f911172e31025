//! Where `moat dnsbl serve` listens: an IPv6 address and an IPv4 address on the same port are
//! two listeners, as an appliance serving both `[::]:53` and `0.0.0.0:53` needs.

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
