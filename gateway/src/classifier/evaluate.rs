//! Cross-validation of the classifier on a labelled corpus: ROC AUC, spam recall at a false
//! positive rate, model size and speed, for each candidate model. `moat classifier-eval` runs
//! it on the training half of the SpamAssassin corpus; ARCHITECTURE.md reports the figures.
//!
//! The split is the one the detection benchmark uses: within each group of the corpus, files
//! sorted by the MD5 of their bytes (then name), even positions to the training half. Only that
//! half is ever given here; the test half is the benchmark's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use md5::{Digest, Md5};

use super::features::Features;
use super::model::{Label, Model};

/// A candidate model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Feature counts, Robinson's estimate and Fisher's combining (Moat's model).
    Bayes,
    /// Logistic regression trained online by stochastic gradient descent, one pass in a
    /// fixed shuffled order (corpus order would show it all the ham, then all the spam), each
    /// message's features weighted 1/sqrt(n).
    Logistic {
        /// The learning rate.
        rate: f32,
    },
}

/// What cross-validation measured for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Area under the ROC curve of the pooled held-out scores.
    pub auc: f64,
    /// Share of spam scored above the threshold that keeps the false positive rate at most
    /// the one asked for.
    pub recall: f64,
    /// That threshold.
    pub threshold: f64,
    /// Ham messages above the threshold.
    pub false_positives: usize,
    /// Spam and ham messages scored.
    pub spam: usize,
    /// Ham messages scored.
    pub ham: usize,
    /// Memory of the last fold's model state, in bytes.
    pub state_bytes: usize,
    /// Mean time to score one message from its features, in milliseconds.
    pub classify_ms: f64,
    /// Spam recall and false positives at fixed probability thresholds 0.9, 0.95 and 0.99.
    pub at_thresholds: Vec<(f64, f64, usize)>,
}

/// The training half of the corpus in `corpus` (`<group>/<id>.eml`): ham from `*ham*` groups,
/// spam from `spam*` groups, each group sorted by the MD5 of its files, even positions.
///
/// # Errors
/// The I/O error of a directory or file that cannot be read.
pub fn training_half(corpus: &Path) -> std::io::Result<Vec<(Label, PathBuf)>> {
    let mut groups: Vec<PathBuf> = std::fs::read_dir(corpus)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    groups.sort();
    let mut half = Vec::new();
    for group in groups {
        let name = group.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let label = if name.starts_with("spam") {
            Label::Spam
        } else if name.contains("ham") {
            Label::Ham
        } else {
            continue;
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&group)? {
            let path = entry?.path();
            if path.is_file() {
                let digest = Md5::digest(std::fs::read(&path)?);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                files.push((hex, path));
            }
        }
        files.sort();
        half.extend(files.into_iter().step_by(2).map(|(_, path)| (label, path)));
    }
    Ok(half)
}

/// Cross-validates `method` over `folds` folds of `examples` (message `i` is in fold
/// `i % folds`), pooling the held-out scores, at a false positive rate of at most `max_fpr`.
pub fn cross_validate(
    examples: &[(Label, Features)],
    folds: usize,
    method: Method,
    max_fpr: f64,
) -> Figures {
    let mut scored = Vec::with_capacity(examples.len());
    let mut state_bytes = 0;
    let mut classify_time = 0.0;
    for fold in 0..folds {
        let training = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds != fold)
            .map(|(_, e)| e);
        let held_out: Vec<&(Label, Features)> = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds == fold)
            .map(|(_, e)| e)
            .collect();
        let scorer = Scorer::train(method, training);
        state_bytes = scorer.state_bytes();

        let started = Instant::now();
        for (label, features) in &held_out {
            scored.push((scorer.score(features), *label == Label::Spam));
        }
        classify_time += started.elapsed().as_secs_f64();
    }

    let (recall, threshold, false_positives) = recall_at_fpr(&scored, max_fpr);
    let spam = scored.iter().filter(|(_, spam)| *spam).count();
    Figures {
        auc: roc_auc(&scored),
        recall,
        threshold,
        false_positives,
        spam,
        ham: scored.len() - spam,
        state_bytes,
        classify_ms: classify_time * 1_000.0 / scored.len().max(1) as f64,
        at_thresholds: [0.9, 0.95, 0.99]
            .iter()
            .map(|t| {
                let caught = scored.iter().filter(|s| s.1 && s.0 > *t).count();
                let false_positives = scored.iter().filter(|s| !s.1 && s.0 > *t).count();
                (*t, caught as f64 / spam.max(1) as f64, false_positives)
            })
            .collect(),
    }
}

/// A trained candidate.
enum Scorer {
    Bayes(Model),
    Logistic(HashMap<u32, f32>, f32),
}

