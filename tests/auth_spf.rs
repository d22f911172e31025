//! SPF at MAIL FROM against a real authoritative DNS server (Knot DNS on loopback): every
//! result of RFC 7208 section 2.6, `include:`, `redirect=`, `mx`, `a`, the HELO identity, the
//! null reverse-path, and a DNS server that is down or hangs (`temperror`, within the time).

mod common;
#[path = "support/auth_harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{
    CHECK_TIMEOUT, Dns, QUERY_TIMEOUT, Record, closed_port, sender_auth, sender_auth_with,
    silent_server,
};
use moat_gateway::{SpfReport, SpfResult};

/// The policies the tests ask about.
fn records() -> Vec<Record> {
    vec![
        Record::txt(
            "example.com",
            "v=spf1 ip4:192.0.2.0/24 include:_spf.example.org -all",
        ),
        Record::txt("_spf.example.org", "v=spf1 ip4:198.51.100.0/24 ~all"),
        Record::txt("soft.example.com", "v=spf1 ip4:192.0.2.0/24 ~all"),
        Record::txt("neutral.example.com", "v=spf1 ?all"),
        Record::txt("redirect.example.com", "v=spf1 redirect=example.com"),
        Record::txt("broken.example.com", "v=spf1 ip4:192.0.2.0/24 include -all"),
        Record::txt("mx.example.com", "v=spf1 mx -all"),
        Record::mx("mx.example.com", 10, "smtp.mx.example.com"),
        Record::address("smtp.mx.example.com", "192.0.2.20"),
        Record::txt("v6.example.com", "v=spf1 ip6:2001:db8::/32 -all"),
        // A domain with an address and no SPF record.
        Record::address("nospf.example.com", "192.0.2.30"),
        // The HELO name of the sending host authorises itself.
        Record::txt("mail.example.com", "v=spf1 a -all"),
        Record::address("mail.example.com", "192.0.2.10"),
    ]
}

async fn spf(dns: &Dns, ip: &str, helo: &str, reverse_path: &str) -> SpfReport {
    sender_auth(dns.addr)
        .check_spf(ip.parse().expect("address"), helo, reverse_path)
        .await
}

#[tokio::test]
async fn each_policy_gives_its_rfc_7208_result() {
    let dns = Dns::start(&records());
    let cases = [
        ("192.0.2.10", "user@example.com", SpfResult::Pass),
        // Through include:, whose own ~all does not leak out.
        ("198.51.100.7", "user@example.com", SpfResult::Pass),
        ("203.0.113.5", "user@example.com", SpfResult::Fail),
        ("203.0.113.5", "user@soft.example.com", SpfResult::SoftFail),
        (
            "203.0.113.5",
            "user@neutral.example.com",
            SpfResult::Neutral,
        ),
        ("192.0.2.10", "user@redirect.example.com", SpfResult::Pass),
        ("203.0.113.5", "user@redirect.example.com", SpfResult::Fail),
        ("192.0.2.20", "user@mx.example.com", SpfResult::Pass),
        ("192.0.2.21", "user@mx.example.com", SpfResult::Fail),
        ("2001:db8::25", "user@v6.example.com", SpfResult::Pass),
        ("2001:db9::25", "user@v6.example.com", SpfResult::Fail),
        ("192.0.2.30", "user@nospf.example.com", SpfResult::None),
        ("192.0.2.30", "user@nxdomain.example.com", SpfResult::None),
        (
            "192.0.2.10",
            "user@broken.example.com",
            SpfResult::PermError,
        ),
    ];
    for (ip, reverse_path, expected) in cases {
        let report = spf(&dns, ip, "client.example.net", reverse_path).await;
        assert_eq!(
            report.mail_from.result, expected,
            "{reverse_path} from {ip}: {report:?}"
        );
        let domain = reverse_path.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        assert_eq!(report.mail_from.domain, domain);
    }
}

#[tokio::test]
async fn the_helo_identity_is_checked_beside_mail_from() {
    let dns = Dns::start(&records());

    let report = spf(
        &dns,
        "192.0.2.10",
        "mail.example.com",
        "user@soft.example.com",
    )
    .await;
    assert_eq!(report.helo.result, SpfResult::Pass);
    assert_eq!(report.helo.domain, "mail.example.com");
    assert_eq!(report.mail_from.result, SpfResult::Pass);

    let forged = spf(
        &dns,
        "203.0.113.5",
        "mail.example.com",
        "user@soft.example.com",
    )
    .await;
    assert_eq!(forged.helo.result, SpfResult::Fail);
    assert_eq!(forged.mail_from.result, SpfResult::SoftFail);

    // An address literal names no domain to ask.
    let literal = spf(&dns, "192.0.2.10", "[192.0.2.10]", "user@example.com").await;
    assert_eq!(literal.helo.result, SpfResult::None);
    assert_eq!(literal.mail_from.result, SpfResult::Pass);
}

