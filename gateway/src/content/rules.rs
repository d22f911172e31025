//! Content rules: weighted phrases and byte patterns over the headers and the decoded text,
//! all matched in one pass with one Aho-Corasick automaton; and GTUBE, always.
//!
//! A rules file has one rule per line; `#` starts a comment, blank lines are ignored:
//!
//! ```text
//! # NAME             WEIGHT  SCOPE           PATTERN
//! FREE_MONEY         2.5     body            "free money"
//! SUBJECT_LOTTERY    3       header:Subject  "lottery winner"
//! CYRILLIC_PAYPAL    4       any             hex:d180d0b0d183d0bfd0b0d0bb
//! ```
//!
//! * NAME: letters, digits, `_`, `-` and `.`; unique in the file.
//! * WEIGHT: a number added to the rule score when the rule matches (once per message,
//!   however often the pattern occurs); negative for signs of good mail.
//! * SCOPE: `body` (decoded text parts and HTML parts stripped to text, nested messages
//!   included), `header` (every header field of the message, decoded, as `Name: value`),
//!   `header:Name` (that field only, name case-insensitive) or `any` (both).
//! * PATTERN: a `"quoted phrase"`, matched ignoring ASCII case, where any run of white space
//!   matches any run of white space (`\"` and `\\` escape a quote and a backslash); or
//!   `hex:` and an even number of hex digits, matched exactly, for bytes a phrase cannot say
//!   (non-ASCII look-alike letters, say). No regular expressions: every pattern goes into the
//!   one automaton, so the cost of the rules does not grow with their number.
//!
//! * FLAGS, optional after the pattern: `noautolearn` marks a test pattern (as SpamAssassin's
//!   `tflags noautolearn`): a message it matches is never auto-learned by the classifier,
//!   since it says nothing about real mail. GTUBE is always one.
//!
//! The text matched has white space collapsed the same way, so a phrase folded over two lines
//! still matches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};

use super::error::ContentError;
use super::report::RuleHit;

/// The rules built into Moat: gateway/rules/default.rules.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.rules");

/// SpamAssassin's Generic Test for Unsolicited Bulk Email: a message whose body holds it is
/// spam by definition, so a filter can be tested end to end.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// Shortest phrase accepted: shorter ones match nearly every message.
const MIN_PHRASE_LEN: usize = 3;

/// Where a rule looks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Body,
    Header,
    /// One header field, its name in lower case.
    HeaderField(String),
    Any,
}

/// One rule of the file.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    weight: f32,
    scope: Scope,
    /// For `hex:` rules, the exact bytes (the automaton ignores case, so a hit is checked).
    exact: Option<Vec<u8>>,
    /// A test pattern: the classifier must not learn from a message it matches.
    noautolearn: bool,
}

/// Rule hits split for the classifier's auto-learning decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleSides {
    /// Whether a `noautolearn` rule matched.
    pub test_pattern: bool,
    /// Points of rules that look at the header section only.
    pub header_points: f32,
    /// Points of rules that look at the body (`body` and `any`: most of what `any` rules
    /// match is body text).
    pub body_points: f32,
}

/// What a pattern of the automaton stands for.
#[derive(Debug, Clone, Copy)]
enum Target {
    Rule(usize),
    Gtube,
}

/// The text of one message as the rules see it.
#[derive(Debug, Default)]
pub struct RuleText {
    /// Every header field as `Name: value\n`, values decoded and unfolded.
    pub headers: String,
    /// Where each header line starts in `headers`, and its name in lower case.
    pub header_lines: Vec<(usize, String)>,
    /// The body text, white space collapsed by [`collapse_whitespace`].
    pub body: String,
}

impl RuleText {
    /// Adds one header field.
    pub fn push_header(&mut self, name: &str, value: &str) {
        self.header_lines
            .push((self.headers.len(), name.to_ascii_lowercase()));
        self.headers.push_str(name);
        self.headers.push_str(": ");
        collapse_whitespace_into(value, &mut self.headers);
        self.headers.push('\n');
    }

