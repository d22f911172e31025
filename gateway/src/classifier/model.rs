//! The model: per-feature counts of spam and ham messages, and the probability of spam they
//! give a message by Robinson's per-feature estimate and Fisher's chi-square combining.
//!
//! A count model learns incrementally (adding one message adds one to each of its features)
//! and merges by adding: two nodes' or two processes' learning combine without loss, which an
//! online logistic regression's weights would not (ARCHITECTURE.md compares the two).

use std::collections::HashMap;

use super::features::Features;

/// Robinson's strength of the prior (SpamBayes' `unknown_word_strength`): how many messages'
/// worth of evidence a feature needs before its own counts outweigh the neutral 0.5.
const PRIOR_STRENGTH: f64 = 0.45;

/// The prior probability of a feature seen in neither class.
const PRIOR_PROBABILITY: f64 = 0.5;

/// Features closer than this to 0.5 say too little to count (SpamBayes'
/// `minimum_prob_strength`).
const MIN_STRENGTH: f64 = 0.1;

/// Most features combined per message, the strongest first (SpamBayes'
/// `max_discriminators`): enough for a verdict, few enough that a long message does not
/// drown its strongest clues in weak ones.
const MAX_CLUES: usize = 150;

/// Spam or ham.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Unsolicited bulk mail.
    Spam,
    /// Wanted mail.
    Ham,
}

impl Label {
    /// `spam` or `ham`.
    pub fn name(self) -> &'static str {
        match self {
            Label::Spam => "spam",
            Label::Ham => "ham",
        }
    }
}

/// How many messages of each class held one feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Spam messages with the feature.
    pub spam: u32,
    /// Ham messages with the feature.
    pub ham: u32,
}

/// The counts of every feature seen, and of the messages learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Spam messages learned.
    pub spam_messages: u64,
    /// Ham messages learned.
    pub ham_messages: u64,
    /// Counts by feature hash.
    pub counts: HashMap<u32, Counts>,
}

impl Model {
    /// Learns one message of class `label`.
    pub fn learn(&mut self, features: &Features, label: Label) {
        match label {
            Label::Spam => self.spam_messages += 1,
            Label::Ham => self.ham_messages += 1,
        }
        for hash in features.hashes() {
            let counts = self.counts.entry(*hash).or_default();
            match label {
                Label::Spam => counts.spam = counts.spam.saturating_add(1),
                Label::Ham => counts.ham = counts.ham.saturating_add(1),
            }
        }
    }

    /// Takes back one message learned as `label`: how a message learned as the wrong class is
    /// moved. Counts stop at zero, so that a record older than the model (a model deleted and
    /// retrained) cannot wrap them round.
    pub fn unlearn(&mut self, features: &Features, label: Label) {
        match label {
            Label::Spam => self.spam_messages = self.spam_messages.saturating_sub(1),
            Label::Ham => self.ham_messages = self.ham_messages.saturating_sub(1),
        }
        for hash in features.hashes() {
            let Some(counts) = self.counts.get_mut(hash) else {
                continue;
            };
            match label {
                Label::Spam => counts.spam = counts.spam.saturating_sub(1),
                Label::Ham => counts.ham = counts.ham.saturating_sub(1),
            }
            if counts.spam == 0 && counts.ham == 0 {
                self.counts.remove(hash);
            }
        }
    }

    /// Adds another model's counts: how learning by several processes or nodes is merged.
    pub fn merge(&mut self, delta: &Model) {
        self.spam_messages += delta.spam_messages;
        self.ham_messages += delta.ham_messages;
        for (hash, add) in &delta.counts {
            let counts = self.counts.entry(*hash).or_default();
            counts.spam = counts.spam.saturating_add(add.spam);
            counts.ham = counts.ham.saturating_add(add.ham);
        }
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.spam_messages == 0 && self.ham_messages == 0
    }

    /// Memory the counts take, in bytes: each entry's key and counts plus the hash table's
    /// control byte, over its allocated capacity.
    pub fn state_bytes(&self) -> usize {
        self.counts.capacity() * (std::mem::size_of::<(u32, Counts)>() + 1)
    }

