//! The end of a transaction: the checks on the whole message, the verdict, and what it does to
//! the message (Authentication-Results, spam headers, subject tag) before it is kept.

use super::{DnsblState, Session, Transaction};
use crate::auth::DmarcAction;
use crate::content::{ContentReport, FailureMode};
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

        // The client: DNSBL weights under the refusal threshold still count.
        if let DnsblState::Done(score) = &self.dnsbl
            && score.score != 0
        {
            let check = format!("dnsbl:{}", score.listed_by.join("+"));
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
                Some(scanner) => Some(scanner.scan(&message[header_length..]).await),
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
        if let Some(report) = content {
            weigh_content(&report, &mut evidence);
            if let Some(dnsbl) = &checks.dnsbl {
                let listed = dnsbl.score_domains(&report.analysis.url_domains).await;
                if listed.score != 0 {
                    let check = format!("uribl:{}", listed.listed_by.join("+"));
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

/// Adds what the content checks found to the evidence.
fn weigh_content(report: &ContentReport, evidence: &mut Evidence) {
    for hit in &report.rule_hits {
        let check = format!("rule:{}", hit.name);
        evidence.contributions.push(Contribution {
            check,
            score: hit.weight,
        });
    }
    if let Some(virus) = report.viruses.first() {
        evidence.virus = Some(virus.name.clone());
    }
    // A refused attachment is held for an operator rather than refused outright: office
    // macros and encrypted archives are also everyday business mail.
    if let Some(hit) = report.policy_hits.first() {
        evidence.quarantine = Some(format!("attachment policy: {} in {}", hit.rule, hit.part));
    }
    match &report.failure {
        Some(failure) if failure.mode == FailureMode::TempFail => {
            evidence.unscanned = Some(failure.reason.clone());
        }
        Some(failure) => {
            tracing::warn!(reason = %failure.reason, "content scan incomplete; accepted as configured");
        }
        None => {}
    }
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
