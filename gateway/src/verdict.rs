//! The verdict on a message: every check's contribution summed into a score, and the action
//! the thresholds and rules give (accept, tag, quarantine, reject, or try again later).
//!
//! Hard rules come before the score: a virus found by either anti-virus layer rejects (unless
//! configured otherwise), a scan that could not run defers rather than let unscanned mail in,
//! and a DMARC `p=reject` failure rejects. Then the score meets the thresholds of the
//! recipient's domain, or the defaults.

use std::collections::HashMap;
use std::fmt;

use crate::classifier::{Classification, Outcome};
use crate::content::{ContentReport, FailureMode};

/// Default score from which a message is tagged (X-Spam-Status, subject tag), as
/// SpamAssassin's required_score.
pub const DEFAULT_TAG_AT: f32 = 5.0;

/// Default score from which a message is held in the quarantine.
pub const DEFAULT_QUARANTINE_AT: f32 = 10.0;

/// Default score from which a message is refused at the end of DATA.
pub const DEFAULT_REJECT_AT: f32 = 15.0;

/// Default tag put in front of the subject of tagged mail.
pub const DEFAULT_SUBJECT_TAG: &str = "[SPAM]";

/// One check's part in the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The check, as `dnsbl:bl.example`, `rule:GTUBE`, `spf:fail`.
    pub check: String,
    /// Its score; negative for good signs.
    pub score: f32,
}

/// What the checks found about one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// Every scored finding.
    pub contributions: Vec<Contribution>,
    /// A virus name, from either anti-virus layer.
    pub virus: Option<String>,
    /// A check that had to run but could not (clamd down), under a temporary-failure mode.
    pub unscanned: Option<String>,
    /// The author domain of a DMARC failure under `p=reject` that the configuration turns
    /// into a refusal.
    pub dmarc_reject: Option<String>,
    /// A finding that holds the message whatever the score (DMARC failure under
    /// `p=quarantine`).
    pub quarantine: Option<String>,
    /// What the statistical classifier said, when it ran.
    pub classifier: Option<Outcome>,
}

impl Evidence {
    /// Adds what the content checks found: rule hits, the first virus, the first attachment
    /// policy hit, and a scan that could not run.
    pub fn add_content(&mut self, report: &ContentReport) {
        for hit in &report.rule_hits {
            let check = format!("rule:{}", hit.name);
            self.contributions.push(Contribution {
                check,
                score: hit.weight,
            });
        }
        if let Some(virus) = report.viruses.first() {
            self.virus = Some(virus.name.clone());
        }
        // A refused attachment is held for an operator rather than refused outright: office
        // macros and encrypted archives are also everyday business mail.
        if let Some(hit) = report.policy_hits.first() {
            self.quarantine = Some(format!("attachment policy: {} in {}", hit.rule, hit.part));
        }
        match &report.failure {
            Some(failure) if failure.mode == FailureMode::TempFail => {
                self.unscanned = Some(failure.reason.clone());
            }
            Some(failure) => {
                tracing::warn!(reason = %failure.reason, "content scan incomplete; accepted as configured");
            }
            None => {}
        }
    }

    /// Adds the classifier's verdict: always as a contribution, with a zero score when it has
    /// no probability, so that the log line and the headers say why it did not count.
    pub fn add_classification(&mut self, classification: &Classification) {
        self.contributions.push(Contribution {
            check: classification.check(),
            score: classification.score,
        });
        self.classifier = Some(classification.outcome);
    }
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delivered as it is (with Authentication-Results).
    Accept,
    /// Delivered with spam headers and a subject tag.
    Tag,
    /// Held in the quarantine.
    Quarantine,
    /// Refused with 550/554 at the end of DATA.
    Reject,
    /// Refused with 451: try again later.
    Defer,
}

impl Action {
    /// The name used in logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Reject => "reject",
            Action::Defer => "defer",
        }
    }
}

/// The thresholds of one domain, or the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Tag from this score.
    pub tag_at: f32,
    /// Quarantine from this score.
    pub quarantine_at: f32,
    /// Reject from this score.
    pub reject_at: f32,
    /// Whether a virus rejects (true) or quarantines (false).
    pub reject_viruses: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            tag_at: DEFAULT_TAG_AT,
            quarantine_at: DEFAULT_QUARANTINE_AT,
            reject_at: DEFAULT_REJECT_AT,
            reject_viruses: true,
        }
    }
}

/// The verdict policy: default thresholds and per-domain overrides.
#[derive(Debug, Clone, Default)]
pub struct VerdictPolicy {
    /// The defaults.
    pub defaults: Thresholds,
    /// Overrides by lower-case recipient domain.
    pub domains: HashMap<String, Thresholds>,
    /// The subject tag of tagged mail.
    pub subject_tag: String,
}

