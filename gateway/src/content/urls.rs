//! URLs in the text and HTML of a message, and their host names, for the URI blocklist check.
//!
//! A URL starts at `http://` or `https://` (any case) or a bare `www.` (or `WWW.`), and ends at
//! white space, a quote or an angle bracket, as mail clients linkify them. HTML is searched as
//! source (links live in `href`) and as text (entities decoded, so `http&#58;//` is found too).
//!
//! The search looks for `://` and `www.` with memchr's vectorised substring search and checks
//! the scheme before each `://`: every text part of every message passes here, and this is
//! several times faster than a case-insensitive automaton on letters as common as h and w.

use std::collections::{BTreeSet, HashSet};

use memchr::memmem;

/// Most URLs kept per message: a spam with a million links must not cost a million lookups.
pub const MAX_URLS: usize = 1_000;

/// Longest URL kept; longer ones are cut (the host is what matters).
const MAX_URL_LEN: usize = 2_048;

/// Punctuation that ends a sentence more often than a URL.
const TRAILING_PUNCTUATION: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '\'', '*'];

/// The URLs of one message, collected part by part.
#[derive(Debug, Default)]
pub struct UrlCollector {
    urls: Vec<String>,
    seen: HashSet<String>,
    domains: BTreeSet<String>,
}

impl UrlCollector {
    /// Collects the URLs in `text`.
    pub fn scan(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut consumed = 0;
        for (start, host_start) in starts(bytes) {
            if self.urls.len() >= MAX_URLS {
                return;
            }
            if start < consumed {
                continue;
            }
            let bare_www = start == host_start;
            if bare_www && start > 0 && is_host_byte(bytes[start - 1]) {
                continue;
            }
            let end = url_end(text, start);
            consumed = end;
            let url = text[start..end].trim_end_matches(TRAILING_PUNCTUATION);
            if let Some(host) = url.get(host_start - start..).and_then(host_of) {
                self.add(url, host);
            }
        }
    }

    fn add(&mut self, url: &str, host: String) {
        let mut url = url.to_owned();
        if url.len() > MAX_URL_LEN {
            let mut cut = MAX_URL_LEN;
            while !url.is_char_boundary(cut) {
                cut -= 1;
            }
            url.truncate(cut);
        }
        if self.seen.insert(url.clone()) {
            self.urls.push(url);
        }
        self.domains.insert(host);
    }

    /// The URLs in order of appearance, and their hosts sorted.
    pub fn finish(self) -> (Vec<String>, Vec<String>) {
        (self.urls, self.domains.into_iter().collect())
    }
}

/// Where URLs may start in `bytes`, in order: each start and where its host starts.
fn starts(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for colon in memmem::find_iter(bytes, b"://") {
        let before = &bytes[..colon];
        let scheme = ["https", "http"].into_iter().find(|scheme| {
            before.len() >= scheme.len()
                && before[before.len() - scheme.len()..].eq_ignore_ascii_case(scheme.as_bytes())
        });
        if let Some(scheme) = scheme {
            found.push((colon - scheme.len(), colon + 3));
        }
    }
    let www = memmem::find_iter(bytes, b"www.").chain(memmem::find_iter(bytes, b"WWW."));
    found.extend(www.map(|at| (at, at)));
    found.sort_unstable();
    found
}

/// Where a URL starting at `start` ends: the first byte that cannot be in a linkified URL.
fn url_end(text: &str, start: usize) -> usize {
    text[start..]
        .char_indices()
        .find(|(_, c)| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '<' | '>' | '`' | '{' | '}' | '|' | '\\' | '^')
        })
        .map_or(text.len(), |(offset, _)| start + offset)
}

fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_')
}

/// The host of `rest`, the URL after its scheme: without user, port or path, percent escapes
/// decoded, lower case. `None` when it is not a plausible host name or address.
fn host_of(rest: &str) -> Option<String> {
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    let host = percent_decode(host).to_lowercase();
    let host = host.trim_end_matches('.');

    let plausible = !host.is_empty()
        && (host.contains('.') || host.contains(':'))
        && !host.starts_with('.')
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    plausible.then(|| host.to_owned())
}

/// `%41` to `A`: hosts are sometimes escaped to slip past filters; browsers undo it.
fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(texts: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut collector = UrlCollector::default();
        for text in texts {
            collector.scan(text);
        }
        collector.finish()
    }

    #[test]
    fn finds_urls_and_their_hosts_in_text() {
        let (urls, domains) =
            collect(&["See https://Example.COM/a?b=c, and http://www.example.org."]);
        assert_eq!(
            urls,
            ["https://Example.COM/a?b=c", "http://www.example.org"]
        );
        assert_eq!(domains, ["example.com", "www.example.org"]);
    }

    #[test]
    fn scheme_case_does_not_matter() {
        let (urls, domains) = collect(&["VISIT HTTP://SHOUT.EXAMPLE/NOW or HtTpS://mixed.example"]);
        assert_eq!(urls, ["HTTP://SHOUT.EXAMPLE/NOW", "HtTpS://mixed.example"]);
        assert_eq!(domains, ["mixed.example", "shout.example"]);
    }

    #[test]
    fn finds_bare_www_but_not_inside_words() {
        let (urls, domains) = collect(&["go to www.example.net/x now; awww.nope"]);
        assert_eq!(urls, ["www.example.net/x"]);
        assert_eq!(domains, ["www.example.net"]);
    }

    #[test]
    fn finds_links_in_html_source() {
        let html = r#"<a href="http://phish.example/login">your bank</a>"#;
        let (urls, domains) = collect(&[html]);
        assert_eq!(urls, ["http://phish.example/login"]);
        assert_eq!(domains, ["phish.example"]);
    }

    #[test]
    fn strips_user_port_and_escapes_from_hosts() {
        let (_, domains) = collect(&[
            "http://user:pw@Host.Example:8080/path",
            "http://%65vil.example/",
            "http://[2001:db8::1]:443/",
        ]);
        assert_eq!(domains, ["2001:db8::1", "evil.example", "host.example"]);
    }

    #[test]
    fn ignores_schemes_without_a_plausible_host() {
        let (urls, domains) = collect(&["http:// nothing", "https://localhost/", "http://.x/"]);
        assert!(urls.is_empty(), "{urls:?}");
        assert!(domains.is_empty());
    }

    #[test]
    fn keeps_each_url_once_and_caps_the_count() {
        let text = "http://a.example/ ".repeat(3);
        let (urls, _) = collect(&[&text]);
        assert_eq!(urls.len(), 1);

        let many: String = (0..MAX_URLS + 10)
            .map(|i| format!("http://h{i}.example/ "))
            .collect();
        let (urls, domains) = collect(&[&many]);
        assert_eq!(urls.len(), MAX_URLS);
        assert_eq!(domains.len(), MAX_URLS);
    }

    #[test]
    fn multibyte_text_around_urls_is_handled() {
        let (urls, domains) = collect(&["Grüße: https://bücher.example/ä — fin"]);
        assert_eq!(urls, ["https://bücher.example/ä"]);
        assert_eq!(domains, ["bücher.example"]);
    }
}
