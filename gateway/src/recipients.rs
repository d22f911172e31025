//! Which recipients the gateway accepts: its domains, their recipient lists, and no relaying.
//!
//! Moat is an MX for its accepted domains only. Any other domain is refused, and so is every
//! way of hiding another destination inside an address for one of ours: the percent hack
//! (`user%other.example@ours`), bang paths (`other!user@ours`) and quoted local parts holding an
//! `@` (`"user@other.example"@ours`). Source routes (`<@relay:user@ours>`) are stripped by the
//! parser, as RFC 5321 section 3.6.1 allows, so only the final address is judged.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::reply::Refusal;

/// The local parts one domain accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientList {
    /// Every local part.
    AcceptAll,
    /// Only these local parts, lower case.
    Listed(HashSet<String>),
}

/// Why a recipient list file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("recipient list {path}: {source}")]
pub struct RecipientListError {
    /// The file.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

impl RecipientList {
    /// Reads a recipient list: one local part or full address per line; blank lines and text
    /// after `#` are ignored. Full addresses of other domains are ignored too.
    ///
    /// # Errors
    /// Fails when the file cannot be read.
    pub fn load(path: &Path, domain: &str) -> Result<RecipientList, RecipientListError> {
        let text = fs::read_to_string(path).map_err(|source| RecipientListError {
            path: path.to_path_buf(),
            source,
        })?;
        let mut local_parts = HashSet::new();
        for line in text.lines() {
            let entry = line
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .to_lowercase();
            if entry.is_empty() {
                continue;
            }
            match entry.rsplit_once('@') {
                Some((local, entry_domain)) if entry_domain.eq_ignore_ascii_case(domain) => {
                    local_parts.insert(local.to_string());
                }
                Some(_) => {}
                None => {
                    local_parts.insert(entry);
                }
            }
        }
        Ok(RecipientList::Listed(local_parts))
    }
}

/// The domains the gateway receives mail for.
#[derive(Debug, Clone, Default)]
pub struct AcceptedDomains {
    domains: HashMap<String, RecipientList>,
}

impl AcceptedDomains {
    /// No domains yet.
    pub fn new() -> Self {
        AcceptedDomains::default()
    }

    /// Accepts mail for `domain` (any case) with the given recipient list.
    pub fn insert(&mut self, domain: &str, recipients: RecipientList) {
        self.domains.insert(domain.to_ascii_lowercase(), recipients);
    }

    /// The first domain in name order, where mail to a bare `postmaster` goes.
    pub fn postmaster_domain(&self) -> Option<&str> {
        self.domains.keys().min().map(String::as_str)
    }

    /// Judges a forward-path as the parser gave it (quotes removed, source route stripped).
    ///
    /// # Errors
    /// The refusal to send: bad syntax, relay denied, routing in the local part, unknown user.
    pub fn check(&self, address: &str) -> Result<(), Refusal> {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(Refusal::BadForwardPath);
        };
        if local.is_empty() || domain.is_empty() {
            return Err(Refusal::BadForwardPath);
        }

        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let Some(list) = self.domains.get(&domain) else {
            return Err(Refusal::RelayDenied(address.to_string()));
        };

        if local.contains(['@', '%', '!']) {
            return Err(Refusal::RoutedLocalPart(address.to_string()));
        }

        // RFC 5321 section 4.5.1: every domain that takes mail must take mail for postmaster,
        // whatever its recipient list says.
        let local = local.to_lowercase();
        match list {
            RecipientList::AcceptAll => Ok(()),
            RecipientList::Listed(_) if local == "postmaster" => Ok(()),
            RecipientList::Listed(local_parts) if local_parts.contains(&local) => Ok(()),
            RecipientList::Listed(_) => Err(Refusal::UnknownUser(address.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> AcceptedDomains {
        let mut domains = AcceptedDomains::new();
        domains.insert("example.com", RecipientList::AcceptAll);
        domains.insert(
            "listed.example",
            RecipientList::Listed(["bob".to_string()].into_iter().collect()),
        );
        domains
    }

    #[test]
    fn accepts_its_domains_in_any_case() {
        assert_eq!(domains().check("anyone@Example.COM"), Ok(()));
        assert_eq!(domains().check("BOB@listed.example"), Ok(()));
        assert_eq!(domains().check("bob@example.com."), Ok(()));
    }

    #[test]
    fn refuses_unknown_users_of_listed_domains() {
        assert!(matches!(
            domains().check("eve@listed.example"),
            Err(Refusal::UnknownUser(_))
        ));
    }

    #[test]
    fn refuses_to_relay() {
        assert!(matches!(
            domains().check("a@other.example"),
            Err(Refusal::RelayDenied(_))
        ));
        assert!(matches!(
            domains().check("a@[192.0.2.1]"),
            Err(Refusal::RelayDenied(_))
        ));
    }

    #[test]
    fn refuses_destinations_hidden_in_the_local_part() {
        for hidden in [
            "a%other.example@example.com",
            "other.example!a@example.com",
            "a@other.example@example.com",
        ] {
            assert!(
                matches!(domains().check(hidden), Err(Refusal::RoutedLocalPart(_))),
                "{hidden} must be refused"
            );
        }
    }
}