    /// The probability that a message with `features` is spam, from 0 to 1; 0.5 when the model
    /// knows none of them or has not learned both classes.
    pub fn probability(&self, features: &Features) -> f64 {
        if self.spam_messages == 0 || self.ham_messages == 0 {
            return PRIOR_PROBABILITY;
        }
        let mut clues: Vec<f64> = features
            .hashes()
            .iter()
            .filter_map(|hash| self.counts.get(hash))
            .map(|counts| self.feature_probability(*counts))
            .filter(|p| (p - 0.5).abs() >= MIN_STRENGTH)
            .collect();
        if clues.len() > MAX_CLUES {
            clues.sort_unstable_by(|a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
            clues.truncate(MAX_CLUES);
        }
        fisher_combine(&clues)
    }

    /// Robinson's f(w): the feature's spam ratio, pulled towards the prior by how little it
    /// was seen. Ratios, not counts, so that unequal numbers of spam and ham learned do not
    /// bias every feature.
    fn feature_probability(&self, counts: Counts) -> f64 {
        let spam_ratio = f64::from(counts.spam) / self.spam_messages as f64;
        let ham_ratio = f64::from(counts.ham) / self.ham_messages as f64;
        let seen = f64::from(counts.spam) + f64::from(counts.ham);
        let p = if spam_ratio + ham_ratio > 0.0 {
            spam_ratio / (spam_ratio + ham_ratio)
        } else {
            PRIOR_PROBABILITY
        };
        (PRIOR_STRENGTH * PRIOR_PROBABILITY + seen * p) / (PRIOR_STRENGTH + seen)
    }
}

/// Fisher's method as SpamBayes applies it: how unlikely the clues are as a random draw of
/// hammy features (S) and of spammy ones (H), combined to `(1 + S - H) / 2`. Unlike a product
/// of probabilities, it says 0.5 for a message with strong clues both ways: "unsure".
pub fn fisher_combine(clues: &[f64]) -> f64 {
    if clues.is_empty() {
        return PRIOR_PROBABILITY;
    }
    let degrees = 2 * clues.len();
    let ln_spam: f64 = clues.iter().map(|p| p.ln()).sum();
    let ln_ham: f64 = clues.iter().map(|p| (1.0 - p).ln()).sum();
    let spamminess = 1.0 - chi2_upper_tail(-2.0 * ln_ham, degrees);
    let hamminess = 1.0 - chi2_upper_tail(-2.0 * ln_spam, degrees);
    ((1.0 + spamminess - hamminess) / 2.0).clamp(0.0, 1.0)
}

/// The upper tail of the chi-square distribution with an even number of `degrees` of freedom,
/// in closed form.
fn chi2_upper_tail(chi2: f64, degrees: usize) -> f64 {
    let half = chi2 / 2.0;
    let mut term = (-half).exp();
    let mut sum = term;
    for i in 1..degrees / 2 {
        term *= half / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::features::hash;

    fn features(words: &[&str]) -> Features {
        Features::from_hashes(words.iter().map(|w| hash(&["b", w])).collect())
    }

    fn trained() -> Model {
        let mut model = Model::default();
        for _ in 0..20 {
            model.learn(&features(&["viagra", "cheap", "offer", "the"]), Label::Spam);
            model.learn(
                &features(&["meeting", "agenda", "minutes", "the"]),
                Label::Ham,
            );
        }
        model
    }

    #[test]
    fn learned_words_give_the_expected_direction() {
        let model = trained();
        assert!(model.probability(&features(&["cheap", "viagra"])) > 0.95);
        assert!(model.probability(&features(&["agenda", "meeting"])) < 0.05);
    }

    #[test]
    fn unknown_or_neutral_words_give_one_half() {
        let model = trained();
        assert_eq!(model.probability(&features(&["unseen"])), 0.5);
        assert_eq!(model.probability(&features(&["the"])), 0.5);
        assert_eq!(Model::default().probability(&features(&["viagra"])), 0.5);
    }

    #[test]
    fn strong_clues_both_ways_say_unsure() {
        let p = trained().probability(&features(&["viagra", "cheap", "meeting", "agenda"]));
        assert!((p - 0.5).abs() < 0.1, "{p}");
    }

    #[test]
    fn merging_two_halves_equals_learning_everything() {
        let mut whole = Model::default();
        let mut first = Model::default();
        let mut second = Model::default();
        for (index, word) in ["a1", "b2", "c3", "d4"].iter().enumerate() {
            let label = if index % 2 == 0 {
                Label::Spam
            } else {
                Label::Ham
            };
            whole.learn(&features(&[word, "x9"]), label);
            let half = if index < 2 { &mut first } else { &mut second };
            half.learn(&features(&[word, "x9"]), label);
        }
        first.merge(&second);
        assert_eq!(first, whole);
        assert_eq!(
            whole.counts[&hash(&["b", "x9"])],
            Counts { spam: 2, ham: 2 }
        );
    }

    #[test]
    fn chi_square_tail_matches_known_values() {
        // P(chi2 with 2 degrees > 2) = e^-1; with 4 degrees, e^-1 * 2.
        assert!((chi2_upper_tail(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        assert!((chi2_upper_tail(2.0, 4) - 2.0 * (-1.0f64).exp()).abs() < 1e-12);
    }
}