    /// Adds a piece of body text.
    pub fn push_body(&mut self, text: &str) {
        if !self.body.is_empty() {
            self.body.push(' ');
        }
        collapse_whitespace_into(text, &mut self.body);
    }

    /// The lower-case name of the header line holding byte `offset`.
    fn header_at(&self, offset: usize) -> Option<&str> {
        let index = self
            .header_lines
            .partition_point(|(start, _)| *start <= offset);
        let (_, name) = self.header_lines.get(index.checked_sub(1)?)?;
        Some(name)
    }
}

/// What the rules found in one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleOutcome {
    /// Rules that matched, in file order.
    pub hits: Vec<RuleHit>,
    /// The sum of their weights.
    pub score: f32,
    /// Whether GTUBE is in the body.
    pub gtube: bool,
}

/// The rules of one file, compiled.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    automaton: AhoCorasick,
    /// For each pattern of the automaton, what it stands for.
    targets: Vec<Vec<Target>>,
}

impl RuleSet {
    /// Reads and compiles a rules file; `None` compiles [`DEFAULT_RULES`].
    ///
    /// # Errors
    /// [`ContentError::Read`] when the file cannot be read, [`ContentError::Rule`] naming the
    /// first malformed line.
    pub fn load(path: Option<&Path>) -> Result<RuleSet, ContentError> {
        match path {
            None => RuleSet::parse(DEFAULT_RULES, Path::new("<built-in>")),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ContentError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                RuleSet::parse(&text, path)
            }
        }
    }

    /// Compiles the rules in `text`; `path` names it in errors.
    ///
    /// # Errors
    /// [`ContentError::Rule`] naming the first malformed line.
    pub fn parse(text: &str, path: &Path) -> Result<RuleSet, ContentError> {
        let mut rules = Vec::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let mut index_of: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut add = |pattern: Vec<u8>, target: Target| {
            let key = pattern.to_ascii_lowercase();
            let index = *index_of.entry(key).or_insert_with(|| {
                patterns.push(pattern);
                targets.push(Vec::new());
                patterns.len() - 1
            });
            targets[index].push(target);
        };

        add(GTUBE.as_bytes().to_vec(), Target::Gtube);
        for (number, line) in text.lines().enumerate() {
            let bad = |detail: String| ContentError::Rule {
                path: PathBuf::from(path),
                line: number + 1,
                detail,
            };
            let Some((rule, pattern)) = parse_line(line).map_err(bad)? else {
                continue;
            };
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(bad(format!("rule {} is defined twice", rule.name)));
            }
            add(pattern, Target::Rule(rules.len()));
            rules.push(rule);
        }

        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map_err(|e| ContentError::Rule {
                path: PathBuf::from(path),
                line: 0,
                detail: format!("the patterns cannot be compiled: {e}"),
            })?;
        tracing::debug!(path = %path.display(), rules = rules.len(), "content rules loaded");
        Ok(RuleSet {
            rules,
            automaton,
            targets,
        })
    }

    /// How many rules there are (GTUBE, built in, not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Splits a message's rule hits into header and body points and says whether a test
    /// pattern was among them, for the classifier's auto-learning.
    pub fn sides(&self, hits: &[RuleHit]) -> RuleSides {
        let mut sides = RuleSides::default();
        for hit in hits {
            let Some(rule) = self.rules.iter().find(|rule| rule.name == hit.name) else {
                continue;
            };
            sides.test_pattern |= rule.noautolearn;
            match rule.scope {
                Scope::Header | Scope::HeaderField(_) => sides.header_points += hit.weight,
                Scope::Body | Scope::Any => sides.body_points += hit.weight,
            }
        }
        sides
    }

    /// Matches every rule against one message's text.
    pub fn apply(&self, text: &RuleText) -> RuleOutcome {
        let mut matched = vec![false; self.rules.len()];
        let mut gtube = false;

        for found in self
            .automaton
            .find_overlapping_iter(text.headers.as_bytes())
        {
            let header = text.header_at(found.start());
            let bytes = &text.headers.as_bytes()[found.range()];
            for target in &self.targets[found.pattern().as_usize()] {
                let Target::Rule(index) = *target else {
                    continue;
                };
                let rule = &self.rules[index];
                let in_scope = match &rule.scope {
                    Scope::Header | Scope::Any => true,
                    Scope::HeaderField(name) => header == Some(name.as_str()),
                    Scope::Body => false,
                };
                matched[index] |= in_scope && exact_ok(rule, bytes);
            }
        }

        for found in self.automaton.find_overlapping_iter(text.body.as_bytes()) {
            let bytes = &text.body.as_bytes()[found.range()];
            for target in &self.targets[found.pattern().as_usize()] {
                match *target {
                    Target::Gtube => gtube = true,
                    Target::Rule(index) => {
                        let rule = &self.rules[index];
                        let in_scope = matches!(rule.scope, Scope::Body | Scope::Any);
                        matched[index] |= in_scope && exact_ok(rule, bytes);
                    }
                }
            }
        }

        let hits: Vec<RuleHit> = self
            .rules
            .iter()
            .zip(&matched)
            .filter(|(_, matched)| **matched)
            .map(|(rule, _)| RuleHit {
                name: rule.name.clone(),
                weight: rule.weight,
            })
            .collect();
        let score = hits.iter().map(|hit| hit.weight).sum();
        RuleOutcome { hits, score, gtube }
    }
}

