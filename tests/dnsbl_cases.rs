//! Every row of shared/cases/dnsbl-zones.md: a dataset served by `moat dnsbl serve` as zone
//! `bl.test`, queried with dig over UDP without EDNS unless the row says otherwise. Rows
//! marked O hold rbldnsd's observed answers (dnsbl_differential.rs also compares them live);
//! D01..D31 keep the table's numbers. Where Moat deliberately answers better (D30, D31), the
//! test says so in its name.

#[path = "support/dnsbl_harness.rs"]
mod harness;

use harness::{Moat, Reply, Via, dig, ip4_name, ip6_name, zone_file};

fn serve(kind: &str, file: &str) -> Moat {
    Moat::zone(kind, &zone_file(file))
}

fn a(moat: &Moat, ip: &str) -> Reply {
    dig(moat.addr, &ip4_name(ip, "bl.test"), "A", Via::Udp)
}

fn txt(moat: &Moat, ip: &str) -> Reply {
    dig(moat.addr, &ip4_name(ip, "bl.test"), "TXT", Via::Udp)
}

fn assert_listed_a(reply: &Reply, expected: &[&str]) {
    assert!(reply.listed(), "expected a listing:\n{}", reply.raw);
    assert_eq!(reply.data("A"), expected, "{}", reply.raw);
}

fn assert_nx(reply: &Reply) {
    assert!(reply.nx(), "expected NXDOMAIN with SOA:\n{}", reply.raw);
}

#[test]
fn d01_single_address_is_listed_with_default_ttl_and_nx_uses_soa_minimum() {
    let moat = serve("ip4set", "d01.txt");
    let listed = a(&moat, "1.2.3.4");
    assert_listed_a(&listed, &["127.0.0.2"]);
    assert_eq!(listed.answer[0].ttl, 2100);
    let nodata = txt(&moat, "1.2.3.4");
    assert!(nodata.nodata(), "{}", nodata.raw);
    let nx = a(&moat, "1.2.3.5");
    assert_nx(&nx);
    assert_eq!(nx.soa_ttl(), Some(3600));
}

#[test]
fn d02_value_without_leading_colon_is_txt_only() {
    let moat = serve("ip4set", "d02.txt");
    assert_listed_a(&a(&moat, "1.2.3.4"), &["127.0.0.2"]);
    assert_eq!(txt(&moat, "1.2.3.4").txt(), ["127.0.0.3"]);
}

#[test]
fn d03_default_value_substitutes_the_address_in_txt() {
    let moat = serve("ip4set", "d03.txt");
    assert_listed_a(&a(&moat, "10.0.0.1"), &["127.0.0.3"]);
    assert_eq!(
        txt(&moat, "10.0.0.1").txt(),
        ["Listed 10.0.0.1 see http://x/?10.0.0.1"]
    );
    let any = dig(moat.addr, &ip4_name("10.0.0.1", "bl.test"), "ANY", Via::Udp);
    assert_eq!(any.data("A"), ["127.0.0.3"], "{}", any.raw);
    assert_eq!(any.txt(), ["Listed 10.0.0.1 see http://x/?10.0.0.1"]);
}

#[test]
fn d04_per_entry_a_and_txt_forms() {
    let moat = serve("ip4set", "d04.txt");
    assert_listed_a(&a(&moat, "10.0.0.5"), &["127.0.0.5"]);
    assert_eq!(txt(&moat, "10.0.0.5").txt(), ["IP 10.0.0.5 is listed"]);
    assert_listed_a(&a(&moat, "10.0.0.6"), &["127.0.0.6"]);
    assert!(txt(&moat, "10.0.0.6").nodata());
    assert_listed_a(&a(&moat, "10.0.0.7"), &["127.0.0.2"]);
    assert_eq!(txt(&moat, "10.0.0.7").txt(), ["open relay 10.0.0.7"]);
}

