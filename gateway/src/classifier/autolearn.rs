//! Which of its own verdicts `moat serve` may learn from: SpamAssassin's auto-learning, with
//! its two safeguards against teaching the classifier its own mistakes or a tester's joke.
//!
//! - A message whose verdict rests on a test pattern (GTUBE, or any rule marked
//!   `noautolearn`) is never learned: it says nothing about real mail, and a stream of GTUBE
//!   messages with chosen words would otherwise teach the classifier those words are spam.
//! - A message is learned as spam only when both sides of it look like spam: at least
//!   [`AUTOLEARN_MIN_SIDE_POINTS`] from header-side checks (DNSBL, sender authentication,
//!   header rules) and as many from body-side checks (body rules, URI blocklists), as
//!   SpamAssassin requires 3 header and 3 body points. One loud check alone (a DNSBL listing of
//!   a shared IP, a newsletter's phrases) then cannot make the classifier learn spam.
//!
//! Ham needs no such pair: it is learned only below `autolearn_ham_at`, which is under zero,
//! so only mail with good signs is learned as ham.

use super::model::Label;
use super::settings::ClassifierSettings;

/// Points each side (header and body) must give before a message is learned as spam: as
/// SpamAssassin's auto-learning requires 3 of each.
pub const AUTOLEARN_MIN_SIDE_POINTS: f32 = 3.0;

/// What the checks other than the classifier said, split for the auto-learning decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AutolearnEvidence {
    /// The score without the classifier's own part.
    pub score: f32,
    /// Whether a test pattern (GTUBE, a `noautolearn` rule) matched.
    pub test_pattern: bool,
    /// Points from header-side checks.
    pub header_points: f32,
    /// Points from body-side checks.
    pub body_points: f32,
}

/// The class to learn a message as, or `None` when it must not be learned.
pub fn autolearn_label(
    settings: &ClassifierSettings,
    evidence: &AutolearnEvidence,
) -> Option<Label> {
    if !settings.autolearn || evidence.test_pattern {
        return None;
    }
    let both_sides = evidence.header_points >= AUTOLEARN_MIN_SIDE_POINTS
        && evidence.body_points >= AUTOLEARN_MIN_SIDE_POINTS;
    if evidence.score >= settings.autolearn_spam_at && both_sides {
        Some(Label::Spam)
    } else if evidence.score <= settings.autolearn_ham_at {
        Some(Label::Ham)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(score: f32, header_points: f32, body_points: f32) -> AutolearnEvidence {
        AutolearnEvidence {
            score,
            test_pattern: false,
            header_points,
            body_points,
        }
    }

    #[test]
    fn a_test_pattern_is_never_learned() {
        let settings = ClassifierSettings::default();
        let gtube = AutolearnEvidence {
            test_pattern: true,
            ..evidence(1000.0, 5.0, 1000.0)
        };
        assert_eq!(autolearn_label(&settings, &gtube), None);
    }

    #[test]
    fn spam_needs_points_from_both_header_and_body() {
        let settings = ClassifierSettings::default();
        assert_eq!(autolearn_label(&settings, &evidence(20.0, 0.0, 20.0)), None);
        assert_eq!(autolearn_label(&settings, &evidence(20.0, 20.0, 0.0)), None);
        assert_eq!(
            autolearn_label(&settings, &evidence(20.0, 10.0, 10.0)),
            Some(Label::Spam)
        );
    }

    #[test]
    fn ham_is_learned_below_its_threshold() {
        let settings = ClassifierSettings::default();
        assert_eq!(
            autolearn_label(&settings, &evidence(-2.0, -2.0, 0.0)),
            Some(Label::Ham)
        );
        assert_eq!(autolearn_label(&settings, &evidence(0.0, 0.0, 0.0)), None);
    }
}