impl Scorer {
    fn train<'e>(method: Method, examples: impl Iterator<Item = &'e (Label, Features)>) -> Scorer {
        match method {
            Method::Bayes => {
                let mut model = Model::default();
                for (label, features) in examples {
                    model.learn(features, *label);
                }
                Scorer::Bayes(model)
            }
            Method::Logistic { rate } => {
                let mut weights: HashMap<u32, f32> = HashMap::new();
                let mut bias = 0.0f32;
                let mut order: Vec<&(Label, Features)> = examples.collect();
                shuffle(&mut order);
                for (label, features) in order {
                    let x = 1.0 / (features.hashes().len().max(1) as f32).sqrt();
                    let margin = bias
                        + features
                            .hashes()
                            .iter()
                            .map(|h| weights.get(h).copied().unwrap_or(0.0) * x)
                            .sum::<f32>();
                    let target = if *label == Label::Spam { 1.0 } else { 0.0 };
                    let gradient = target - sigmoid(margin);
                    bias += rate * gradient;
                    for hash in features.hashes() {
                        *weights.entry(*hash).or_default() += rate * gradient * x;
                    }
                }
                Scorer::Logistic(weights, bias)
            }
        }
    }

    fn score(&self, features: &Features) -> f64 {
        match self {
            Scorer::Bayes(model) => model.probability(features),
            Scorer::Logistic(weights, bias) => {
                let x = 1.0 / (features.hashes().len().max(1) as f32).sqrt();
                let margin: f32 = features
                    .hashes()
                    .iter()
                    .filter_map(|h| weights.get(h))
                    .map(|w| w * x)
                    .sum();
                f64::from(sigmoid(bias + margin))
            }
        }
    }

    fn state_bytes(&self) -> usize {
        match self {
            Scorer::Bayes(model) => model.state_bytes(),
            Scorer::Logistic(weights, _) => weights.capacity() * (4 + 4 + 1),
        }
    }
}

/// Fisher-Yates with a fixed linear congruential generator: the same order on every run.
fn shuffle<T>(items: &mut [T]) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (state >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Area under the ROC curve: the chance that a random spam scores above a random ham, ties
/// counting half.
pub fn roc_auc(scored: &[(f64, bool)]) -> f64 {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut ham_below, mut pairs_won) = (0.0, 0.0);
    let mut index = 0;
    while index < sorted.len() {
        // A run of equal scores: its spam beat the ham below and tie with the ham inside.
        let end = index + sorted[index..].partition_point(|s| s.0 == sorted[index].0);
        let spam = sorted[index..end].iter().filter(|s| s.1).count() as f64;
        let ham = (end - index) as f64 - spam;
        pairs_won += spam * (ham_below + ham / 2.0);
        ham_below += ham;
        index = end;
    }
    let spam_total = scored.iter().filter(|s| s.1).count() as f64;
    pairs_won / (spam_total * ham_below).max(1.0)
}

/// The share of spam scored strictly above the lowest threshold that leaves at most
/// `max_fpr` of the ham above it, that threshold, and the ham above it.
pub fn recall_at_fpr(scored: &[(f64, bool)], max_fpr: f64) -> (f64, f64, usize) {
    let mut ham: Vec<f64> = scored.iter().filter(|s| !s.1).map(|s| s.0).collect();
    ham.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_fpr * ham.len() as f64).floor() as usize;
    let threshold = ham.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    let spam: Vec<f64> = scored.iter().filter(|s| s.1).map(|s| s.0).collect();
    let caught = spam.iter().filter(|s| **s > threshold).count();
    let false_positives = ham.iter().filter(|h| **h > threshold).count();
    (
        caught as f64 / spam.len().max(1) as f64,
        threshold,
        false_positives,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_one_for_a_perfect_ranking_and_half_for_ties() {
        let perfect = [(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        assert_eq!(roc_auc(&perfect), 1.0);
        let ties = [(0.5, false), (0.5, true)];
        assert_eq!(roc_auc(&ties), 0.5);
    }

    #[test]
    fn recall_counts_only_spam_above_the_allowed_ham() {
        let mut scored: Vec<(f64, bool)> = (0..1_000)
            .map(|i| (f64::from(i) / 2_000.0, false))
            .collect();
        scored.push((0.9999, false));
        scored.extend([(1.0, true), (0.99, true), (0.1, true)]);
        // 1,001 ham at 0.2%: 2 may be above; the third highest ham (0.499) is the threshold.
        let (recall, threshold, false_positives) = recall_at_fpr(&scored, 0.002);
        assert_eq!(false_positives, 2);
        assert!((threshold - 0.499).abs() < 1e-9, "{threshold}");
        assert!((recall - 2.0 / 3.0).abs() < 1e-9);
    }
}