/// A `hex:` rule's hit must be its exact bytes, since the automaton ignores case.
fn exact_ok(rule: &Rule, bytes: &[u8]) -> bool {
    rule.exact.as_deref().is_none_or(|exact| exact == bytes)
}

/// Parses one line: `None` for blank lines and comments, else the rule and its pattern.
fn parse_line(line: &str) -> Result<Option<(Rule, Vec<u8>)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut rest = line;
    let mut field = |what: &str| -> Result<&str, String> {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (value, after) = trimmed.split_at(end);
        if value.is_empty() {
            return Err(format!(
                "missing {what}: expected NAME WEIGHT SCOPE PATTERN"
            ));
        }
        rest = after;
        Ok(value)
    };
    let name = field("name")?.to_owned();
    let weight = field("weight")?;
    let scope = field("scope")?;
    let pattern = rest.trim();
    if pattern.is_empty() {
        return Err("missing pattern: expected NAME WEIGHT SCOPE PATTERN".to_owned());
    }

    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "name {name:?} may hold only letters, digits, '_', '-' and '.'"
        ));
    }
    let weight: f32 = weight
        .parse()
        .ok()
        .filter(|w: &f32| w.is_finite())
        .ok_or_else(|| format!("weight {weight:?} is not a number"))?;
    let scope = parse_scope(scope)?;
    let pattern = parse_pattern(pattern)?;
    let noautolearn = parse_flags(pattern.rest)?;
    let rule = Rule {
        name,
        weight,
        scope,
        exact: pattern.exact,
        noautolearn,
    };
    Ok(Some((rule, pattern.automaton)))
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    match text.to_ascii_lowercase().as_str() {
        "body" => Ok(Scope::Body),
        "header" => Ok(Scope::Header),
        "any" => Ok(Scope::Any),
        lower => match lower.strip_prefix("header:") {
            Some(field) if !field.is_empty() => Ok(Scope::HeaderField(field.to_owned())),
            _ => Err(format!(
                "unknown scope {text:?}: expected body, header, header:Name or any"
            )),
        },
    }
}

/// Whether the flags after a pattern hold `noautolearn`; a comment ends them.
fn parse_flags(text: &str) -> Result<bool, String> {
    let mut noautolearn = false;
    for flag in strip_comment(text).split_whitespace() {
        match flag {
            "noautolearn" => noautolearn = true,
            other => {
                return Err(format!(
                    "unknown flag {other:?} after the pattern: expected noautolearn or a \
                     # comment"
                ));
            }
        }
    }
    Ok(noautolearn)
}

/// A pattern as parsed from a rule line.
struct Pattern<'a> {
    /// What goes into the automaton.
    automaton: Vec<u8>,
    /// For a `hex:` pattern, the exact bytes.
    exact: Option<Vec<u8>>,
    /// The text after the pattern: flags and a comment.
    rest: &'a str,
}

