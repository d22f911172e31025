//! Every answer the greylist gives, decided in one place: the SMTP reply, the header, the
//! Postfix policy action, and the outcome name that logs, metrics and tests use.

use std::fmt;
use std::time::Duration;

use crate::exemptions::Exemption;

/// The enhanced status of every greylisting deferral (RFC 3463: delivery not authorised).
pub const GREYLIST_STATUS: &str = "4.7.1";

/// The header added to mail that passed on retry, as postgrey adds it.
pub const HEADER_NAME: &str = "X-Greylist";

/// What to do when the store cannot answer within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Let the mail through ungreylisted: an outage costs some spam, not mail.
    #[default]
    Accept,
    /// Answer a temporary failure: an outage delays all mail, but lets no spam in.
    TempFail,
}

/// Why a request passed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The triplet passed before.
    Triplet,
    /// The client network is auto-whitelisted.
    AutoWhitelistedClient,
}

/// The greylist's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A first or early attempt: refuse temporarily, retry after this long.
    Defer {
        /// Time until a retry would pass.
        retry_after: Duration,
    },
    /// A retry after the delay: accept, and say in a header how long it took.
    Pass {
        /// Time between the first attempt and this one.
        delayed: Duration,
    },
    /// A known triplet or client: accept without a header.
    PassAtOnce {
        /// Which record made it known.
        because: Known,
    },
    /// Not greylisted at all.
    Exempt {
        /// The exemption that applied.
        because: Exemption,
    },
    /// The store failed or took longer than the budget; the failure mode decides.
    Unavailable {
        /// The configured failure mode.
        mode: FailureMode,
    },
}

/// The outcome names: one per counter, log value and test assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Deferred (first or early attempt).
    Deferred,
    /// Passed on a retry after the delay.
    PassedOnRetry,
    /// Passed at once: known triplet or auto-whitelisted client.
    PassedAtOnce,
    /// Exempted.
    Exempted,
    /// The store failed or was too slow.
    StoreFailed,
}

impl Outcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Deferred,
        Outcome::PassedOnRetry,
        Outcome::PassedAtOnce,
        Outcome::Exempted,
        Outcome::StoreFailed,
    ];

    /// The outcome's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Deferred => "deferred",
            Outcome::PassedOnRetry => "passed_on_retry",
            Outcome::PassedAtOnce => "passed_at_once",
            Outcome::Exempted => "exempted",
            Outcome::StoreFailed => "store_failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An SMTP reply for the RCPT stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code.
    pub status: &'static str,
    /// The text.
    pub text: String,
}

impl Decision {
    /// The outcome this decision counts as.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Defer { .. } => Outcome::Deferred,
            Decision::Pass { .. } => Outcome::PassedOnRetry,
            Decision::PassAtOnce { .. } => Outcome::PassedAtOnce,
            Decision::Exempt { .. } => Outcome::Exempted,
            Decision::Unavailable { .. } => Outcome::StoreFailed,
        }
    }

    /// The refusal to give at RCPT, or `None` when the recipient may be accepted.
    ///
    /// 450 is the code Postfix gives for `DEFER_IF_PERMIT`; 451 says the failure is ours.
    pub fn smtp_reply(&self) -> Option<SmtpReply> {
        match self {
            Decision::Defer { retry_after } => Some(SmtpReply {
                code: 450,
                status: GREYLIST_STATUS,
                text: defer_text(*retry_after),
            }),
            Decision::Unavailable {
                mode: FailureMode::TempFail,
            } => Some(SmtpReply {
                code: 451,
                status: GREYLIST_STATUS,
                text: UNAVAILABLE_TEXT.to_owned(),
            }),
            _ => None,
        }
    }

    /// The header to add to an accepted message (without CRLF), or `None`. `host` names the
    /// host that delayed it.
    pub fn header(&self, host: &str) -> Option<String> {
        let Decision::Pass { delayed } = self else {
            return None;
        };
        Some(format!(
            "{HEADER_NAME}: delayed {} seconds by Moat at {host}",
            delayed.as_secs()
        ))
    }

    /// The Postfix policy delegation action (without the `action=` prefix).
    pub fn policy_action(&self, host: &str) -> String {
        if let Some(header) = self.header(host) {
            return format!("PREPEND {header}");
        }
        match self.smtp_reply() {
            // DEFER_IF_PERMIT, not DEFER: a later restriction that rejects outright still wins.
            Some(reply) => format!("DEFER_IF_PERMIT {} {}", reply.status, reply.text),
            None => "DUNNO".to_owned(),
        }
    }
}

const UNAVAILABLE_TEXT: &str = "Greylisting is temporarily unavailable, please try again later";

fn defer_text(retry_after: Duration) -> String {
    // A sender retrying a little early is deferred again, so round up and never say 0.
    let seconds = retry_after.as_secs().max(1);
    format!("Greylisted, please try again in {seconds} seconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferral_is_450_4_7_1_and_says_when_to_retry() {
        let decision = Decision::Defer {
            retry_after: Duration::from_secs(300),
        };
        let reply = decision.smtp_reply().expect("a deferral refuses");
        assert_eq!((reply.code, reply.status), (450, "4.7.1"));
        assert_eq!(reply.text, "Greylisted, please try again in 300 seconds");
        assert_eq!(
            decision.policy_action("mx.example"),
            "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds"
        );
    }

    #[test]
    fn pass_on_retry_prepends_the_delay_header() {
        let decision = Decision::Pass {
            delayed: Duration::from_secs(301),
        };
        assert_eq!(decision.smtp_reply(), None);
        assert_eq!(
            decision.policy_action("mx.example"),
            "PREPEND X-Greylist: delayed 301 seconds by Moat at mx.example"
        );
    }

    #[test]
    fn known_exempt_and_accepted_failures_are_dunno() {
        let decisions = [
            Decision::PassAtOnce {
                because: Known::Triplet,
            },
            Decision::Exempt {
                because: Exemption::ClientNetwork,
            },
            Decision::Unavailable {
                mode: FailureMode::Accept,
            },
        ];
        for decision in decisions {
            assert_eq!(
                decision.policy_action("mx.example"),
                "DUNNO",
                "{decision:?}"
            );
            assert_eq!(decision.header("mx.example"), None);
        }
    }

    #[test]
    fn tempfail_mode_refuses_with_451() {
        let decision = Decision::Unavailable {
            mode: FailureMode::TempFail,
        };
        let reply = decision.smtp_reply().expect("tempfail refuses");
        assert_eq!(reply.code, 451);
        assert!(
            decision
                .policy_action("h")
                .starts_with("DEFER_IF_PERMIT 4.7.1 ")
        );
    }
}
