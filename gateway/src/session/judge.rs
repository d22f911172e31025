//! The end of a transaction: the checks on the whole message, the verdict, and what it does to
//! the message (Authentication-Results, spam headers, subject tag) before it is kept.

use super::{DnsblState, Session, Transaction};
use crate::auth::DmarcAction;
use crate::classifier::{
    AutolearnEvidence, Classification, Lesson, MessageDigest, autolearn_label,
};
use crate::content::ContentScanner;
use crate::reply::Refusal;
use crate::verdict::{Action, Contribution, Evidence, Reason, Verdict, tag_subject};

/// Weight of a retry that waited out the greylist delay, as real mail servers do.
const GREYLIST_RETRY_SCORE: f32 = -0.5;

impl Session {
    /// Runs the message checks, decides, and returns the verdict with the message as it will be
    /// kept: the new header fields go below the trace header (`header_length` octets).
    pub(super) async fn judge(
        &self,
        transaction: &Transaction,
        mut message: Vec<u8>,
        header_length: usize,
    ) -> (Verdict, Vec<u8>) {
        let mut evidence = Evidence::default();
        let mut fields = Vec::new();
        // Header-side and body-side points for the auto-learning decision.
        let mut sides = AutolearnEvidence::default();

        // The client: DNSBL weights under the refusal threshold still count.
        if let DnsblState::Done(score) = &self.dnsbl
            && score.score != 0
        {
            let check = format!("dnsbl:{}", score.listed_by.join("+"));
            sides.header_points += score.score as f32;
            evidence.contributions.push(Contribution {
                check,
                score: score.score as f32,
            });
        }
        if transaction
            .added_headers
            .iter()
            .any(|field| field.starts_with("X-Greylist:"))
        {
            let check = "greylist:retried".to_string();
            evidence.contributions.push(Contribution {
                check,
                score: GREYLIST_RETRY_SCORE,
            });
        }

        // The sender (DKIM, ARC and DMARC, with SPF from MAIL FROM) and the content (rules,
        // both anti-virus layers) are checked at the same time.
        let checks = &self.shared.checks;
        let auth = async {
            match (&checks.auth, &transaction.spf) {
                (Some(auth), Some(spf)) => Some(auth.check_message(&message, spf).await),
                _ => None,
            }
        };
        let content = async {
            match &checks.content {
                Some(scanner) => Some(scanner.examine(&message[header_length..]).await),
                None => None,
            }
        };
        let (auth, content) = tokio::join!(auth, content);

        if let Some(report) = auth {
            fields.push(report.authentication_results.clone());
            if report.score != 0.0 {
                let check = format!(
                    "auth:spf={},dmarc={}",
                    report.spf.mail_from.result.as_str(),
                    report.dmarc.result.as_str()
                );
                sides.header_points += report.score;
                evidence.contributions.push(Contribution {
                    check,
                    score: report.score,
                });
            }
            let domain = &report.dmarc.domain;
            match report.dmarc_action {
                Some(DmarcAction::Reject) => evidence.dmarc_reject = Some(domain.clone()),
                Some(DmarcAction::Quarantine) => {
                    evidence.quarantine = Some(format!("DMARC policy of {domain}"));
                }
                None => {}
            }
        }
        let mut classification = None;
        if let Some((report, classified)) = content {
            evidence.add_content(&report);
            if let Some(scanner) = &checks.content {
                let rules = scanner.rule_sides(&report);
                sides.test_pattern = rules.test_pattern;
                sides.header_points += rules.header_points;
                sides.body_points += rules.body_points;
            }
            if let Some(classified) = classified {
                evidence.add_classification(&classified);
                classification = Some(classified);
            }
            if let Some(dnsbl) = &checks.dnsbl {
                let listed = dnsbl.score_domains(&report.analysis.url_domains).await;
                if listed.score != 0 {
                    let check = format!("uribl:{}", listed.listed_by.join("+"));
                    sides.body_points += listed.score as f32;
                    evidence.contributions.push(Contribution {
                        check,
                        score: listed.score as f32,
                    });
                }
            }
        }

        let verdict = self
            .shared
            .checks
            .verdict
            .judge(&evidence, &transaction.recipients);
        if let (Some(scanner), Some(classification)) = (&checks.content, classification) {
            sides.score = verdict.score_without_classifier();
            let digest = MessageDigest::of(&message[header_length..]);
            autolearn(scanner, &verdict, &sides, digest, classification);
        }
        if self.shared.checks.score_messages() {
            fields.extend(verdict.headers());
        }

        let mut added = Vec::new();
        for field in fields {
            added.extend_from_slice(field.as_bytes());
            added.extend_from_slice(b"\r\n");
        }
        message.splice(header_length..header_length, added);
        if verdict.action == Action::Tag {
            let tag = &self.shared.checks.verdict.subject_tag;
            message = tag_subject(&message, tag);
        }
        (verdict, message)
    }
}

/// Learns a message the other checks are very sure about, as SpamAssassin's auto-learning
/// (the rule is in `classifier::autolearn`: no test patterns, spam only with header and body
/// evidence). A message that could not be scanned is never learned. The digest goes to the
/// record of learned messages, so that releasing a message learned here as spam moves it to
/// ham.
fn autolearn(
    scanner: &ContentScanner,
    verdict: &Verdict,
    sides: &AutolearnEvidence,
    digest: MessageDigest,
    classification: Classification,
) {
    let Some(classifier) = scanner.classifier() else {
        return;
    };
    if verdict.action == Action::Defer || classification.features.is_empty() {
        return;
    }
    let Some(label) = autolearn_label(classifier.settings(), sides) else {
        return;
    };
    tracing::debug!(
        label = label.name(),
        score = sides.score,
        header_points = sides.header_points,
        body_points = sides.body_points,
        "classifier auto-learned the message"
    );
    classifier.learn(Lesson {
        digest,
        features: classification.features,
        label,
    });
}

/// The refusal for a verdict that refuses, or `None` when the message is kept.
pub(super) fn refusal(verdict: &Verdict) -> Option<Refusal> {
    match (&verdict.action, &verdict.reason) {
        (Action::Accept | Action::Tag | Action::Quarantine, _) => None,
        (Action::Defer, Some(Reason::Unscanned(check))) => {
            Some(Refusal::ScanUnavailable(check.clone()))
        }
        (Action::Defer, _) => Some(Refusal::ScanUnavailable("a content check".into())),
        (Action::Reject, Some(Reason::Virus(name))) => Some(Refusal::VirusFound(name.clone())),
        (Action::Reject, Some(Reason::DmarcReject(domain))) => {
            Some(Refusal::DmarcRejected(domain.clone()))
        }
        (Action::Reject, _) => Some(Refusal::SpamRejected(format!("{:.1}", verdict.score))),
    }
}
