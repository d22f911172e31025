//! The body-signature search: one Aho-Corasick automaton over every signature's anchor (its
//! longest run of fixed bytes) finds candidates in one pass over a file, and each candidate
//! is then checked element by element, leftwards and rightwards from the anchor.
//!
//! This is the shape of ClamAV's own matcher (an Aho-Corasick trie of fixed prefixes, then
//! a verification), with the anchor taken anywhere in the pattern rather than at its start, so
//! that patterns beginning with wildcards still get a long anchor.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::body::{BodySignature, Element, has_bit};

/// Steps one candidate's check may take. Patterns with several unbounded gaps can backtrack
/// a great deal on crafted input; past this the candidate counts as no match, which errs
/// towards letting a pathological file through layer 2 rather than stalling every scan (clamd
/// still sees it).
const MAX_STEPS: usize = 100_000;

/// Up to how many anchor bytes the automaton is a full DFA. A DFA is 20 to 30% faster than
/// the contiguous NFA on a mail corpus, but takes about 250 octets per anchor byte (5 MB for
/// 2,000 signatures) where the NFA takes 25; past this a database the size of ClamAV's own
/// would need gigabytes, so larger sets get the NFA.
const DFA_MAX_ANCHOR_BYTES: usize = 100_000;

/// Every body signature, ready to search.
#[derive(Debug)]
pub struct BodyMatcher {
    signatures: Vec<BodySignature>,
    /// `None` when there is no signature.
    automaton: Option<AhoCorasick>,
    /// For each anchor of the automaton, the signatures that have it.
    by_anchor: Vec<Vec<usize>>,
}

impl BodyMatcher {
    /// Builds the automaton.
    ///
    /// # Errors
    /// The automaton's error when it cannot be built (too many or too long anchors).
    pub fn new(signatures: Vec<BodySignature>) -> Result<BodyMatcher, aho_corasick::BuildError> {
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        let mut by_anchor: Vec<Vec<usize>> = Vec::new();
        let mut index_of: HashMap<Vec<u8>, usize> = HashMap::new();
        for (number, signature) in signatures.iter().enumerate() {
            let anchor = signature.anchor_bytes();
            let index = *index_of.entry(anchor.clone()).or_insert_with(|| {
                anchors.push(anchor);
                by_anchor.push(Vec::new());
                anchors.len() - 1
            });
            by_anchor[index].push(number);
        }
        let automaton = if anchors.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(automaton_kind(&anchors))
                    .build(&anchors)?,
            )
        };
        Ok(BodyMatcher {
            signatures,
            automaton,
            by_anchor,
        })
    }

    /// How many signatures there are.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// The names of the signatures matching `data`, among those whose target type `applies`.
    pub fn scan(&self, data: &[u8], applies: impl Fn(u8) -> bool) -> Vec<&str> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let mut found = vec![false; self.signatures.len()];
        let mut names = Vec::new();
        for candidate in automaton.find_overlapping_iter(data) {
            for &number in &self.by_anchor[candidate.pattern().as_usize()] {
                let signature = &self.signatures[number];
                if found[number] || !applies(signature.target) {
                    continue;
                }
                if verify(signature, data, candidate.start()) {
                    found[number] = true;
                    names.push(signature.name.as_str());
                }
            }
        }
        names
    }
}

/// A DFA for small signature sets, the library's choice (a contiguous NFA) for large ones.
fn automaton_kind(anchors: &[Vec<u8>]) -> Option<AhoCorasickKind> {
    let bytes: usize = anchors.iter().map(Vec::len).sum();
    (bytes <= DFA_MAX_ANCHOR_BYTES).then_some(AhoCorasickKind::DFA)
}

/// Whether `signature` matches `data` with its anchor at `at`.
fn verify(signature: &BodySignature, data: &[u8], at: usize) -> bool {
    let (anchor_start, anchor_len) = signature.anchor;
    let before = &signature.elements[..anchor_start];
    let after = &signature.elements[anchor_start + anchor_len..];
    let mut check = Check { data, steps: 0 };
    let accept_start = |start: usize| signature.offset.allows(start, data.len());
    check.forward(after, at + anchor_len) && check.backward(before, at, &accept_start)
}

/// One candidate's check, with its step budget.
struct Check<'a> {
    data: &'a [u8],
    steps: usize,
}

