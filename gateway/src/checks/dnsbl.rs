//! DNSBL and DNSWL checks of the client's address, weighed and summed as Postfix's
//! postscreen_dnsbl_sites: local zones in-process, remote lists through one caching resolver.
//!
//! A remote list that refuses our resolver answers 127.255.255.x (Spamhaus: .252 typo, .254
//! public resolver, .255 too many queries). Such an answer, like any answer outside 127/8 (a
//! resolver that rewrites NXDOMAIN), is never a listing: it is logged, counted and raised to
//! the operator, and the list simply does not count for this client. A list that does not
//! answer in time gives no verdict either.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use moat_dnsbl::Zones;

/// Default time a DNSBL lookup may take before it counts as no answer. Short, since the
/// client waits; postscreen_dnsbl_timeout is 10 s, but a list slower than 2 s is a problem
/// better logged than waited for.
pub const DEFAULT_DNSBL_TIMEOUT: Duration = Duration::from_secs(2);

/// Most URL domains of one message looked up: enough for real mail, a bound for spam that
/// lists thousands to make the gateway do the lookups.
const MAX_URI_DOMAINS: usize = 20;

/// How often the same list's refusal is raised again at error level.
const REFUSAL_ALERT_INTERVAL: Duration = Duration::from_secs(60);

/// One list: a zone, the weight of a listing in it, and which answers count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblSite {
    /// The zone, as `zen.spamhaus.org`.
    pub zone: String,
    /// Added to the score when the client is listed; negative for an allowlist (DNSWL).
    pub weight: i32,
    /// Answers that count as a listing, as inclusive ranges; empty means any in 127.0.0.0/8
    /// outside 127.255.255.0/24.
    pub codes: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// The settings of the check.
#[derive(Debug, Clone)]
pub struct DnsblSettings {
    /// The lists.
    pub sites: Vec<DnsblSite>,
    /// Domain lists (rbldnsd dnset, as a DBL or SURBL) asked about the domains of the URLs in
    /// message bodies, at the end of DATA; their weights go into the verdict's score.
    pub uri_sites: Vec<DnsblSite>,
    /// A score at or above this refuses the client's recipients.
    pub threshold: i32,
    /// A score at or below this marks the client allowlisted (it skips greylisting).
    pub allowlist_threshold: i32,
    /// Time each lookup may take.
    pub timeout: Duration,
}

/// What the lists say about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsblScore {
    /// The sum of the weights of the lists that list the client.
    pub score: i32,
    /// The zones that list the client.
    pub listed_by: Vec<String>,
    /// The zones that refused to answer or answered nonsense.
    pub refused_by: Vec<String>,
}

/// The answer of one list for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SiteAnswer {
    /// Listed with a code that counts.
    Listed,
    /// Not listed, or listed with codes that do not count here.
    NotListed,
    /// The list refused the resolver (127.255.255.x) or answered outside 127/8.
    Refused,
    /// No answer in time, or a resolver failure.
    NoVerdict,
}

/// The DNSBL check, shared by every session.
pub struct DnsblCheck {
    settings: DnsblSettings,
    /// The zones this Moat serves itself, looked up without a DNS round trip.
    zones: Option<Zones>,
    resolver: TokioResolver,
    /// Refusals per zone, and when each was last raised at error level.
    refusals: Mutex<HashMap<String, (u64, Option<Instant>)>>,
    lookups: AtomicU64,
}

impl DnsblCheck {
    /// Sets up the check; `zones` are the locally served zones, looked up in-process, and
    /// `resolver` the caching resolver shared with the other checks, for remote lists.
    pub fn new(settings: DnsblSettings, zones: Option<Zones>, resolver: TokioResolver) -> Self {
        DnsblCheck {
            settings,
            zones,
            resolver,
            refusals: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
        }
    }

    /// Looks the client up in every list at once and sums the weights.
    pub async fn score(&self, ip: IpAddr) -> DnsblScore {
        let lookups = self.settings.sites.iter().map(|site| self.answer(site, ip));
        let answers = futures_join_all(lookups).await;
        self.total(&self.settings.sites, answers)
    }