#[test]
fn d05_prefixes_and_ranges() {
    let moat = serve("ip4set", "d05.txt");
    for listed in [
        "10.20.1.1",
        "10.200.0.10",
        "10.1.2.200",
        "12.0.0.6",
        "11.5.5.5",
    ] {
        assert_listed_a(&a(&moat, listed), &["127.0.0.2"]);
    }
    for unlisted in ["10.15.255.255", "10.32.0.0", "10.200.0.11", "12.0.0.8"] {
        assert_nx(&a(&moat, unlisted));
    }
}

#[test]
fn d06_malformed_lines_are_skipped_with_warnings_and_the_rest_loads() {
    let moat = serve("ip4set", "d06.txt");
    for unlisted in ["10.9.9.1", "8.8.8.8", "10.0.0.2"] {
        assert_nx(&a(&moat, unlisted));
    }
    assert_listed_a(&a(&moat, "10.0.0.1"), &["127.0.0.2"]);
    let log = moat.log();
    let skipped = log
        .lines()
        .filter(|l| l.contains("dataset line skipped"))
        .count();
    assert_eq!(skipped, 5, "{log}");
    assert!(
        log.contains("d06.txt") && log.contains("line=3"),
        "warnings name file and line:\n{log}"
    );
    assert!(log.contains("warnings=5"), "{log}");
}

#[test]
fn d06_accept_in_cidr_lists_the_masked_block() {
    let dir = harness::TempDir::new("d06e");
    let config = dir.path().join("moat.toml");
    let file = zone_file("d06.txt");
    std::fs::write(
        &config,
        format!(
            "[dnsbl]\naccept_in_cidr = true\n\
             [[dnsbl.zone]]\nname = \"bl.test\"\ndatasets = [\"ip4set:{}\"]\n",
            file.display()
        ),
    )
    .expect("write config");
    let moat = Moat::start(&[format!("--config={}", config.display())]);
    assert_listed_a(&a(&moat, "10.9.9.1"), &["127.0.0.2"]);
}

#[test]
fn d07_exclusions_win_at_equal_specificity_in_either_order() {
    let moat = serve("ip4set", "d07.txt");
    for listed in ["10.0.0.6", "10.1.0.9", "10.3.0.200"] {
        assert_listed_a(&a(&moat, listed), &["127.0.0.2"]);
    }
    for unlisted in ["10.0.0.5", "10.1.0.8", "10.2.0.7", "10.3.0.1"] {
        assert_nx(&a(&moat, unlisted));
    }
}

#[test]
fn d08_several_values_of_one_address_are_all_answered_once_each() {
    let moat = serve("ip4set", "d08.txt");
    assert_listed_a(&a(&moat, "10.0.0.8"), &["127.0.0.2", "127.0.0.3"]);
    assert_eq!(txt(&moat, "10.0.0.8").txt(), ["a", "b"]);
    let one = a(&moat, "10.0.0.9");
    assert_eq!(one.answer.len(), 1, "{}", one.raw);
    assert_listed_a(&one, &["127.0.0.2"]);
}

#[test]
fn d09_ip4tset_first_default_wins_and_entry_values_are_ignored() {
    let moat = serve("ip4tset", "d09.txt");
    assert_listed_a(&a(&moat, "10.0.0.1"), &["127.0.0.3"]);
    assert_eq!(txt(&moat, "10.0.0.1").txt(), ["first 10.0.0.1"]);
    assert_eq!(txt(&moat, "10.0.0.3").txt(), ["first 10.0.0.3"]);
    assert_nx(&a(&moat, "10.0.0.2"));
    assert_nx(&a(&moat, "10.0.1.1"));
}

#[test]
fn d10_ip4trie_longest_prefix_and_first_duplicate_win() {
    let moat = serve("ip4trie", "d10.txt");
    assert_listed_a(&a(&moat, "10.1.2.3"), &["127.0.0.3"]);
    assert_listed_a(&a(&moat, "10.2.0.1"), &["127.0.0.2"]);
    assert_nx(&a(&moat, "10.1.5.1"));
    assert_nx(&a(&moat, "20.0.0.2"));
    assert_listed_a(&a(&moat, "30.1.2.9"), &["127.0.0.2"]);
}