impl Check<'_> {
    /// Whether `elements` match from `position` onwards (ending anywhere).
    fn forward(&mut self, elements: &[Element], mut position: usize) -> bool {
        let mut index = 0;
        while let Some(element) = elements.get(index) {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return false;
            }
            let rest = &elements[index + 1..];
            match element {
                Element::Gap { min, max } => return self.forward_gap(rest, position, *min, *max),
                Element::Alternatives(choices) => {
                    return choices.iter().any(|choice| {
                        self.data
                            .get(position..)
                            .is_some_and(|tail| tail.starts_with(choice))
                            && self.forward(rest, position + choice.len())
                    });
                }
                fixed => {
                    let Some(&byte) = self.data.get(position) else {
                        return false;
                    };
                    if !fixed_matches(fixed, byte) {
                        return false;
                    }
                    position += 1;
                }
            }
            index += 1;
        }
        true
    }

    /// Tries every length of a gap, shortest first; when the next element is a byte, only
    /// the positions holding it.
    fn forward_gap(
        &mut self,
        rest: &[Element],
        position: usize,
        min: usize,
        max: Option<usize>,
    ) -> bool {
        let low = position.saturating_add(min);
        let high = max.map_or(self.data.len(), |max| {
            position.saturating_add(max).min(self.data.len())
        });
        if low > high {
            return false;
        }
        let next_byte = match rest.first() {
            Some(Element::Byte(byte)) => Some(*byte),
            _ => None,
        };
        let mut candidate = low;
        while candidate <= high {
            if let Some(byte) = next_byte {
                let window_end = high.saturating_add(1).min(self.data.len());
                let window = self.data.get(candidate..window_end).unwrap_or(&[]);
                let Some(offset) = window.iter().position(|&b| b == byte) else {
                    return false;
                };
                candidate += offset;
            }
            if self.forward(rest, candidate) {
                return true;
            }
            if self.steps > MAX_STEPS {
                return false;
            }
            candidate += 1;
        }
        false
    }

    /// Whether `elements` match ending just before `end`, starting where `accept_start`
    /// allows.
    fn backward(
        &mut self,
        elements: &[Element],
        mut end: usize,
        accept_start: &dyn Fn(usize) -> bool,
    ) -> bool {
        let mut count = elements.len();
        while count > 0 {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return false;
            }
            let rest = &elements[..count - 1];
            match &elements[count - 1] {
                Element::Gap { min, max } => {
                    let Some(high) = end.checked_sub(*min) else {
                        return false;
                    };
                    let low = max.map_or(0, |max| end.saturating_sub(max));
                    return (low..=high).rev().any(|start| {
                        self.steps <= MAX_STEPS && self.backward(rest, start, accept_start)
                    });
                }
                Element::Alternatives(choices) => {
                    return choices.iter().any(|choice| {
                        end.checked_sub(choice.len()).is_some_and(|start| {
                            self.data.get(start..end) == Some(choice.as_slice())
                                && self.backward(rest, start, accept_start)
                        })
                    });
                }
                fixed => {
                    let Some(position) = end.checked_sub(1) else {
                        return false;
                    };
                    if !fixed_matches(fixed, self.data[position]) {
                        return false;
                    }
                    end = position;
                }
            }
            count -= 1;
        }
        accept_start(end)
    }
}