/// The hard rule that decided, when one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A virus, by name.
    Virus(String),
    /// A check that could not run under a temporary-failure mode.
    Unscanned(String),
    /// A DMARC failure under `p=reject` of this author domain.
    DmarcReject(String),
    /// A finding that holds the message whatever the score.
    Held(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Virus(name) => write!(f, "virus {name}"),
            Reason::Unscanned(check) => write!(f, "unscanned: {check}"),
            Reason::DmarcReject(domain) => write!(f, "DMARC p=reject of {domain}"),
            Reason::Held(why) => f.write_str(why),
        }
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The action.
    pub action: Action,
    /// The total score.
    pub score: f32,
    /// The thresholds that applied.
    pub thresholds: Thresholds,
    /// Why, when a hard rule decided.
    pub reason: Option<Reason>,
    /// The contributions, for headers and the log line.
    pub contributions: Vec<Contribution>,
    /// What the statistical classifier said, when it ran.
    pub classifier: Option<Outcome>,
}

impl VerdictPolicy {
    /// Judges the evidence for a message to `recipients`.
    ///
    /// A message has one reply for all its recipients, so when their domains' thresholds
    /// differ, the most lenient applies: no domain loses mail it asked to receive, and the
    /// stricter domains still get the spam headers.
    pub fn judge(&self, evidence: &Evidence, recipients: &[String]) -> Verdict {
        let thresholds = self.thresholds_for(recipients);
        // A fold from +0.0, not `sum()`, which starts from -0.0 and would print "-0.0".
        let score = evidence
            .contributions
            .iter()
            .fold(0.0, |total, c| total + c.score);
        let verdict = |action, reason: Option<Reason>| Verdict {
            action,
            score,
            thresholds: thresholds.clone(),
            reason,
            contributions: evidence.contributions.clone(),
            classifier: evidence.classifier,
        };

        if let Some(virus) = &evidence.virus {
            let action = if thresholds.reject_viruses {
                Action::Reject
            } else {
                Action::Quarantine
            };
            return verdict(action, Some(Reason::Virus(virus.clone())));
        }
        if let Some(check) = &evidence.unscanned {
            return verdict(Action::Defer, Some(Reason::Unscanned(check.clone())));
        }
        if let Some(domain) = &evidence.dmarc_reject {
            return verdict(Action::Reject, Some(Reason::DmarcReject(domain.clone())));
        }
        if let Some(why) = &evidence.quarantine
            && score < thresholds.reject_at
        {
            return verdict(Action::Quarantine, Some(Reason::Held(why.clone())));
        }

        let action = if score >= thresholds.reject_at {
            Action::Reject
        } else if score >= thresholds.quarantine_at {
            Action::Quarantine
        } else if score >= thresholds.tag_at {
            Action::Tag
        } else {
            Action::Accept
        };
        verdict(action, None)
    }

    /// The most lenient thresholds among the recipients' domains.
    fn thresholds_for(&self, recipients: &[String]) -> Thresholds {
        let mut chosen: Option<Thresholds> = None;
        for recipient in recipients {
            let domain = recipient
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase());
            let domain_thresholds = domain
                .and_then(|d| self.domains.get(&d))
                .unwrap_or(&self.defaults);
            chosen = Some(match chosen {
                None => domain_thresholds.clone(),
                Some(current) => Thresholds {
                    tag_at: current.tag_at.max(domain_thresholds.tag_at),
                    quarantine_at: current.quarantine_at.max(domain_thresholds.quarantine_at),
                    reject_at: current.reject_at.max(domain_thresholds.reject_at),
                    reject_viruses: current.reject_viruses && domain_thresholds.reject_viruses,
                },
            });
        }
        chosen.unwrap_or_else(|| self.defaults.clone())
    }
}

impl Verdict {
    /// The header fields a delivered message gets, each without CRLF: X-Spam-Status always,
    /// X-Spam-Flag when tagged, and X-Spam-Bayes with the classifier's probability (or why it
    /// has none) when it ran.
    pub fn headers(&self) -> Vec<String> {
        let spam = matches!(self.action, Action::Tag | Action::Quarantine);
        let mut headers = vec![format!(
            "X-Spam-Status: {}, score={:.1} required={:.1} tests={}",
            if spam { "Yes" } else { "No" },
            self.score,
            self.thresholds.tag_at,
            self.contributions
                .iter()
                .map(|c| format!("{}={:.1}", c.check, c.score))
                .collect::<Vec<_>>()
                .join(",")
        )];
        if spam {
            headers.push("X-Spam-Flag: YES".to_string());
        }
        if let Some(outcome) = &self.classifier {
            headers.push(format!("X-Spam-Bayes: {outcome}"));
        }
        headers
    }
}