/// The pattern at the start of `text`.
fn parse_pattern(text: &str) -> Result<Pattern<'_>, String> {
    if let Some(hex) = text.strip_prefix("hex:") {
        let hex = strip_comment(hex).trim();
        let end = hex.find(char::is_whitespace).unwrap_or(hex.len());
        let (hex, flags) = hex.split_at(end);
        let bytes = decode_hex(hex).ok_or_else(|| {
            format!("hex pattern {hex:?} needs an even number (2 or more) of hex digits")
        })?;
        return Ok(Pattern {
            automaton: bytes.clone(),
            exact: Some(bytes),
            rest: flags,
        });
    }
    let Some(quoted) = text.strip_prefix('"') else {
        return Err(format!(
            "pattern {text:?} must be a \"quoted phrase\" or hex:DIGITS"
        ));
    };

    let mut phrase = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            None => return Err("phrase has no closing quote".to_owned()),
            Some('"') => break,
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => phrase.push(c),
                _ => return Err("only \\\" and \\\\ may be escaped in a phrase".to_owned()),
            },
            Some(c) => phrase.push(c),
        }
    }
    // What follows (flags, a comment) is checked by `parse_flags`.
    let after = chars.as_str().trim();

    let collapsed = collapse_whitespace(&phrase);
    if collapsed.len() < MIN_PHRASE_LEN {
        return Err(format!(
            "phrase {phrase:?} is shorter than {MIN_PHRASE_LEN} characters"
        ));
    }
    Ok(Pattern {
        automaton: collapsed.into_bytes(),
        exact: None,
        rest: after,
    })
}

fn strip_comment(text: &str) -> &str {
    text.split('#').next().unwrap_or("")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() < 2 || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `text` with every run of white space made one space, and no space at either end.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    collapse_whitespace_into(text, &mut out);
    out
}