#[test]
fn d11_ip4trie_zero_prefix_lists_everything_below_longer_ones() {
    let moat = serve("ip4trie", "d11.txt");
    assert_eq!(txt(&moat, "127.0.0.1").txt(), ["lo"]);
    assert_eq!(txt(&moat, "8.8.8.8").txt(), ["wild"]);
}

#[test]
fn d12_ip6trie_nibble_names() {
    let moat = serve("ip6trie", "d12.txt");
    let q = |ip: &str, t: &str| dig(moat.addr, &ip6_name(ip, "bl.test"), t, Via::Udp);
    assert_listed_a(&q("2001:db8::1", "A"), &["127.0.1.2"]);
    assert_eq!(q("2001:db8::1", "TXT").txt(), ["v6 2001:db8::1 listed"]);
    assert_nx(&q("2001:db8::beef", "A"));
    assert_eq!(
        q("2001:db9:1:2::5", "TXT").txt(),
        ["slash64 2001:db9:1:2::5"]
    );
    assert_nx(&q("2001:db9:1:3::5", "A"));
    assert!(q("::1", "A").listed());
}

#[test]
fn d13_ip6tset_takes_only_slash64_listings_and_full_exclusions() {
    let moat = serve("ip6tset", "d13.txt");
    let q = |ip: &str, t: &str| dig(moat.addr, &ip6_name(ip, "bl.test"), t, Via::Udp);
    assert!(q("2001:db8:1:2::5", "A").listed());
    assert_eq!(q("2001:db8:1:2::5", "TXT").txt(), ["tset 2001:db8:1:2::5"]);
    assert_nx(&q("2001:db8:1:2::7", "A"));
    assert_nx(&q("2001:db8::1", "A"));
    assert_eq!(
        moat.log().matches("dataset line skipped").count(),
        2,
        "{}",
        moat.log()
    );
}

#[test]
fn d14_dnset_wildcards_exclusions_and_case() {
    let moat = serve("dnset", "d14.txt");
    let q = |name: &str, t: &str| dig(moat.addr, &format!("{name}.bl.test"), t, Via::Udp);
    for listed in [
        "plain.example",
        "a.star.example",
        "dot.example",
        "x.ex.dot.example",
        "deep.dot.example",
    ] {
        assert!(q(listed, "A").listed(), "{listed}:\n{}", q(listed, "A").raw);
    }
    for unlisted in [
        "sub.plain.example",
        "star.example",
        "ex.dot.example",
        "x.deep.dot.example",
    ] {
        assert_nx(&q(unlisted, "A"));
    }
    assert_eq!(
        q("a.b.star.example", "TXT").txt(),
        ["Domain star.example listed"]
    );
    assert_eq!(
        q("a.dot.example", "TXT").txt(),
        ["Domain dot.example listed"]
    );
    let mixed = dig(moat.addr, "mixed.case.EXAMPLE.bl.test", "TXT", Via::Udp);
    assert_eq!(mixed.txt(), ["Domain mixed.case.example listed"]);
}

#[test]
fn d15_zone_without_soa_or_ns_refuses_them_and_answers_without_authority() {
    let moat = serve("ip4set", "d15.txt");
    assert_eq!(dig(moat.addr, "bl.test", "SOA", Via::Udp).status, "REFUSED");
    assert_eq!(dig(moat.addr, "bl.test", "NS", Via::Udp).status, "REFUSED");
    let apex = dig(moat.addr, "bl.test", "A", Via::Udp);
    assert_eq!(
        (apex.status.as_str(), apex.answer.len()),
        ("NOERROR", 0),
        "{}",
        apex.raw
    );
    let nx = a(&moat, "9.9.9.9");
    assert_eq!(nx.status, "NXDOMAIN");
    assert!(nx.authority.is_empty(), "{}", nx.raw);
}

