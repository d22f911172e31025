//! The triplet: client network, normalised reverse-path and recipient, built from one request.
//!
//! Normalisation decides what counts as "the same" delivery when the sender retries. A retry
//! comes from another address of the sender's network, with a fresh BATV tag, a new SRS hash or
//! a new VERP number, so each of those is folded away here; what remains is the key the store
//! remembers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Postgrey's default grouping of IPv4 clients: a /24 is the common size of a sender's pool.
pub const DEFAULT_IPV4_PREFIX: u8 = 24;

/// The default grouping of IPv6 clients: a /64 is one end site's subnet (RFC 6177).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The longest part of a key kept, in bytes. RFC 5321 section 4.5.3.1.3 limits a path to 256
/// octets; longer input is cut so that no client can grow the store's keys without bound.
const MAX_PART_LEN: usize = 320;

/// The key of the null reverse-path (`MAIL FROM:<>`): bounces are greylisted as a sender of
/// their own, which no address can collide with.
pub const NULL_SENDER_KEY: &str = "<>";

/// One delivery attempt as the greylist sees it: who connects, from whom, to whom, and what the
/// earlier checks found.
#[derive(Debug, Clone, PartialEq)]
pub struct TripletRequest {
    /// The connecting client's address.
    pub client_ip: IpAddr,
    /// The client's forward-confirmed reverse DNS name, if it has one.
    pub client_name: Option<String>,
    /// The reverse-path of MAIL FROM, without angle brackets; empty for the null sender.
    pub reverse_path: String,
    /// One forward-path of RCPT TO, without angle brackets.
    pub recipient: String,
    /// The score the earlier checks gave the message, if they gave one.
    pub score: Option<f32>,
    /// Whether SPF passed for the reverse-path's domain in an earlier check.
    pub spf_passed: bool,
    /// Whether the client is listed on a DNS allowlist.
    pub dnswl_listed: bool,
}

impl TripletRequest {
    /// A request with nothing known beyond the three parts of the triplet.
    pub fn new(
        client_ip: IpAddr,
        reverse_path: impl Into<String>,
        recipient: impl Into<String>,
    ) -> TripletRequest {
        TripletRequest {
            client_ip,
            client_name: None,
            reverse_path: reverse_path.into(),
            recipient: recipient.into(),
            score: None,
            spf_passed: false,
            dnswl_listed: false,
        }
    }

    /// The same request with a forward-confirmed client name.
    pub fn with_client_name(mut self, name: impl Into<String>) -> TripletRequest {
        self.client_name = Some(name.into());
        self
    }
}

/// How clients are grouped into one network, so that a retry from a sibling address matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGrouping {
    /// Prefix length an IPv4 client is widened to (0 to 32).
    pub ipv4_prefix: u8,
    /// Prefix length an IPv6 client is widened to (0 to 128).
    pub ipv6_prefix: u8,
    /// Organisational domains whose forward-confirmed clients form one pool, lower case; `*`
    /// groups every forward-confirmed client by its own organisational domain.
    pub pool_domains: Vec<String>,
}

impl Default for ClientGrouping {
    fn default() -> ClientGrouping {
        ClientGrouping {
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            pool_domains: Vec::new(),
        }
    }
}

/// A normalised triplet, ready to be a store key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Triplet {
    /// The client network (`192.0.2.0/24`) or pool (`pool:example.net`).
    pub client: String,
    /// The normalised reverse-path, or [`NULL_SENDER_KEY`].
    pub sender: String,
    /// The recipient in lower case.
    pub recipient: String,
}

impl Triplet {
    /// Normalises a request's three parts.
    pub fn from_request(request: &TripletRequest, grouping: &ClientGrouping) -> Triplet {
        Triplet {
            client: client_key(request.client_ip, request.client_name.as_deref(), grouping),
            sender: normalise_sender(&request.reverse_path),
            recipient: normalise_recipient(&request.recipient),
        }
    }

