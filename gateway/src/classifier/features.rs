//! Hashed sparse features of one message: header words prefixed with their field name, body
//! words with orthogonal sparse bigrams (OSB), URL domains, and a few structural facts.
//!
//! OSB, as CRM114 and Rspamd use it: besides each word alone, every pair of a word with each of
//! the [`OSB_WINDOW`]` - 1` words before it, the distance part of the pair. "click here" and
//! "click <anything> here" become separate features, which catches phrases without the
//! explosion of full n-grams. Each feature is a 32-bit FNV-1a hash of its text: the model
//! keeps counts per hash and never the text, and a collision among a few million features in
//! 2^32 values touches a handful of counts.

use super::tokenizer::words;

/// Words in one OSB window: each word is paired with the 4 before it, as CRM114 does.
pub const OSB_WINDOW: usize = 5;

/// Header fields whose words are never features: the spam headers Moat (or a filter before
/// it) added, which would teach the classifier its own past verdicts, and the trace and
/// identifier fields whose values are unique to each message.
const IGNORED_FIELDS: &[&str] = &[
    "x-spam-status",
    "x-spam-flag",
    "x-spam-bayes",
    "x-spam-level",
    "x-spam-checker-version",
    "x-spam-score",
    "x-spam-report",
    "authentication-results",
    "message-id",
    "date",
    "delivered-to",
    "return-path",
];

/// Which features are drawn from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureScheme {
    /// Words alone, as SpamAssassin's Bayes.
    Words,
    /// Words and orthogonal sparse bigrams, as CRM114 and Rspamd. Moat's scheme.
    Osb,
}

/// What the features of one message are drawn from: its decoded text and structure.
#[derive(Debug, Clone, Copy, Default)]
pub struct Document<'a> {
    /// The top-level header fields, one `Name: value` per line, values decoded.
    pub headers: &'a str,
    /// The body text: text parts and HTML stripped to text.
    pub body: &'a str,
    /// The host names of the URLs in the body, lower case.
    pub url_domains: &'a [String],
    /// How many text parts and HTML parts were read.
    pub text_parts: usize,
    /// How many HTML parts were read.
    pub html_parts: usize,
    /// The detected type of each attachment, as its name (`pdf`, `zip`, `windows-executable`).
    pub attachment_types: &'a [String],
}

/// The features of one message: sorted hashes without duplicates, since the model counts
/// each feature once per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features(Vec<u32>);

impl Features {
    /// The hashes, sorted.
    pub fn hashes(&self) -> &[u32] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// From hashes in any order.
    pub fn from_hashes(mut hashes: Vec<u32>) -> Features {
        hashes.sort_unstable();
        hashes.dedup();
        Features(hashes)
    }
}

/// Draws the features of `document` by `scheme`.
pub fn extract(document: &Document<'_>, scheme: FeatureScheme) -> Features {
    let mut hashes = Vec::with_capacity(2_048);

    for line in document.headers.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if IGNORED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        // The subject is read like the body, phrases included; other fields word by word.
        let field_scheme = if name == "subject" {
            scheme
        } else {
            FeatureScheme::Words
        };
        add_words(&mut hashes, &name, &words(value), field_scheme);
    }

    add_words(&mut hashes, "b", &words(document.body), scheme);

    for domain in document.url_domains {
        hashes.push(hash(&["url", domain]));
        // The registered domain groups a spammer's many host names.
        let labels: Vec<&str> = domain.rsplitn(3, '.').collect();
        if labels.len() >= 2 {
            hashes.push(hash(&["urld", labels[1], labels[0]]));
        }
    }

    let urls = bucket(document.url_domains.len());
    hashes.push(hash(&["meta", "url-domains", urls]));
    let html_only = document.html_parts > 0 && document.text_parts == 0;
    hashes.push(hash(&[
        "meta",
        "html-only",
        if html_only { "y" } else { "n" },
    ]));
    for kind in document.attachment_types {
        hashes.push(hash(&["attach", kind]));
    }
    Features::from_hashes(hashes)
}

