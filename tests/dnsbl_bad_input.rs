//! Bad input to `moat dnsbl serve`: malformed and hostile packets over UDP, broken TCP frames,
//! names too long, queries it does not serve. Each gets the right code or no reply at all,
//! and the server keeps answering.

#[path = "support/dnsbl_harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use harness::{Moat, Via, dig, zone_file};

fn serve() -> Moat {
    Moat::zone("ip4set", &zone_file("d01.txt"))
}

/// A query for `name` (wire form) with type `qtype`, class IN, ID 0xbeef.
fn query(name: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).expect("short label"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Sends `packet` and returns the reply, or `None` if none came within 300 ms.
fn exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    socket.send_to(packet, server).expect("send");
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..len].to_vec())
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

fn assert_still_answers(moat: &Moat) {
    let reply = dig(moat.addr, "4.3.2.1.bl.test", "A", Via::Udp);
    assert!(
        reply.listed(),
        "the server stopped answering:\n{}\n{}",
        reply.raw,
        moat.log()
    );
}

#[test]
fn malformed_udp_packets_get_formerr_or_no_reply_and_the_server_goes_on() {
    let moat = serve();
    let mut header_only = query(b"\x00", 1);
    header_only.truncate(12);
    let mut two_questions = query(b"\x00", 1);
    two_questions[5] = 2;
    let mut response = query(&wire("4.3.2.1.bl.test"), 1);
    response[2] |= 0x80;
    let mut label_past_end = query(b"\x3fabc", 1);
    label_past_end.truncate(16);

    let formerr = [
        ("a header without question", header_only),
        ("two questions", two_questions),
        (
            "a compression pointer in the question",
            query(b"\xc0\x0c", 1),
        ),
        ("a label running past the end", label_past_end),
        (
            "a label length of 64",
            query(&[&[64u8][..], &[b'x'; 64], &[0]].concat(), 1),
        ),
    ];
    for (what, packet) in formerr {
        let reply = exchange(moat.addr, &packet).unwrap_or_else(|| panic!("no reply to {what}"));
        assert_eq!(
            (&reply[..2], rcode(&reply)),
            (&[0xbe, 0xef][..], 1),
            "{what}"
        );
    }
    for (what, packet) in [
        ("nothing", Vec::new()),
        ("five bytes", vec![1, 2, 3, 4, 5]),
        ("a response", response),
    ] {
        assert_eq!(
            exchange(moat.addr, &packet),
            None,
            "{what} must get no reply"
        );
    }

    // Pseudo-random garbage, deterministic: whatever it is, no crash.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..2000 {
        let len = 12 + (i % 300);
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        socket.send_to(&packet, moat.addr).expect("send");
    }
    assert_still_answers(&moat);
}

#[test]
fn names_over_255_bytes_get_formerr() {
    let moat = serve();
    let mut name = Vec::new();
    for _ in 0..5 {
        name.push(60);
        name.extend_from_slice(&[b'a'; 60]);
    }
    name.push(0);
    let reply = exchange(moat.addr, &query(&name, 1)).expect("a reply");
    assert_eq!(rcode(&reply), 1);
    assert_still_answers(&moat);
}

#[test]
fn queries_for_zones_not_served_are_refused_without_aa() {
    let moat = serve();
    for name in ["example.com", "test", "1.2.3.4.bl.test.example", "bl.tes"] {
        let reply = dig(moat.addr, name, "A", Via::Udp);
        assert_eq!(reply.status, "REFUSED", "{}", reply.raw);
        assert!(!reply.flag("aa"), "{}", reply.raw);
    }
}

#[test]
fn other_opcodes_meta_types_and_classes_are_not_answered_from_data() {
    let moat = serve();
    let mut status = query(&wire("4.3.2.1.bl.test"), 1);
    status[2] = 2 << 3;
    assert_eq!(
        rcode(&exchange(moat.addr, &status).expect("a reply")),
        4,
        "opcode STATUS: NOTIMP"
    );
    let axfr = query(&wire("bl.test"), 252);
    assert_eq!(
        rcode(&exchange(moat.addr, &axfr).expect("a reply")),
        4,
        "AXFR: NOTIMP"
    );
    let mut chaos = query(&wire("version.bind"), 16);
    let len = chaos.len();
    chaos[len - 1] = 3;
    assert_eq!(
        rcode(&exchange(moat.addr, &chaos).expect("a reply")),
        5,
        "class CH: REFUSED"
    );
}

#[test]
fn edns_version_above_zero_gets_badvers() {
    let moat = serve();
    let mut packet = query(&wire("4.3.2.1.bl.test"), 1);
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 1, 0, 0, 0, 0]);
    let reply = exchange(moat.addr, &packet).expect("a reply");
    // BADVERS is 16: 0 in the header, 1 in the OPT record's extended code.
    let opt = reply.len() - 11;
    assert_eq!((rcode(&reply), reply[opt + 5]), (0, 1), "{reply:?}");
}

#[test]
fn truncated_and_garbage_tcp_frames_close_the_connection_and_nothing_else() {
    let moat = serve();
    let send = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(moat.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        rest
    };
    assert!(send(&[0x00]).is_empty(), "half a length prefix");
    assert!(
        send(&[0x00, 0x40, 1, 2, 3]).is_empty(),
        "a frame shorter than its length"
    );
    let garbage = send(&[0x00, 0x05, 1, 2, 3, 4, 5]);
    assert!(garbage.is_empty() || garbage.len() >= 14, "{garbage:?}");

    // A whole frame on the same kind of connection is answered.
    let packet = query(&wire("4.3.2.1.bl.test"), 1);
    let mut framed = u16::try_from(packet.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&packet);
    let reply = send(&framed);
    assert!(reply.len() > 14 && rcode(&reply[2..]) == 0, "{reply:?}");
    let tcp = dig(moat.addr, "4.3.2.1.bl.test", "A", Via::Tcp);
    assert!(tcp.listed(), "{}", tcp.raw);
    assert_still_answers(&moat);
}