impl Verdict {
    /// The score without the classifier's own contribution: what autolearning compares with
    /// its thresholds, so that the classifier never confirms itself.
    pub fn score_without_classifier(&self) -> f32 {
        self.contributions
            .iter()
            .filter(|c| !c.check.starts_with(crate::classifier::CHECK_NAME))
            .fold(0.0, |total, c| total + c.score)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} score={:.1}", self.action.name(), self.score)?;
        if let Some(reason) = &self.reason {
            write!(f, " reason=\"{reason}\"")?;
        }
        for contribution in &self.contributions {
            write!(f, " {}={:.1}", contribution.check, contribution.score)?;
        }
        Ok(())
    }
}

/// Puts `tag` in front of the message's Subject (adding a Subject if it has none), unless it is
/// there already. Only the header section is touched; the body stays byte for byte.
pub fn tag_subject(message: &[u8], tag: &str) -> Vec<u8> {
    let header_end = message
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(message.len(), |at| at + 2);
    let mut line_start = 0;
    while line_start < header_end {
        let line_end = message[line_start..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header_end, |at| line_start + at + 2);
        let line = &message[line_start..line_end];
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            let value_start = line_start + 8 + line[8..].iter().take_while(|b| **b == b' ').count();
            if message[value_start..].starts_with(tag.as_bytes()) {
                return message.to_vec();
            }
            let mut tagged = Vec::with_capacity(message.len() + tag.len() + 1);
            tagged.extend_from_slice(&message[..value_start]);
            tagged.extend_from_slice(tag.as_bytes());
            tagged.push(b' ');
            tagged.extend_from_slice(&message[value_start..]);
            return tagged;
        }
        line_start = line_end;
    }
    let mut tagged = Vec::with_capacity(message.len() + tag.len() + 12);
    tagged.extend_from_slice(format!("Subject: {tag}\r\n").as_bytes());
    tagged.extend_from_slice(message);
    tagged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(scores: &[(&str, f32)]) -> Evidence {
        Evidence {
            contributions: scores
                .iter()
                .map(|(check, score)| Contribution {
                    check: check.to_string(),
                    score: *score,
                })
                .collect(),
            ..Evidence::default()
        }
    }

    fn policy() -> VerdictPolicy {
        let mut domains = HashMap::new();
        domains.insert(
            "strict.example".to_string(),
            Thresholds {
                tag_at: 2.0,
                quarantine_at: 3.0,
                reject_at: 4.0,
                reject_viruses: true,
            },
        );
        VerdictPolicy {
            defaults: Thresholds::default(),
            domains,
            subject_tag: "[SPAM]".into(),
        }
    }

    #[test]
    fn the_score_meets_the_thresholds_in_order() {
        let to = ["bob@example.com".to_string()];
        assert_eq!(
            policy().judge(&evidence(&[("a", 1.0)]), &to).action,
            Action::Accept
        );
        assert_eq!(
            policy().judge(&evidence(&[("a", 6.0)]), &to).action,
            Action::Tag
        );
        assert_eq!(
            policy()
                .judge(&evidence(&[("a", 6.0), ("b", 5.0)]), &to)
                .action,
            Action::Quarantine
        );
        assert_eq!(
            policy().judge(&evidence(&[("a", 20.0)]), &to).action,
            Action::Reject
        );
    }

    #[test]
    fn a_domain_override_applies_and_the_most_lenient_wins_for_mixed_recipients() {
        let strict = ["bob@strict.example".to_string()];
        assert_eq!(
            policy().judge(&evidence(&[("a", 3.5)]), &strict).action,
            Action::Quarantine
        );
        let mixed = [
            "bob@strict.example".to_string(),
            "amy@example.com".to_string(),
        ];
        assert_eq!(
            policy().judge(&evidence(&[("a", 3.5)]), &mixed).action,
            Action::Accept
        );
    }

    #[test]
    fn hard_rules_come_before_the_score() {
        let to = ["bob@example.com".to_string()];
        let mut virus = evidence(&[("a", -50.0)]);
        virus.virus = Some("Eicar-Test-Signature".into());
        assert_eq!(policy().judge(&virus, &to).action, Action::Reject);
        let mut unscanned = evidence(&[]);
        unscanned.unscanned = Some("clamd unavailable".into());
        assert_eq!(policy().judge(&unscanned, &to).action, Action::Defer);
    }

    #[test]
    fn the_subject_tag_goes_in_once_and_the_body_is_untouched() {
        let message = b"From: a@example.org\r\nSubject: hello\r\n\r\nSubject: body\r\n";
        let tagged = tag_subject(message, "[SPAM]");
        assert_eq!(
            tagged,
            b"From: a@example.org\r\nSubject: [SPAM] hello\r\n\r\nSubject: body\r\n"
        );
        assert_eq!(tag_subject(&tagged, "[SPAM]"), tagged);
        assert_eq!(
            tag_subject(b"From: a\r\n\r\nx", "[SPAM]"),
            b"Subject: [SPAM]\r\nFrom: a\r\n\r\nx"
        );
    }
}
