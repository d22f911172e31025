//! Who is not greylisted: listed client networks and domains, SPF-passing provider pools, DNS
//! allowlisted clients, and whatever the optional gating leaves out.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::triplet::{TripletRequest, is_within};

/// Why a request skipped greylisting. The names appear in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exemption {
    /// The client is on a DNS allowlist.
    DnsAllowlisted,
    /// The client is in an exempt network.
    ClientNetwork,
    /// The reverse-path's domain is exempt.
    SenderDomain,
    /// The recipient's domain is exempt.
    RecipientDomain,
    /// SPF passed for a provider whose retries come from a pool of addresses.
    SpfPassedProvider,
    /// Gating: the earlier checks' score is not above the threshold.
    ScoreNotAboveThreshold,
    /// Gating: only clients without forward-confirmed reverse DNS are greylisted.
    ForwardConfirmedClient,
}

impl Exemption {
    /// The exemption's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Exemption::DnsAllowlisted => "dnswl_listed",
            Exemption::ClientNetwork => "client_network",
            Exemption::SenderDomain => "sender_domain",
            Exemption::RecipientDomain => "recipient_domain",
            Exemption::SpfPassedProvider => "spf_passed_provider",
            Exemption::ScoreNotAboveThreshold => "score_not_above_threshold",
            Exemption::ForwardConfirmedClient => "forward_confirmed_client",
        }
    }
}