/// Word by word rather than character by character: the body of every message passes here,
/// and copying whole words is several times faster.
fn collapse_whitespace_into(text: &str, out: &mut String) {
    for (index, word) in text.split_whitespace().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> RuleSet {
        RuleSet::parse(text, Path::new("test.rules")).expect("rules parse")
    }

    fn body(text: &str) -> RuleText {
        let mut rule_text = RuleText::default();
        rule_text.push_body(text);
        rule_text
    }

    fn names(outcome: &RuleOutcome) -> Vec<&str> {
        outcome.hits.iter().map(|hit| hit.name.as_str()).collect()
    }

    #[test]
    fn phrase_matches_ignoring_case_and_line_folding() {
        let set = rules("FREE_MONEY 2.5 body \"free money\"\n");
        let outcome = set.apply(&body("Get FREE\r\n   Money now"));
        assert_eq!(names(&outcome), ["FREE_MONEY"]);
        assert_eq!(outcome.score, 2.5);
    }

    #[test]
    fn a_rule_counts_once_however_often_it_matches() {
        let set = rules("X 1 body \"win\"\n");
        assert_eq!(set.apply(&body("win win win")).score, 1.0);
    }

    #[test]
    fn weights_add_up_including_negative_ones() {
        let set = rules("A 3 body \"viagra\"\nB -1.5 body \"unsubscribe\"\n");
        let outcome = set.apply(&body("viagra ... unsubscribe"));
        assert_eq!(outcome.score, 1.5);
    }

    #[test]
    fn header_field_scope_matches_only_that_field() {
        let set = rules("SUBJ 3 header:Subject \"lottery\"\n");
        let mut text = RuleText::default();
        text.push_header("From", "lottery@example.com");
        assert!(set.apply(&text).hits.is_empty());
        text.push_header("Subject", "You won the LOTTERY");
        assert_eq!(names(&set.apply(&text)), ["SUBJ"]);
    }

    #[test]
    fn body_rules_ignore_headers_and_header_rules_ignore_the_body() {
        let set =
            rules("B 1 body \"cheap meds\"\nH 1 header \"cheap meds\"\nA 1 any \"cheap meds\"\n");
        let mut text = RuleText::default();
        text.push_header("Subject", "cheap meds");
        assert_eq!(names(&set.apply(&text)), ["H", "A"]);
        assert_eq!(names(&set.apply(&body("cheap meds"))), ["B", "A"]);
    }

    #[test]
    fn hex_pattern_matches_exact_bytes_only() {
        let set = rules("CYR 4 body hex:d180d0b0\n");
        assert_eq!(names(&set.apply(&body("x\u{440}\u{430}x"))), ["CYR"]);
        let set = rules("UPPER 1 body hex:414243\n");
        assert!(set.apply(&body("abc")).hits.is_empty());
        assert_eq!(names(&set.apply(&body("ABC"))), ["UPPER"]);
    }

    #[test]
    fn gtube_is_recognised_without_any_rule() {
        let set = rules("");
        let outcome = set.apply(&body(&format!("test\n{GTUBE}\n")));
        assert!(outcome.gtube);
        assert!(outcome.hits.is_empty());
    }

    #[test]
    fn gtube_rule_and_builtin_gtube_share_one_pattern() {
        let set = rules(&format!("GTUBE 1000 body \"{GTUBE}\"\n"));
        let outcome = set.apply(&body(GTUBE));
        assert!(outcome.gtube);
        assert_eq!(outcome.score, 1000.0);
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let set = rules("# a comment\n\n   \nA 1 body \"abc\" # trailing\n");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn escaped_quotes_are_part_of_the_phrase() {
        let set = rules(r#"Q 1 body "say \"hi\"""#);
        assert_eq!(names(&set.apply(&body("they say \"hi\" ok"))), ["Q"]);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let cases = [
            ("A 1 body", "missing pattern"),
            ("A one body \"abc\"", "not a number"),
            ("A 1 footer \"abc\"", "unknown scope"),
            ("A 1 body abc", "quoted phrase"),
            ("A 1 body \"abc", "closing quote"),
            ("A 1 body \"ab\"", "shorter than"),
            ("A 1 body hex:abc", "even number"),
            ("A/B 1 body \"abc\"", "letters, digits"),
            ("A 1 body \"abc\"\nA 2 body \"def\"", "defined twice"),
        ];
        for (text, expected) in cases {
            let error = RuleSet::parse(&format!("# header\n{text}\n"), Path::new("t.rules"))
                .expect_err(text);
            let message = error.to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                message.contains("line 2") || message.contains("line 3"),
                "{message}"
            );
        }
    }

    #[test]
    fn default_rules_compile_and_include_gtube() {
        let set = RuleSet::load(None).expect("built-in rules parse");
        assert!(set.len() >= 5);
        let outcome = set.apply(&body(GTUBE));
        assert!(outcome.gtube);
        assert!(outcome.score >= 100.0, "{outcome:?}");
    }

    #[test]
    fn a_noautolearn_rule_marks_its_hits_as_a_test_pattern() {
        let set = rules(
            "TEST 100 body \"moat test pattern\" noautolearn\n\
             SUBJ 2 header:Subject \"free money\"\n\
             BODY 1.5 body \"act now\" # a comment\n",
        );
        let mut text = body("this is a moat test pattern, act now");
        text.push_header("Subject", "free money");
        let outcome = set.apply(&text);
        let sides = set.sides(&outcome.hits);
        assert!(sides.test_pattern);
        assert_eq!(sides.header_points, 2.0);
        assert_eq!(sides.body_points, 101.5);
        assert!(!set.sides(&outcome.hits[1..]).test_pattern);
    }

    #[test]
    fn the_built_in_gtube_rule_is_noautolearn_and_unknown_flags_are_refused() {
        let set = RuleSet::load(None).expect("built-in rules");
        let outcome = set.apply(&body(GTUBE));
        assert!(set.sides(&outcome.hits).test_pattern);
        let error = RuleSet::parse("X 1 body \"abc\" sometimes\n", Path::new("t.rules"))
            .expect_err("refused");
        assert!(error.to_string().contains("unknown flag"), "{error}");
    }

    #[test]
    fn whitespace_collapses_to_single_spaces() {
        assert_eq!(collapse_whitespace("  a \r\n\t b  "), "a b");
        assert_eq!(collapse_whitespace(""), "");
    }
}