#[tokio::test]
async fn the_null_reverse_path_is_checked_as_postmaster_at_the_helo_name() {
    let dns = Dns::start(&records());

    let bounce = spf(&dns, "192.0.2.10", "mail.example.com", "").await;
    assert_eq!(bounce.mail_from.result, SpfResult::Pass);
    assert_eq!(bounce.mail_from.domain, "mail.example.com");
    assert_eq!(bounce.reverse_path, "");

    let forged = spf(&dns, "203.0.113.5", "mail.example.com", "").await;
    assert_eq!(forged.mail_from.result, SpfResult::Fail);
    assert_eq!(forged.helo.result, SpfResult::Fail);
}

#[tokio::test]
async fn a_dns_server_that_is_down_gives_temperror_within_the_query_timeout() {
    let auth = sender_auth(closed_port());
    let start = Instant::now();
    let report = auth
        .check_spf(
            "192.0.2.10".parse().expect("address"),
            "mail.example.com",
            "user@example.com",
        )
        .await;
    assert_eq!(report.mail_from.result, SpfResult::TempError);
    assert_eq!(report.helo.result, SpfResult::TempError);
    // Over UDP a closed port is only a silence: the query's own time ends it, well inside the
    // check's.
    let took = start.elapsed();
    assert!(
        took < QUERY_TIMEOUT + Duration::from_millis(500),
        "took {took:?}"
    );
    assert!(took < CHECK_TIMEOUT);
}

#[tokio::test]
async fn a_dns_server_that_never_answers_gives_temperror_within_the_timeout() {
    let (addr, _udp, _tcp) = silent_server();
    // A check and each of its queries may take a second; whichever limit ends it, the session
    // has its answer within the check's time.
    let timeout = Duration::from_secs(1);
    let auth = sender_auth_with(addr, |settings| {
        settings.timeout = timeout;
        settings.dns_timeout = timeout;
    });
    let start = Instant::now();
    let report = auth
        .check_spf(
            "192.0.2.10".parse().expect("address"),
            "mail.example.com",
            "user@example.com",
        )
        .await;
    let took = start.elapsed();
    assert_eq!(report.mail_from.result, SpfResult::TempError);
    assert_eq!(report.helo.result, SpfResult::TempError);
    assert!(took >= timeout / 2, "answered too soon: {took:?}");
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
}