/// A network in CIDR notation; a bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A text that is not `ADDRESS` or `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?}: expected an address or address/prefix, as 192.0.2.0/24")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let error = || CidrError(text.to_owned());
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = address.trim().parse().map_err(|_| error())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix.trim().parse::<u8>().map_err(|_| error())?
        };
        if prefix > max {
            return Err(error());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside the network; IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The exemptions and gating of one configuration; domains in lower case.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exemptions {
    /// Client networks never greylisted.
    pub clients: Vec<Cidr>,
    /// Reverse-path domains (and their subdomains) never greylisted.
    pub sender_domains: Vec<String>,
    /// Recipient domains (and their subdomains) never greylisted.
    pub recipient_domains: Vec<String>,
    /// Providers whose mail is not greylisted when SPF passed for the reverse-path's domain:
    /// their retries come from other addresses of a large pool.
    pub spf_pass_domains: Vec<String>,
    /// Gating: greylist only mail whose score is above this.
    pub only_above_score: Option<f32>,
    /// Gating: greylist only clients without forward-confirmed reverse DNS.
    pub only_without_fcrdns: bool,
}

impl Exemptions {
    /// The first exemption that applies to `request`, if any.
    pub fn check(&self, request: &TripletRequest) -> Option<Exemption> {
        if request.dnswl_listed {
            return Some(Exemption::DnsAllowlisted);
        }
        if self
            .clients
            .iter()
            .any(|cidr| cidr.contains(request.client_ip))
        {
            return Some(Exemption::ClientNetwork);
        }

        let sender_domain = domain_of(&request.reverse_path);
        if listed(&sender_domain, &self.sender_domains) {
            return Some(Exemption::SenderDomain);
        }
        if listed(&domain_of(&request.recipient), &self.recipient_domains) {
            return Some(Exemption::RecipientDomain);
        }
        if request.spf_passed && listed(&sender_domain, &self.spf_pass_domains) {
            return Some(Exemption::SpfPassedProvider);
        }

        // Gating: a request the earlier checks found clean enough is not delayed at all.
        if let Some(threshold) = self.only_above_score
            && request.score.unwrap_or(0.0) <= threshold
        {
            return Some(Exemption::ScoreNotAboveThreshold);
        }
        let confirmed = request
            .client_name
            .as_deref()
            .is_some_and(|name| !name.is_empty() && name != "unknown");
        if self.only_without_fcrdns && confirmed {
            return Some(Exemption::ForwardConfirmedClient);
        }
        None
    }
}

/// The domain of an address in lower case, without angle brackets; empty if it has none.
fn domain_of(address: &str) -> String {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

fn listed(domain: &str, domains: &[String]) -> bool {
    !domain.is_empty() && domains.iter().any(|listed| is_within(domain, listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ip: &str, from: &str, to: &str) -> TripletRequest {
        TripletRequest::new(ip.parse().expect("a test address"), from, to)
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("a test network")
    }

    #[test]
    fn cidr_matches_its_network_only() {
        assert!(cidr("192.0.2.0/24").contains("192.0.2.200".parse().expect("ip")));
        assert!(!cidr("192.0.2.0/24").contains("192.0.3.1".parse().expect("ip")));
        assert!(cidr("2001:db8::/32").contains("2001:db8:ffff::1".parse().expect("ip")));
        assert!(cidr("192.0.2.0/24").contains("::ffff:192.0.2.9".parse().expect("ip")));
        assert!(cidr("0.0.0.0/0").contains("198.51.100.1".parse().expect("ip")));
        assert!(cidr("192.0.2.7").contains("192.0.2.7".parse().expect("ip")));
    }

    #[test]
    fn cidr_refuses_bad_prefixes_and_addresses() {
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("example.com/24".parse::<Cidr>().is_err());
        assert!("192.0.2.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn exempts_listed_client_networks() {
        let exemptions = Exemptions {
            clients: vec![cidr("198.51.100.0/24")],
            ..Exemptions::default()
        };
        let exempt = request("198.51.100.9", "a@sender.example", "b@rcpt.example");
        assert_eq!(exemptions.check(&exempt), Some(Exemption::ClientNetwork));
        let other = request("192.0.2.9", "a@sender.example", "b@rcpt.example");
        assert_eq!(exemptions.check(&other), None);
    }

    #[test]
    fn exempts_sender_and_recipient_domains_with_subdomains() {
        let exemptions = Exemptions {
            sender_domains: vec!["partner.example".to_owned()],
            recipient_domains: vec!["abuse.example".to_owned()],
            ..Exemptions::default()
        };
        let from = request("192.0.2.1", "A@Mail.Partner.Example", "b@rcpt.example");
        assert_eq!(exemptions.check(&from), Some(Exemption::SenderDomain));
        let to = request("192.0.2.1", "a@sender.example", "<b@abuse.example>");
        assert_eq!(exemptions.check(&to), Some(Exemption::RecipientDomain));
        let lookalike = request("192.0.2.1", "a@notpartner.example", "b@rcpt.example");
        assert_eq!(exemptions.check(&lookalike), None);
    }

    #[test]
    fn exempts_spf_passing_providers_only_when_spf_passed() {
        let exemptions = Exemptions {
            spf_pass_domains: vec!["bigmail.example".to_owned()],
            ..Exemptions::default()
        };
        let mut big = request("192.0.2.1", "a@bigmail.example", "b@rcpt.example");
        assert_eq!(exemptions.check(&big), None);
        big.spf_passed = true;
        assert_eq!(exemptions.check(&big), Some(Exemption::SpfPassedProvider));
    }

    #[test]
    fn dnswl_listed_clients_skip_greylisting() {
        let mut listed = request("192.0.2.1", "a@sender.example", "b@rcpt.example");
        listed.dnswl_listed = true;
        assert_eq!(
            Exemptions::default().check(&listed),
            Some(Exemption::DnsAllowlisted)
        );
    }

    #[test]
    fn score_gating_greylists_only_above_the_threshold() {
        let exemptions = Exemptions {
            only_above_score: Some(2.5),
            ..Exemptions::default()
        };
        let mut mail = request("192.0.2.1", "a@sender.example", "b@rcpt.example");
        assert_eq!(
            exemptions.check(&mail),
            Some(Exemption::ScoreNotAboveThreshold)
        );
        mail.score = Some(2.5);
        assert_eq!(
            exemptions.check(&mail),
            Some(Exemption::ScoreNotAboveThreshold)
        );
        mail.score = Some(2.6);
        assert_eq!(exemptions.check(&mail), None);
    }

    #[test]
    fn fcrdns_gating_greylists_only_unconfirmed_clients() {
        let exemptions = Exemptions {
            only_without_fcrdns: true,
            ..Exemptions::default()
        };
        let mail = request("192.0.2.1", "a@sender.example", "b@rcpt.example");
        assert_eq!(exemptions.check(&mail), None);
        let named = mail.with_client_name("mx1.sender.example");
        assert_eq!(
            exemptions.check(&named),
            Some(Exemption::ForwardConfirmedClient)
        );
    }
}