#[test]
fn d16_soa_and_ns_at_the_apex() {
    let moat = serve("ip4set", "d16.txt");
    let soa = dig(moat.addr, "bl.test", "SOA", Via::Udp);
    assert_eq!(soa.answer.len(), 1, "{}", soa.raw);
    assert_eq!(soa.answer[0].ttl, 3600);
    assert_eq!(soa.answer[0].data.split_whitespace().nth(2), Some("42"));
    let ns = dig(moat.addr, "bl.test", "NS", Via::Udp);
    assert_eq!(ns.data("NS"), ["ns1.bl.test.", "ns3.bl.test."]);
    assert!(ns.answer.iter().all(|r| r.ttl == 86_400));
    assert_eq!(a(&moat, "10.0.0.2").soa_ttl(), Some(600));
}

#[test]
fn d16_serial_zero_answers_the_dataset_version() {
    let moat = serve("ip4set", "d01.txt");
    let soa = dig(moat.addr, "bl.test", "SOA", Via::Udp);
    let serial: u64 = soa.answer[0]
        .data
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .expect("a serial");
    let mtime = std::fs::metadata(zone_file("d01.txt"))
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(serial, mtime);
}

#[test]
fn d22_combined_dataset_serves_subzones_and_the_base_zone() {
    let moat = serve("combined", "d22.txt");
    let q = |name: &str, t: &str| dig(moat.addr, name, t, Via::Udp);
    assert_eq!(
        q("2.0.0.10.bl.test", "A").data("A"),
        ["127.0.0.2", "127.0.0.3"]
    );
    assert_eq!(q("2.0.0.10.proxies.bl.test", "A").data("A"), ["127.0.0.2"]);
    assert_nx(&q("10.2.0.10.proxies.bl.test", "A"));
    assert_eq!(
        q("10.2.0.10.bl.test", "TXT").txt(),
        ["Open relay 10.0.2.10"]
    );
    assert!(q("bad.example.dom.bl.test", "A").listed());
    assert_nx(&q("bad.example.bl.test", "A"));
    assert_eq!(q("proxies.bl.test", "A").data("A"), ["127.0.0.8"]);
    assert_eq!(q("www.relays.bl.test", "TXT").txt(), ["about"]);
    assert_eq!(q("bl.test", "MX").data("MX"), ["10 mx.ex.com."]);
    assert!(q("dom.bl.test", "A").nodata());
    let soa = q("proxies.bl.test", "SOA");
    assert!(soa.nodata(), "{}", soa.raw);
    assert_eq!(soa.authority[0].name, "bl.test.");
}

#[test]
fn d30_better_than_rbldnsd_large_answers_set_tc_and_come_whole_over_tcp() {
    let moat = serve("ip4set", "d30.txt");
    let name = ip4_name("10.0.0.1", "bl.test");
    let udp = dig(moat.addr, &name, "TXT", Via::Udp);
    assert!(udp.flag("tc"), "{}", udp.raw);
    assert!(udp.size <= 512, "{}", udp.raw);
    let tcp = dig(moat.addr, &name, "TXT", Via::Tcp);
    assert_eq!(tcp.answer.len(), 60, "{}", tcp.raw);
    assert!(tcp.flag("aa") && !tcp.flag("tc"), "{}", tcp.raw);
    let edns = dig(moat.addr, &name, "TXT", Via::Edns(1232));
    assert!(edns.size <= 1232 && edns.flag("tc"), "{}", edns.raw);
    assert!(edns.answer.len() > udp.answer.len(), "{}", edns.raw);
}

#[test]
fn d31_better_than_rbldnsd_empty_non_terminal_is_nodata() {
    let moat = serve("ip4set", "d31.txt");
    let ent = dig(moat.addr, "0.0.10.bl.test", "A", Via::Udp);
    assert!(
        ent.nodata(),
        "RFC 8020: a name with names below exists:\n{}",
        ent.raw
    );
    assert_nx(&dig(moat.addr, "0.0.11.bl.test", "A", Via::Udp));
}