    /// Sums the weights of the sites that list, and raises the refusals.
    fn total(&self, sites: &[DnsblSite], answers: Vec<SiteAnswer>) -> DnsblScore {
        let mut score = DnsblScore::default();
        for (site, answer) in sites.iter().zip(answers) {
            match answer {
                SiteAnswer::Listed => {
                    score.score += site.weight;
                    score.listed_by.push(site.zone.clone());
                }
                SiteAnswer::Refused => {
                    self.raise_refusal(&site.zone);
                    score.refused_by.push(site.zone.clone());
                }
                SiteAnswer::NotListed | SiteAnswer::NoVerdict => {}
            }
        }
        score
    }

    /// Looks the domains of a message's URLs up in every URI list; each list counts once,
    /// however many of the domains it lists.
    pub async fn score_domains(&self, domains: &[String]) -> DnsblScore {
        let domains = &domains[..domains.len().min(MAX_URI_DOMAINS)];
        let lookups = self.settings.uri_sites.iter().map(|site| async move {
            let answers =
                futures_join_all(domains.iter().map(|d| self.domain_answer(site, d))).await;
            if answers.contains(&SiteAnswer::Refused) {
                SiteAnswer::Refused
            } else if answers.contains(&SiteAnswer::Listed) {
                SiteAnswer::Listed
            } else {
                SiteAnswer::NotListed
            }
        });
        let answers = futures_join_all(lookups).await;
        self.total(&self.settings.uri_sites, answers)
    }

    /// Whether a score refuses the client.
    pub fn blocks(&self, score: &DnsblScore) -> bool {
        score.score >= self.settings.threshold
    }

    /// Whether a score allowlists the client.
    pub fn allowlists(&self, score: &DnsblScore) -> bool {
        score.score <= self.settings.allowlist_threshold
    }

    /// The counters in Prometheus text format: lookups, and refusals per zone.
    pub fn render_metrics(&self) -> String {
        let mut text = String::from("# TYPE moat_dnsbl_lookups_total counter\n");
        text.push_str(&format!("moat_dnsbl_lookups_total {}\n", self.lookups()));
        text.push_str("# TYPE moat_dnsbl_refusals_total counter\n");
        let sites = self.settings.sites.iter().chain(&self.settings.uri_sites);
        for site in sites {
            let count = self.refusals(&site.zone);
            text.push_str(&format!(
                "moat_dnsbl_refusals_total{{zone=\"{}\"}} {count}\n",
                site.zone
            ));
        }
        text
    }

    /// How many times a zone refused our resolver since start (a metric).
    pub fn refusals(&self, zone: &str) -> u64 {
        lock(&self.refusals)
            .get(zone)
            .map_or(0, |(count, _)| *count)
    }

    /// How many lookups were made since start.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// One list's answer for one client.
    async fn answer(&self, site: &DnsblSite, ip: IpAddr) -> SiteAnswer {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let codes = match self
            .zones
            .as_ref()
            .and_then(|zones| local_codes(zones, &site.zone, ip))
        {
            Some(codes) => codes,
            None => match self
                .remote_codes(&site.zone, &ip_query_name(&site.zone, ip))
                .await
            {
                Ok(codes) => codes,
                Err(answer) => return answer,
            },
        };
        classify(site, &codes)
    }

    /// One URI list's answer for one domain.
    async fn domain_answer(&self, site: &DnsblSite, domain: &str) -> SiteAnswer {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let zone = site.zone.trim_end_matches('.');
        let served = self.zones.as_ref().filter(|zones| {
            zones
                .zone_names()
                .iter()
                .any(|name| name.eq_ignore_ascii_case(zone))
        });
        let codes = match served {
            Some(zones) => zones
                .lookup_domain(zone, &domain)
                .map(|l| l.a)
                .unwrap_or_default(),
            None => match self.remote_codes(zone, &format!("{domain}.{zone}.")).await {
                Ok(codes) => codes,
                Err(answer) => return answer,
            },
        };
        classify(site, &codes)
    }

