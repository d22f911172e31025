//! Moat against rbldnsd, live: both serve the same dataset files of the cases table as zone
//! `bl.test`, dig sends both the same queries, and the replies must match: status, AA, and
//! every record of every section with its TTL. Only the order of records is normalised
//! (rbldnsd rotates NS and generic records). Queries where Moat deliberately answers better
//! (truncation, empty non-terminals: D30, D31) are left to dnsbl_cases.rs.

#[path = "support/dnsbl_harness.rs"]
mod harness;

use harness::{Moat, Rbldnsd, Reply, Via, dig_many, ip4_name, ip6_name, zone_file};

/// One case: the dataset type, its file, and the queries (name relative to `bl.test`, type).
struct Case {
    kind: &'static str,
    file: &'static str,
    queries: Vec<(String, &'static str)>,
}

fn v4(ips: &[&str], types: &[&'static str]) -> Vec<(String, &'static str)> {
    let mut queries = Vec::new();
    for ip in ips {
        for t in types {
            queries.push((ip4_name(ip, "bl.test"), *t));
        }
    }
    queries
}

fn v6(ips: &[&str], types: &[&'static str]) -> Vec<(String, &'static str)> {
    let mut queries = Vec::new();
    for ip in ips {
        for t in types {
            queries.push((ip6_name(ip, "bl.test"), *t));
        }
    }
    queries
}

fn names(names: &[&str], types: &[&'static str]) -> Vec<(String, &'static str)> {
    let mut queries = Vec::new();
    for name in names {
        for t in types {
            let full = if name.is_empty() {
                "bl.test".to_owned()
            } else {
                format!("{name}.bl.test")
            };
            queries.push((full, *t));
        }
    }
    queries
}

/// Queries at the apex that every case gets.
fn apex() -> Vec<(String, &'static str)> {
    names(&[""], &["SOA", "NS", "A", "TXT", "ANY", "MX"])
}

fn cases() -> Vec<Case> {
    const AT: &[&str] = &["A", "TXT"];
    vec![
        Case {
            kind: "ip4set",
            file: "d01.txt",
            queries: v4(&["1.2.3.4", "1.2.3.5"], &["A", "TXT", "ANY"]),
        },
        Case {
            kind: "ip4set",
            file: "d02.txt",
            queries: v4(&["1.2.3.4"], AT),
        },
        Case {
            kind: "ip4set",
            file: "d03.txt",
            queries: v4(&["10.0.0.1", "10.0.0.2"], &["A", "TXT", "ANY"]),
        },
        Case {
            kind: "ip4set",
            file: "d04.txt",
            queries: v4(&["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"], AT),
        },
        Case {
            kind: "ip4set",
            file: "d05.txt",
            queries: v4(
                &[
                    "10.20.1.1",
                    "10.15.255.255",
                    "10.32.0.0",
                    "10.200.0.10",
                    "10.200.0.11",
                    "10.1.2.200",
                    "12.0.0.6",
                    "12.0.0.8",
                    "11.5.5.5",
                ],
                &["A"],
            ),
        },
        Case {
            kind: "ip4set",
            file: "d06.txt",
            queries: v4(
                &["10.9.9.1", "8.8.8.8", "10.0.0.2", "10.0.0.1", "13.1.3.4"],
                &["A"],
            ),
        },
        Case {
            kind: "ip4set",
            file: "d07.txt",
            queries: v4(
                &[
                    "10.0.0.5",
                    "10.0.0.6",
                    "10.1.0.9",
                    "10.1.0.8",
                    "10.2.0.7",
                    "10.3.0.1",
                    "10.3.0.200",
                ],
                &["A"],
            ),
        },
        Case {
            kind: "ip4set",
            file: "d08.txt",
            queries: v4(&["10.0.0.8", "10.0.0.9"], &["A", "TXT", "ANY"]),
        },
        Case {
            kind: "ip4tset",
            file: "d09.txt",
            queries: v4(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1"], AT),
        },
        Case {
            kind: "ip4trie",
            file: "d10.txt",
            queries: v4(
                &["10.1.2.3", "10.2.0.1", "10.1.5.1", "20.0.0.2", "30.1.2.9"],
                AT,
            ),
        },
        Case {
            kind: "ip4trie",
            file: "d11.txt",
            queries: v4(&["127.0.0.1", "8.8.8.8"], AT),
        },
        Case {
            kind: "ip6trie",
            file: "d12.txt",
            queries: v6(
                &[
                    "2001:db8::1",
                    "2001:db8::beef",
                    "2001:db9:1:2::5",
                    "2001:db9:1:3::5",
                    "::1",
                ],
                AT,
            ),
        },
        Case {
            kind: "ip6tset",
            file: "d13.txt",
            queries: v6(&["2001:db8:1:2::5", "2001:db8:1:2::7", "2001:db8::1"], AT),
        },
        Case {
            kind: "dnset",
            file: "d14.txt",
            queries: names(
                &[
                    "plain.example",
                    "sub.plain.example",
                    "star.example",
                    "a.star.example",
                    "a.b.star.example",
                    "dot.example",
                    "a.dot.example",
                    "ex.dot.example",
                    "x.ex.dot.example",
                    "deep.dot.example",
                    "x.deep.dot.example",
                    "mixed.case.EXAMPLE",
                ],
                AT,
            ),
        },
        Case {
            kind: "ip4set",
            file: "d15.txt",
            queries: v4(&["1.2.3.4", "9.9.9.9"], &["A"]),
        },
        Case {
            kind: "ip4set",
            file: "d16.txt",
            queries: v4(&["10.0.0.1", "10.0.0.2"], AT),
        },
        Case {
            kind: "combined",
            file: "d22.txt",
            queries: [
                v4(&["10.0.0.2", "10.0.2.10"], &["A", "TXT"]),
                names(
                    &[
                        "2.0.0.10.proxies",
                        "10.2.0.10.proxies",
                        "2.0.0.10.relays",
                        "bad.example.dom",
                        "bad.example",
                        "proxies",
                        "relays",
                        "www.relays",
                        "www.proxies",
                        "www",
                        "dom",
                    ],
                    &["A", "TXT", "MX", "SOA", "NS"],
                ),
            ]
            .concat(),
        },
        Case {
            kind: "ip4set",
            file: "d31.txt",
            queries: names(&["0.0.11", "1.0.0.10"], &["A"]),
        },
    ]
}

/// A reply with its records in a canonical order; TTLs and everything else kept.
fn normalised(mut reply: Reply) -> Reply {
    reply.answer.sort();
    reply.authority.sort();
    reply.additional.sort();
    reply.flags.sort();
    reply.raw = String::new();
    reply.size = 0;
    reply.edns_udp = None;
    reply
}

#[test]
fn moat_answers_as_rbldnsd_on_every_case() {
    if !Rbldnsd::available() {
        panic!("rbldnsd is not installed: run scripts/setup");
    }
    let mut compared = 0;
    let mut differences = Vec::new();
    for case in cases() {
        let spec = format!("bl.test:{}:{}", case.kind, zone_file(case.file).display());
        let rbldnsd = Rbldnsd::start(std::slice::from_ref(&spec));
        let moat = Moat::start(&[format!("--zone={spec}")]);
        let queries: Vec<(String, &str)> = apex().into_iter().chain(case.queries).collect();
        let theirs = dig_many(rbldnsd.addr, &queries, Via::Udp);
        let ours = dig_many(moat.addr, &queries, Via::Udp);
        for (((name, rtype), theirs), ours) in queries.iter().zip(theirs).zip(ours) {
            assert_ne!(
                theirs.status, "TIMEOUT",
                "rbldnsd did not answer {name} {rtype}"
            );
            compared += 1;
            if normalised(theirs.clone()) != normalised(ours.clone()) {
                differences.push(format!(
                    "{} {name} {rtype}\n--- rbldnsd:\n{}\n--- moat:\n{}",
                    case.file, theirs.raw, ours.raw
                ));
            }
        }
    }
    assert!(compared > 150, "only {compared} queries compared");
    assert!(
        differences.is_empty(),
        "{} of {compared} replies differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn the_comparison_sees_where_moat_deliberately_differs() {
    // A check of the check: on an empty non-terminal (D31) rbldnsd says NXDOMAIN and Moat
    // NODATA, and the normalised replies must differ.
    let spec = format!("bl.test:ip4set:{}", zone_file("d31.txt").display());
    let rbldnsd = Rbldnsd::start(std::slice::from_ref(&spec));
    let moat = Moat::start(&[format!("--zone={spec}")]);
    let query = [("0.0.10.bl.test".to_owned(), "A")];
    let theirs = dig_many(rbldnsd.addr, &query, Via::Udp).remove(0);
    let ours = dig_many(moat.addr, &query, Via::Udp).remove(0);
    assert_eq!(
        (theirs.status.as_str(), ours.status.as_str()),
        ("NXDOMAIN", "NOERROR")
    );
    assert_ne!(normalised(theirs), normalised(ours));
}