/// Adds the features of `words` under `prefix`: each word, and with OSB each pair within the
/// window, the distance between the two part of the feature.
fn add_words(hashes: &mut Vec<u32>, prefix: &str, words: &[String], scheme: FeatureScheme) {
    for (index, word) in words.iter().enumerate() {
        hashes.push(hash(&[prefix, word]));
        if scheme == FeatureScheme::Words {
            continue;
        }
        for distance in 1..OSB_WINDOW.min(index + 1) {
            let before = &words[index - distance];
            let gap = DISTANCES[distance];
            hashes.push(hash(&[prefix, before, gap, word]));
        }
    }
}

/// The distance of an OSB pair as text, so that it is part of the hash.
const DISTANCES: [&str; OSB_WINDOW] = ["0", "1", "2", "3", "4"];

/// A count as a coarse bucket, so that "many" is one feature rather than one per number.
fn bucket(count: usize) -> &'static str {
    match count {
        0 => "0",
        1 => "1",
        2..=3 => "2-3",
        4..=9 => "4-9",
        _ => "10+",
    }
}

/// FNV-1a over the parts with a separator byte between them, folded to 32 bits. Chosen for
/// being stable across Rust versions and platforms, which the saved model needs (std's
/// hasher is not), and fast on short words.
pub fn hash(parts: &[&str]) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut state = OFFSET;
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            state ^= 0x1f;
            state = state.wrapping_mul(PRIME);
        }
        for byte in part.bytes() {
            state ^= u64::from(byte);
            state = state.wrapping_mul(PRIME);
        }
    }
    (state ^ (state >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document<'a>(headers: &'a str, body: &'a str) -> Document<'a> {
        Document {
            headers,
            body,
            ..Document::default()
        }
    }

    #[test]
    fn header_words_are_told_apart_from_body_words() {
        let in_subject = extract(&document("Subject: viagra\n", ""), FeatureScheme::Words);
        let in_body = extract(&document("", "viagra"), FeatureScheme::Words);
        assert!(in_subject.hashes().contains(&hash(&["subject", "viagra"])));
        assert!(!in_body.hashes().contains(&hash(&["subject", "viagra"])));
        assert!(in_body.hashes().contains(&hash(&["b", "viagra"])));
    }

    #[test]
    fn osb_pairs_each_word_with_the_four_before_it() {
        let body = "one two three four five six";
        let words_only = extract(&document("", body), FeatureScheme::Words);
        let osb = extract(&document("", body), FeatureScheme::Osb);
        // Six words, 1+2+3+4+4 pairs, and the two structural facts.
        assert_eq!(words_only.hashes().len(), 6 + 2);
        assert_eq!(osb.hashes().len(), 6 + 14 + 2);
        assert!(osb.hashes().contains(&hash(&["b", "two", "4", "six"])));
        assert!(!osb.hashes().contains(&hash(&["b", "one", "5", "six"])));
    }

    #[test]
    fn spam_headers_and_unique_ids_are_not_features() {
        let headers = "X-Spam-Status: Yes, score=20\nMessage-ID: <abc@example.com>\n";
        let features = extract(&document(headers, ""), FeatureScheme::Osb);
        assert!(!features.hashes().contains(&hash(&["x-spam-status", "yes"])));
        assert!(!features.hashes().contains(&hash(&["message-id", "abc"])));
    }

    #[test]
    fn url_domains_count_with_their_registered_domain() {
        let domains = ["mail.shop.example".to_string()];
        let doc = Document {
            url_domains: &domains,
            ..Document::default()
        };
        let features = extract(&doc, FeatureScheme::Osb);
        assert!(
            features
                .hashes()
                .contains(&hash(&["url", "mail.shop.example"]))
        );
        assert!(
            features
                .hashes()
                .contains(&hash(&["urld", "shop", "example"]))
        );
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // A saved model depends on these values never changing.
        assert_eq!(hash(&["b", "free"]), hash(&["b", "free"]));
        assert_ne!(hash(&["b", "free"]), hash(&["bf", "ree"]));
        assert_eq!(hash(&[""]), 0xcbf2_9ce4_u32 ^ 0x8422_2325);
    }
}