    /// The A records a remote list gives for `name`, or the answer when there are none.
    async fn remote_codes(&self, zone: &str, name: &str) -> Result<Vec<Ipv4Addr>, SiteAnswer> {
        let lookup = self.resolver.lookup(name, RecordType::A);
        match tokio::time::timeout(self.settings.timeout, lookup).await {
            Ok(Ok(lookup)) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()),
            Ok(Err(error)) if error.is_nx_domain() || error.is_no_records_found() => {
                Err(SiteAnswer::NotListed)
            }
            Ok(Err(error)) => {
                tracing::warn!(zone, %error, "DNSBL lookup failed; the list gives no verdict");
                Err(SiteAnswer::NoVerdict)
            }
            Err(_) => {
                tracing::warn!(zone, timeout = ?self.settings.timeout, "DNSBL lookup timed out; the list gives no verdict");
                Err(SiteAnswer::NoVerdict)
            }
        }
    }

    /// Counts a refusal and raises it at error level, at most once a minute per zone.
    fn raise_refusal(&self, zone: &str) {
        let mut refusals = lock(&self.refusals);
        let (count, last_alert) = refusals.entry(zone.to_string()).or_insert((0, None));
        *count += 1;
        if last_alert.is_none_or(|at| at.elapsed() >= REFUSAL_ALERT_INTERVAL) {
            *last_alert = Some(Instant::now());
            tracing::error!(
                zone,
                refusals = *count,
                "DNSBL refuses our resolver (127.255.255.x or a non-127/8 answer); its listings are \
                 ignored until this is fixed: use a resolver of your own, not a shared or public one"
            );
        }
    }
}

/// The query name of an address in a zone.
fn ip_query_name(zone: &str, ip: IpAddr) -> String {
    format!("{}.{}.", reversed_name(ip), zone.trim_end_matches('.'))
}

/// The A records of a locally served zone, or `None` when this Moat does not serve it.
fn local_codes(zones: &Zones, zone: &str, ip: IpAddr) -> Option<Vec<Ipv4Addr>> {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    if !zones
        .zone_names()
        .iter()
        .any(|served| served.eq_ignore_ascii_case(&zone))
    {
        return None;
    }
    Some(
        zones
            .lookup_ip(&zone, ip)
            .map(|listing| listing.a)
            .unwrap_or_default(),
    )
}

/// Decides what a list's answer means for this site.
fn classify(site: &DnsblSite, codes: &[Ipv4Addr]) -> SiteAnswer {
    if codes.is_empty() {
        return SiteAnswer::NotListed;
    }
    let refused = |code: &Ipv4Addr| {
        let [a, b, c, _] = code.octets();
        a != 127 || (b, c) == (255, 255)
    };
    if codes.iter().any(refused) {
        return SiteAnswer::Refused;
    }
    let counts = |code: &Ipv4Addr| {
        site.codes.is_empty()
            || site
                .codes
                .iter()
                .any(|(low, high)| low <= code && code <= high)
    };
    if codes.iter().any(counts) {
        SiteAnswer::Listed
    } else {
        SiteAnswer::NotListed
    }
}

/// The DNSBL query name of an address: reversed octets, or reversed nibbles for IPv6
/// (RFC 5782 section 2.1 and 2.4).
fn reversed_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|byte| [byte & 0x0f, byte >> 4])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            nibbles.join(".")
        }
    }
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(codes: Vec<(Ipv4Addr, Ipv4Addr)>) -> DnsblSite {
        DnsblSite {
            zone: "bl.example".into(),
            weight: 2,
            codes,
        }
    }

    #[test]
    fn reverses_ipv4_and_ipv6_as_rfc5782_asks() {
        assert_eq!(reversed_name("192.0.2.1".parse().expect("ip")), "1.2.0.192");
        let v6 = reversed_name("2001:db8::1".parse().expect("ip"));
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2"), "{v6}");
    }

    #[test]
    fn a_refusal_code_is_never_a_listing() {
        let answer = classify(&site(vec![]), &[Ipv4Addr::new(127, 255, 255, 254)]);
        assert_eq!(answer, SiteAnswer::Refused);
        let hijacked = classify(&site(vec![]), &[Ipv4Addr::new(192, 0, 2, 80)]);
        assert_eq!(hijacked, SiteAnswer::Refused);
    }

    #[test]
    fn only_configured_codes_count() {
        let narrow = site(vec![(
            Ipv4Addr::new(127, 0, 0, 2),
            Ipv4Addr::new(127, 0, 0, 3),
        )]);
        assert_eq!(
            classify(&narrow, &[Ipv4Addr::new(127, 0, 0, 3)]),
            SiteAnswer::Listed
        );
        assert_eq!(
            classify(&narrow, &[Ipv4Addr::new(127, 0, 0, 10)]),
            SiteAnswer::NotListed
        );
        assert_eq!(
            classify(&site(vec![]), &[Ipv4Addr::new(127, 0, 0, 10)]),
            SiteAnswer::Listed
        );
    }
}