/// RFC 7208 Appendix A: the examples of A.1 (simple), A.2 (multiple domains), A.4 (DNSBL
/// style, with macros) and A.5 (multiple requirements), as mail-auth's test suite lays them
/// out. Each example replaces example.com's record, so each runs against its own server.
#[tokio::test]
async fn rfc_7208_appendix_a_examples_give_the_rfcs_results() {
    // A.1's zone, shared by the examples.
    let base = || {
        vec![
            Record::mx("example.com", 10, "mail-a.example.com"),
            Record::mx("example.com", 20, "mail-b.example.com"),
            Record::address("mail-a.example.com", "192.0.2.129"),
            Record::address("mail-b.example.com", "192.0.2.130"),
            Record::address("amy.example.com", "192.0.2.65"),
            Record::address("bob.example.com", "192.0.2.66"),
            Record::address("www.example.com", "192.0.2.10"),
            Record::address("www.example.com", "192.0.2.11"),
            Record::address("example.com", "192.0.2.10"),
            Record::address("example.com", "192.0.2.11"),
            Record::address("mail-c.example.org", "192.0.2.140"),
            Record::mx("example.org", 10, "mail-c.example.org"),
            Record::ptr("192.0.2.10", "example.com"),
            Record::ptr("192.0.2.11", "example.com"),
            Record::ptr("192.0.2.65", "amy.example.com"),
            Record::ptr("192.0.2.66", "bob.example.com"),
            Record::ptr("192.0.2.129", "mail-a.example.com"),
            Record::ptr("192.0.2.130", "mail-b.example.com"),
            Record::ptr("192.0.2.140", "mail-c.example.org"),
            Record::ptr("10.0.0.4", "bob.example.com"),
        ]
    };
    use SpfResult::{Fail, Pass};
    let simple: &[(&str, &[(&str, SpfResult)])] = &[
        ("v=spf1 +all", &[("172.168.0.1", Pass), ("10.1.1.1", Pass)]),
        (
            "v=spf1 a -all",
            &[
                ("192.0.2.10", Pass),
                ("192.0.2.11", Pass),
                ("192.0.2.12", Fail),
            ],
        ),
        (
            "v=spf1 a:example.org -all",
            &[("192.0.2.10", Fail), ("192.0.2.12", Fail)],
        ),
        (
            "v=spf1 mx -all",
            &[
                ("192.0.2.129", Pass),
                ("192.0.2.130", Pass),
                ("192.0.2.12", Fail),
            ],
        ),
        (
            "v=spf1 mx:example.org -all",
            &[("192.0.2.140", Pass), ("192.0.2.130", Fail)],
        ),
        (
            "v=spf1 mx mx:example.org -all",
            &[
                ("192.0.2.129", Pass),
                ("192.0.2.140", Pass),
                ("192.0.2.12", Fail),
            ],
        ),
        (
            "v=spf1 mx/30 mx:example.org/30 -all",
            &[
                ("192.0.2.128", Pass),
                ("192.0.2.141", Pass),
                ("192.0.2.12", Fail),
            ],
        ),
        (
            "v=spf1 ptr -all",
            &[
                ("192.0.2.65", Pass),
                ("192.0.2.140", Fail),
                ("10.0.0.4", Fail),
            ],
        ),
        (
            "v=spf1 ip4:192.0.2.128/28 -all",
            &[("192.0.2.65", Fail), ("192.0.2.129", Pass)],
        ),
    ];
    for (policy, expectations) in simple {
        let mut records = base();
        records.push(Record::txt("example.com", policy));
        let dns = Dns::start(&records);
        for (ip, expected) in *expectations {
            let report = spf(&dns, ip, "example.com", "user@example.com").await;
            assert_eq!(report.mail_from.result, *expected, "{policy} from {ip}");
        }
    }

    // A.2: several domains, include: and redirect=.
    let mut records = base();
    records.extend([
        Record::txt("example.com", "v=spf1 ip4:192.0.2.128/28 -all"),
        Record::txt("example.net", "v=spf1 ip4:10.0.0.5 -all"),
        Record::txt(
            "example.org",
            "v=spf1 include:example.com include:example.net -all",
        ),
        Record::txt("sf.example.org", "v=spf1 redirect=example.org"),
    ]);
    let dns = Dns::start(&records);
    let sf = |ip| spf(&dns, ip, "sf.example.org", "tom@sf.example.org");
    assert_eq!(sf("192.0.2.129").await.mail_from.result, Pass);
    assert_eq!(sf("10.0.0.5").await.mail_from.result, Pass);
    assert_eq!(sf("10.0.0.4").await.mail_from.result, Fail);

    // A.4: a DNSBL-style policy built from macros (%{l1r+}, %{ir}, %{d}).
    let mut records = base();
    records.extend([
        Record::address("mary.mobile-users._spf.example.com", "127.0.0.2"),
        Record::address("fred.mobile-users._spf.example.com", "127.0.0.2"),
        Record::address(
            "15.15.168.192.joel.remote-users._spf.example.com",
            "127.0.0.2",
        ),
        Record::address(
            "16.15.168.192.joel.remote-users._spf.example.com",
            "127.0.0.2",
        ),
        Record::txt(
            "example.com",
            "v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all",
        ),
        Record::txt(
            "mobile-users._spf.example.com",
            "v=spf1 exists:%{l1r+}.%{d}",
        ),
        Record::txt(
            "remote-users._spf.example.com",
            "v=spf1 exists:%{ir}.%{l1r+}.%{d}",
        ),
    ]);
    let dns = Dns::start(&records);
    for (ip, sender, expected) in [
        ("192.168.15.15", "joel@example.com", Pass),
        ("192.168.15.16", "joel@example.com", Pass),
        ("192.168.15.17", "joel@example.com", Fail),
        ("1.1.1.1", "mary@example.com", Pass),
    ] {
        let report = spf(&dns, ip, "mx.example.com", sender).await;
        assert_eq!(report.mail_from.result, expected, "{sender} from {ip}");
    }

    // A.5: requirements combined with negated includes.
    let mut records = base();
    records.extend([
        Record::txt(
            "example.com",
            "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all",
        ),
        Record::txt("ip4._spf.example.com", "v=spf1 -ip4:192.0.2.0/24 +all"),
        Record::txt("ptr._spf.example.com", "v=spf1 -ptr:example.com +all"),
    ]);
    let dns = Dns::start(&records);
    // TODO(#5): the RFC's passing case, 192.0.2.10 (in the network, named example.com), is
    // left out: mail-auth 0.13.3 compares PTR names with their trailing dot, so `ptr:example.com`
    // matches subdomains of example.com but never example.com itself. Put it back once mail-auth
    // is fixed; `ptr` is deprecated (RFC 7208 section 5.5), so little real mail depends on it.
    // 192.0.2.12 is in the network but has no name in example.com: it fails.
    assert_eq!(
        spf(&dns, "192.0.2.12", "mx.example.com", "mary@example.com")
            .await
            .mail_from
            .result,
        Fail
    );
}