    /// The store key of the triplet: the three parts separated by NUL, which no part holds.
    pub fn key(&self) -> Vec<u8> {
        let mut key =
            Vec::with_capacity(self.client.len() + self.sender.len() + self.recipient.len() + 2);
        key.extend_from_slice(self.client.as_bytes());
        key.push(0);
        key.extend_from_slice(self.sender.as_bytes());
        key.push(0);
        key.extend_from_slice(self.recipient.as_bytes());
        key
    }

    /// The store key of the client network, for the auto-whitelist.
    pub fn client_key(&self) -> &[u8] {
        self.client.as_bytes()
    }
}

/// The client's network, or its pool when its forward-confirmed name is in a pooled domain.
pub fn client_key(ip: IpAddr, client_name: Option<&str>, grouping: &ClientGrouping) -> String {
    if let Some(pool) = client_name.and_then(|name| pool_of(name, &grouping.pool_domains)) {
        return format!("pool:{pool}");
    }

    // An IPv4-mapped IPv6 address is an IPv4 client seen through a dual-stack socket.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match ip {
        IpAddr::V4(v4) => {
            let prefix = grouping.ipv4_prefix.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let prefix = grouping.ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// The pool a forward-confirmed name belongs to, if its domain is pooled.
fn pool_of(name: &str, pool_domains: &[String]) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name == "unknown" {
        return None;
    }
    for domain in pool_domains {
        if domain == "*" {
            return Some(organisational_domain(&name).to_owned());
        }
        if is_within(&name, domain) {
            return Some(domain.clone());
        }
    }
    None
}

/// Whether `name` is `domain` or one of its subdomains (both in lower case).
pub(crate) fn is_within(name: &str, domain: &str) -> bool {
    name == domain
        || (name.len() > domain.len()
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.')
}

/// The registrable part of a host name by the public suffix list (compiled in, so no lookup
/// at run time): `mail-io1-f41.google.com` is `google.com`, `mx.example.co.uk` is
/// `example.co.uk`, `a.b.example.com.au` is `example.com.au`. A name with no known suffix, or
/// that is a suffix itself, stands for itself.
///
/// The list's private section counts too, so hosts under a hosting suffix (`*.compute.
/// amazonaws.com`) are each their own organisation: cloud machines are not one sender's pool.
pub fn organisational_domain(name: &str) -> &str {
    psl::domain_str(name).unwrap_or(name)
}

/// The reverse-path as a key: lower case, with SRS undone, BATV tags, `+extensions` and VERP
/// numbers removed; the null reverse-path is [`NULL_SENDER_KEY`].
pub fn normalise_sender(reverse_path: &str) -> String {
    let path = strip_brackets(reverse_path).to_lowercase();
    if path.is_empty() {
        return NULL_SENDER_KEY.to_owned();
    }
    let (local, domain) = path.rsplit_once('@').unwrap_or((path.as_str(), ""));

    // SRS first: the original sender it reveals may itself carry a BATV tag.
    let (local, domain) = undo_srs(local).unwrap_or((local, domain));
    let local = strip_batv(local);
    let local = local.split('+').next().unwrap_or(local);
    let local = mask_numbers(local);

    let mut key = format!("{local}@{domain}");
    truncate(&mut key);
    key
}

/// The forward-path as a key: lower case, nothing else changed.
pub fn normalise_recipient(recipient: &str) -> String {
    let mut key = strip_brackets(recipient).to_lowercase();
    truncate(&mut key);
    key
}

fn strip_brackets(path: &str) -> &str {
    let path = path.trim();
    path.strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path)
}

/// The original `(local, domain)` of an SRS address (`SRS0=hash=tt=domain=local`, or
/// `SRS1=hash=forwarder==hash=tt=domain=local` after a second forwarder).
fn undo_srs(local: &str) -> Option<(&str, &str)> {
    let rest = if let Some(rest) = local.strip_prefix("srs0=") {
        rest
    } else {
        let rest = local.strip_prefix("srs1=")?;
        // SRS1 keeps the first forwarder's SRS0 part after a doubled separator.
        let (_, srs0_part) = rest.split_once("==")?;
        srs0_part
    };
    let mut fields = rest.splitn(4, '=');
    let (_hash, _timestamp) = (fields.next()?, fields.next()?);
    let domain = fields.next()?;
    let local = fields.next()?;
    (!domain.is_empty() && !local.is_empty()).then_some((local, domain))
}

/// The local part without a BATV tag: `prvs=tag=user`, `msprvs1=tag=user` or `btv1==tag==user`.
fn strip_batv(local: &str) -> &str {
    if let Some(rest) = local.strip_prefix("btv1==") {
        return rest.split_once("==").map_or(local, |(_, user)| user);
    }
    for prefix in ["prvs=", "msprvs1="] {
        if let Some((_, user)) = local.strip_prefix(prefix).and_then(|r| r.split_once('='))
            && !user.is_empty()
        {
            return user;
        }
    }
    local
}

/// Replaces each run of digits that stands as a word of its own with `#`, as postgrey does, so
/// that VERP addresses (`bounce-12345`) give one key per list rather than one per message.
fn mask_numbers(local: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let chars: Vec<char> = local.chars().collect();
    let mut masked = String::with_capacity(local.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            masked.push(chars[i]);
            i += 1;
            continue;
        }
        let end = chars[i..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(chars.len(), |n| i + n);
        let before = i.checked_sub(1).map(|j| chars[j]);
        if is_word(before) || is_word(chars.get(end).copied()) {
            masked.extend(&chars[i..end]);
        } else {
            masked.push('#');
        }
        i = end;
    }
    masked
}

fn truncate(key: &mut String) {
    if key.len() > MAX_PART_LEN {
        let mut cut = MAX_PART_LEN;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn ipv4_clients_group_by_slash_24() {
        let grouping = ClientGrouping::default();
        assert_eq!(
            client_key(ip("192.0.2.10"), None, &grouping),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_key(ip("192.0.2.77"), None, &grouping),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_key(ip("192.0.3.10"), None, &grouping),
            "192.0.3.0/24"
        );
    }

    #[test]
    fn ipv6_clients_group_by_slash_64() {
        let grouping = ClientGrouping::default();
        assert_eq!(
            client_key(ip("2001:db8:1:2::10"), None, &grouping),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::99"), None, &grouping),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key(ip("2001:db8:1:3::10"), None, &grouping),
            "2001:db8:1:3::/64"
        );
    }

    #[test]
    fn mapped_ipv4_groups_as_ipv4() {
        let grouping = ClientGrouping::default();
        assert_eq!(
            client_key(ip("::ffff:192.0.2.10"), None, &grouping),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn prefixes_are_configurable_down_to_single_hosts() {
        let grouping = ClientGrouping {
            ipv4_prefix: 32,
            ipv6_prefix: 0,
            pool_domains: Vec::new(),
        };
        assert_eq!(
            client_key(ip("192.0.2.10"), None, &grouping),
            "192.0.2.10/32"
        );
        assert_eq!(client_key(ip("2001:db8::1"), None, &grouping), "::/0");
    }

    #[test]
    fn forward_confirmed_clients_of_a_pooled_domain_share_a_key() {
        let grouping = ClientGrouping {
            pool_domains: vec!["mail.example.com".to_owned()],
            ..ClientGrouping::default()
        };
        let a = client_key(ip("192.0.2.1"), Some("out-1.mail.example.com"), &grouping);
        let b = client_key(
            ip("198.51.100.7"),
            Some("OUT-9.Mail.Example.com."),
            &grouping,
        );
        assert_eq!(a, "pool:mail.example.com");
        assert_eq!(a, b);
        let other = client_key(ip("198.51.100.7"), Some("mx.example.net"), &grouping);
        assert_eq!(other, "198.51.100.0/24");
    }

    #[test]
    fn a_star_pools_every_forward_confirmed_client_by_organisational_domain() {
        let grouping = ClientGrouping {
            pool_domains: vec!["*".to_owned()],
            ..ClientGrouping::default()
        };
        let key = client_key(ip("192.0.2.1"), Some("a.b.mx.example.co.uk"), &grouping);
        assert_eq!(key, "pool:example.co.uk");
        let key = client_key(ip("192.0.2.1"), Some("mail-ot1.example.org"), &grouping);
        assert_eq!(key, "pool:example.org");
        assert_eq!(
            client_key(ip("192.0.2.1"), Some("unknown"), &grouping),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn organisational_domain_follows_the_public_suffix_list() {
        for (name, organisation) in [
            ("mx1.example.com", "example.com"),
            ("example.com", "example.com"),
            ("mx.example.co.uk", "example.co.uk"),
            // Three-label public suffixes that a two-or-three-label guess gets wrong.
            ("a.b.example.com.au", "example.com.au"),
            ("mail.example.k12.ca.us", "example.k12.ca.us"),
            ("mx.example.co", "example.co"),
            ("mail-io1-f41.google.com", "google.com"),
            ("localhost", "localhost"),
            ("co.uk", "co.uk"),
        ] {
            assert_eq!(organisational_domain(name), organisation, "{name}");
        }
    }

    #[test]
    fn sender_keys_are_case_insensitive() {
        assert_eq!(
            normalise_sender("ALICE@Sender.Example"),
            "alice@sender.example"
        );
        assert_eq!(
            normalise_recipient("<BOB@RCPT.example>"),
            "bob@rcpt.example"
        );
    }

    #[test]
    fn plus_extensions_are_stripped() {
        assert_eq!(
            normalise_sender("carol+list123@sender.example"),
            "carol@sender.example"
        );
        assert_eq!(
            normalise_sender("carol+other@sender.example"),
            "carol@sender.example"
        );
    }

    #[test]
    fn verp_numbers_are_masked() {
        assert_eq!(
            normalise_sender("bounce-12345@list.example"),
            "bounce-#@list.example"
        );
        assert_eq!(
            normalise_sender("bounce-67890@list.example"),
            "bounce-#@list.example"
        );
        assert_eq!(
            normalise_sender("user123@example.com"),
            "user123@example.com"
        );
        assert_eq!(
            normalise_sender("a.1.b_2@example.com"),
            "a.#.b_2@example.com"
        );
    }

    #[test]
    fn the_null_sender_is_its_own_key() {
        assert_eq!(normalise_sender(""), NULL_SENDER_KEY);
        assert_eq!(normalise_sender("<>"), NULL_SENDER_KEY);
    }

    #[test]
    fn batv_tags_are_removed() {
        let plain = "alice@sender.example";
        assert_eq!(
            normalise_sender("prvs=1234abcdef=alice@sender.example"),
            plain
        );
        assert_eq!(
            normalise_sender("PRVS=9876fedcba=Alice@sender.example"),
            plain
        );
        assert_eq!(
            normalise_sender("msprvs1=17abcdefgh=alice@sender.example"),
            plain
        );
        assert_eq!(
            normalise_sender("btv1==0123456789==alice@sender.example"),
            plain
        );
    }

    #[test]
    fn srs_addresses_give_the_original_sender() {
        let plain = "alice@sender.example";
        let srs0 = "SRS0=HHH=TT=sender.example=alice@forwarder.example";
        assert_eq!(normalise_sender(srs0), plain);
        let srs1 = "SRS1=H2=forwarder.example==HHH=TT=sender.example=alice@second.example";
        assert_eq!(normalise_sender(srs1), plain);
        let srs_batv = "SRS0=h1=t1=sender.example=prvs=1234abcdef=alice@forwarder.example";
        assert_eq!(normalise_sender(srs_batv), plain);
    }

    #[test]
    fn malformed_srs_is_kept_as_an_address() {
        assert_eq!(
            normalise_sender("srs0=x@forwarder.example"),
            "srs0=x@forwarder.example"
        );
    }

    #[test]
    fn overlong_parts_are_cut() {
        let long = format!("{}@example.com", "é".repeat(400));
        assert!(normalise_sender(&long).len() <= MAX_PART_LEN);
        assert!(normalise_recipient(&long).len() <= MAX_PART_LEN);
    }

    #[test]
    fn key_separates_the_three_parts() {
        let request = TripletRequest::new(ip("192.0.2.10"), "a@b.example", "c@d.example");
        let triplet = Triplet::from_request(&request, &ClientGrouping::default());
        assert_eq!(triplet.key(), b"192.0.2.0/24\0a@b.example\0c@d.example");
        assert_eq!(triplet.client_key(), b"192.0.2.0/24");
    }
}