/// Whether a one-byte element matches `byte`.
fn fixed_matches(element: &Element, byte: u8) -> bool {
    match element {
        Element::Byte(expected) => byte == *expected,
        Element::Masked { value, mask } => byte & mask == *value,
        Element::Set(set) => has_bit(set, byte),
        Element::Gap { .. } | Element::Alternatives(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(lines: &[&str]) -> BodyMatcher {
        let signatures = lines
            .iter()
            .map(|line| {
                BodySignature::parse(line)
                    .expect("valid")
                    .expect("signature")
            })
            .collect();
        BodyMatcher::new(signatures).expect("automaton builds")
    }

    fn hits<'a>(matcher: &'a BodyMatcher, data: &[u8]) -> Vec<&'a str> {
        matcher.scan(data, |_| true)
    }

    #[test]
    fn finds_fixed_pattern_anywhere() {
        let m = matcher(&["Hello:0:*:68656c6c6f"]);
        assert_eq!(hits(&m, b"say hello world"), ["Hello"]);
        assert!(hits(&m, b"say help").is_empty());
    }

    #[test]
    fn wildcards_match_any_byte_or_nibble() {
        let m = matcher(&["W:0:*:6162??64?5"]);
        assert_eq!(hits(&m, b"..abXd5.."), ["W"]);
        assert_eq!(hits(&m, b"abzdu"), ["W"]);
        assert!(hits(&m, b"abzdf").is_empty());
    }

    #[test]
    fn gaps_are_bounded() {
        let m = matcher(&["G:0:*:6162{2-3}7a7a"]);
        assert!(hits(&m, b"abXzz").is_empty());
        assert_eq!(hits(&m, b"abXXzz"), ["G"]);
        assert_eq!(hits(&m, b"abXXXzz"), ["G"]);
        assert!(hits(&m, b"abXXXXzz").is_empty());
    }

    #[test]
    fn star_spans_any_distance_both_sides_of_the_anchor() {
        let m = matcher(&["S:0:*:41*6c6f6e67616e63686f72*5a"]);
        assert_eq!(hits(&m, b"A.......longanchor.......Z"), ["S"]);
        assert!(hits(&m, b"longanchor.......Z").is_empty());
    }

    #[test]
    fn alternatives_of_different_lengths() {
        let m = matcher(&["A:0:*:7878(6162|63)7979"]);
        assert_eq!(hits(&m, b"xxabyy"), ["A"]);
        assert_eq!(hits(&m, b"xxcyy"), ["A"]);
        assert!(hits(&m, b"xxdyy").is_empty());
    }

    #[test]
    fn negated_bytes_exclude() {
        let m = matcher(&["N:0:*:7878!(61|62)7979"]);
        assert_eq!(hits(&m, b"xxcyy"), ["N"]);
        assert!(hits(&m, b"xxayy").is_empty());
    }

    #[test]
    fn offsets_restrict_where_a_match_starts() {
        let m = matcher(&["Start:0:0:4d5a"]);
        assert_eq!(hits(&m, b"MZ...."), ["Start"]);
        assert!(hits(&m, b".MZ...").is_empty());

        let m = matcher(&["End:0:EOF-2:4d5a"]);
        assert_eq!(hits(&m, b"....MZ"), ["End"]);
        assert!(hits(&m, b"...MZ.").is_empty());

        let m = matcher(&["Float:0:2,2:4d5a"]);
        assert_eq!(hits(&m, b"...MZ."), ["Float"]);
        assert!(hits(&m, b".....MZ").is_empty());
    }

    #[test]
    fn offset_applies_to_the_start_before_the_anchor() {
        let m = matcher(&["Left:0:0:41{0-5}6c6f6e67"]);
        assert_eq!(hits(&m, b"A...long"), ["Left"]);
        assert!(hits(&m, b"xA...long").is_empty());
    }

    #[test]
    fn each_signature_is_reported_once() {
        let m = matcher(&["Twice:0:*:6162"]);
        assert_eq!(hits(&m, b"ab ab ab"), ["Twice"]);
    }

    #[test]
    fn signatures_sharing_an_anchor_are_both_checked() {
        let m = matcher(&["One:0:*:616263", "Two:0:*:61626378"]);
        assert_eq!(hits(&m, b"abcx"), ["One", "Two"]);
    }

    #[test]
    fn target_filter_is_applied() {
        let m = matcher(&["Pe:1:*:6162"]);
        assert!(m.scan(b"ab", |target| target == 0).is_empty());
        assert_eq!(m.scan(b"ab", |target| target == 1), ["Pe"]);
    }

    #[test]
    fn pathological_backtracking_stops() {
        // No "g" anywhere, so every way of spreading the gaps leftwards from "zz" fails.
        let m = matcher(&["P:0:*:67*61*62*63*64*65*66*7a7a"]);
        let mut data = b"abcdef".repeat(2_000);
        data.extend_from_slice(b"zz");
        let started = std::time::Instant::now();
        assert!(hits(&m, &data).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn anchor_at_the_very_end_or_start_does_not_overrun() {
        let m = matcher(&["E:0:*:6162{3}63"]);
        assert!(hits(&m, b"ab").is_empty());
        let m = matcher(&["B:0:*:63{3}6162"]);
        assert!(hits(&m, b"ab").is_empty());
    }
}
