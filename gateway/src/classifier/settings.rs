//! The `[classifier]` configuration section: serde struct as written, validated into
//! [`ClassifierSettings`].
//!
//! ```toml
//! [classifier]
//! enabled = true
//! # Messages of each class the model must have learned before it counts (SpamAssassin's
//! # bayes_min_spam_num and bayes_min_ham_num).
//! min_spam = 200
//! min_ham = 200
//! # Score at probability 1 (spam) and at probability 0 (ham); linear in between from 0.5.
//! spam_weight = 6.0
//! ham_weight = -3.0
//! # Learn what the other checks are very sure about (SpamAssassin's bayes_auto_learn); never
//! # a test pattern, and spam only with header-side and body-side evidence (`autolearn`).
//! autolearn = true
//! autolearn_spam_at = 12.0
//! autolearn_ham_at = -1.0
//! ```

use serde::Deserialize;

/// Default messages of each class learned before the classifier counts, as SpamAssassin's
/// `bayes_min_spam_num` and `bayes_min_ham_num`: with fewer, a handful of words decide.
pub const DEFAULT_MIN_LEARNED: u64 = 200;

/// Default score of a message the classifier is sure is spam (probability 1). Measured by
/// cross-validation on the corpus's training half (ARCHITECTURE.md): above the tag threshold
/// alone, since at probability >= 0.92 the false positive rate stayed under 0.2%.
pub const DEFAULT_SPAM_WEIGHT: f32 = 6.0;

/// Default score of a message the classifier is sure is ham (probability 0): it offsets a
/// rule or two that a legitimate newsletter trips, as SpamAssassin's BAYES_00 (-1.9) does,
/// a little more since the estimate here is continuous.
pub const DEFAULT_HAM_WEIGHT: f32 = -3.0;

/// Default score, without the classifier's own part, from which a message is learned as
/// spam: SpamAssassin's `bayes_auto_learn_threshold_spam`.
pub const DEFAULT_AUTOLEARN_SPAM_AT: f32 = 12.0;

/// Default score, without the classifier's own part, up to which a message is learned as
/// ham: below zero, so that only mail with good signs (DNSWL, DKIM with DMARC) is learned,
/// never mail merely because no rule matched.
pub const DEFAULT_AUTOLEARN_HAM_AT: f32 = -1.0;

/// `[classifier]` as written; every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClassifierSection {
    pub enabled: Option<bool>,
    pub min_spam: Option<u64>,
    pub min_ham: Option<u64>,
    pub spam_weight: Option<f32>,
    pub ham_weight: Option<f32>,
    pub autolearn: Option<bool>,
    pub autolearn_spam_at: Option<f32>,
    pub autolearn_ham_at: Option<f32>,
}

/// Validated classifier settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSettings {
    /// Whether the classifier runs at all.
    pub enabled: bool,
    /// Spam messages learned before it counts.
    pub min_spam: u64,
    /// Ham messages learned before it counts.
    pub min_ham: u64,
    /// Score at probability 1.
    pub spam_weight: f32,
    /// Score at probability 0 (zero or negative).
    pub ham_weight: f32,
    /// Whether sure verdicts are learned.
    pub autolearn: bool,
    /// Learn as spam from this score (without the classifier's part).
    pub autolearn_spam_at: f32,
    /// Learn as ham up to this score (without the classifier's part).
    pub autolearn_ham_at: f32,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        ClassifierSettings {
            enabled: true,
            min_spam: DEFAULT_MIN_LEARNED,
            min_ham: DEFAULT_MIN_LEARNED,
            spam_weight: DEFAULT_SPAM_WEIGHT,
            ham_weight: DEFAULT_HAM_WEIGHT,
            autolearn: true,
            autolearn_spam_at: DEFAULT_AUTOLEARN_SPAM_AT,
            autolearn_ham_at: DEFAULT_AUTOLEARN_HAM_AT,
        }
    }
}

/// A `[classifier]` key with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config classifier.{key} = {value}: {expected}")]
pub struct ClassifierConfigError {
    /// The key.
    pub key: &'static str,
    /// The value found.
    pub value: String,
    /// What would be accepted.
    pub expected: &'static str,
}

impl ClassifierSection {
    /// Checks every value.
    ///
    /// # Errors
    /// [`ClassifierConfigError`] naming the first bad key.
    pub fn validate(self) -> Result<ClassifierSettings, ClassifierConfigError> {
        let defaults = ClassifierSettings::default();
        let settings = ClassifierSettings {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            min_spam: self.min_spam.unwrap_or(defaults.min_spam),
            min_ham: self.min_ham.unwrap_or(defaults.min_ham),
            spam_weight: self.spam_weight.unwrap_or(defaults.spam_weight),
            ham_weight: self.ham_weight.unwrap_or(defaults.ham_weight),
            autolearn: self.autolearn.unwrap_or(defaults.autolearn),
            autolearn_spam_at: self.autolearn_spam_at.unwrap_or(defaults.autolearn_spam_at),
            autolearn_ham_at: self.autolearn_ham_at.unwrap_or(defaults.autolearn_ham_at),
        };
        let bad = |key, value: f32, expected| ClassifierConfigError {
            key,
            value: value.to_string(),
            expected,
        };
        if !(settings.spam_weight.is_finite() && settings.spam_weight >= 0.0) {
            return Err(bad(
                "spam_weight",
                settings.spam_weight,
                "a score of zero or more",
            ));
        }
        if !(settings.ham_weight.is_finite() && settings.ham_weight <= 0.0) {
            return Err(bad(
                "ham_weight",
                settings.ham_weight,
                "a score of zero or less",
            ));
        }
        let ordered = settings.autolearn_ham_at < settings.autolearn_spam_at;
        if !ordered {
            return Err(bad(
                "autolearn_ham_at",
                settings.autolearn_ham_at,
                "a score below autolearn_spam_at",
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_gives_the_defaults() {
        let settings = ClassifierSection::default().validate().expect("valid");
        assert_eq!(settings, ClassifierSettings::default());
        assert_eq!(settings.min_spam, 200);
    }

    #[test]
    fn weights_of_the_wrong_sign_are_refused() {
        let section = ClassifierSection {
            ham_weight: Some(2.0),
            ..ClassifierSection::default()
        };
        let error = section.validate().expect_err("refused").to_string();
        assert!(error.contains("classifier.ham_weight"), "{error}");
    }
}
