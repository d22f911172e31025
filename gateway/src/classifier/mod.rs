//! The statistical spam classifier: naive Bayes over hashed word features, combined by
//! Fisher's method, learning incrementally into a model file every process and node can share.
//!
//! A tour:
//!
//! - `tokenizer` turns decoded text into words; `features` turns a message's [`Document`]
//!   (decoded headers with their names, body text with HTML stripped, URL domains, structure)
//!   into sorted 32-bit feature hashes, [`Features`].
//! - `model` keeps, per feature, how many spam and ham messages had it; [`Model::probability`]
//!   gives a message's probability of spam.
//! - `store` reads and writes `data_dir/classifier/model.bin` (versioned, checksummed, written
//!   atomically under a lock, merged by adding counts), and with it `seen.bin`, the record of
//!   the messages learned (`seen`, keyed by [`MessageDigest`]), so that a message learned
//!   twice counts once and one learned as the other class moves.
//! - `autolearn` decides which of its own verdicts `moat serve` may learn from.
//! - [`Classifier`] is what `moat serve` shares between sessions: the model in memory, what it
//!   auto-learned since the last flush, and [`Classifier::sync`], run every few seconds, which
//!   flushes that and picks up a model file changed by `moat learn` or copied from another node.
//! - `evaluate` cross-validates feature schemes and models on a labelled corpus (`moat
//!   classifier-eval`), the measurement behind the choice in ARCHITECTURE.md.

mod autolearn;
mod error;
pub mod evaluate;
mod features;
mod model;
mod seen;
mod settings;
mod store;
mod tokenizer;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

pub use autolearn::{AUTOLEARN_MIN_SIDE_POINTS, AutolearnEvidence, autolearn_label};
pub use error::ClassifierError;
pub use features::{Document, FeatureScheme, Features, extract, hash};
pub use model::{Counts, Label, Model, fisher_combine};
pub use seen::{MessageDigest, SEEN_FILE, SEEN_LIMIT};
pub use settings::{
    ClassifierConfigError, ClassifierSection, ClassifierSettings, DEFAULT_AUTOLEARN_HAM_AT,
    DEFAULT_AUTOLEARN_SPAM_AT, DEFAULT_HAM_WEIGHT, DEFAULT_MIN_LEARNED, DEFAULT_SPAM_WEIGHT,
};
pub use store::{FORMAT_VERSION, FileStamp, Learned, Lesson, MODEL_FILE, ModelStore};
pub use tokenizer::words;

/// How often `moat serve` flushes what it auto-learned and looks for a changed model file:
/// "within a few seconds" for a model copied from another node, and rarely enough that the
/// stat call costs nothing.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// The features Moat's model is trained and run on: words alone. Cross-validation on the
/// corpus's training half (ARCHITECTURE.md) found OSB bigrams no better at the thresholds the
/// verdict uses, for 16 times the memory and 20 times the time per message.
pub const MODEL_SCHEME: FeatureScheme = FeatureScheme::Words;

/// The name of the classifier's contribution in the verdict.
pub const CHECK_NAME: &str = "bayes";

/// What the classifier says about one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The probability that it is spam.
    Probability(f64),
    /// The model has not learned enough of each class yet.
    Untrained {
        /// Spam messages learned.
        spam: u64,
        /// Ham messages learned.
        ham: u64,
    },
    /// The model file could not be used; rules alone decide.
    Unavailable,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Probability(p) => write!(f, "{p:.4}"),
            Outcome::Untrained { spam, ham } => write!(f, "untrained({spam}/{ham})"),
            Outcome::Unavailable => f.write_str("unavailable"),
        }
    }
}

/// The classifier's verdict on one message, with its features for learning it afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The outcome.
    pub outcome: Outcome,
    /// Its score contribution: scaled from the probability, 0 when there is none.
    pub score: f32,
    /// The message's features.
    pub features: Features,
}

impl Classification {
    /// The contribution's check name: `bayes:0.9973`, `bayes:untrained(12/40)`,
    /// `bayes:unavailable`, so that the log line and the headers show the probability.
    pub fn check(&self) -> String {
        format!("{CHECK_NAME}:{}", self.outcome)
    }

    /// The probability, when there is one.
    pub fn probability(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Probability(p) => Some(p),
            _ => None,
        }
    }
}

/// The model in memory and its state.
struct Live {
    model: Model,
    /// Why the model file cannot be used, while it cannot.
    broken: Option<String>,
    /// The file version the model was read from or written as.
    stamp: Option<FileStamp>,
}

/// The classifier `moat serve` shares between its sessions.
pub struct Classifier {
    settings: ClassifierSettings,
    store: ModelStore,
    live: RwLock<Live>,
    /// Learned here and not yet written to the file.
    pending: Mutex<Vec<Lesson>>,
}

impl Classifier {
    /// Opens the model in `dir` (`data_dir/classifier`). Never fails: a model file that cannot
    /// be used is logged at error level with what to do, and the classifier says
    /// [`Outcome::Unavailable`] until a good file appears, so Moat runs on with rules alone.
    pub fn open(dir: &Path, settings: ClassifierSettings) -> Classifier {
        let store = ModelStore::new(dir);
        let live = match store.load() {
            Ok((model, stamp)) => {
                tracing::info!(
                    file = %store.path().display(),
                    spam = model.spam_messages,
                    ham = model.ham_messages,
                    features = model.counts.len(),
                    state_bytes = model.state_bytes(),
                    "classifier model loaded"
                );
                Live {
                    model,
                    broken: None,
                    stamp,
                }
            }
            Err(error) => {
                tracing::error!(%error, "classifier off: rules alone decide");
                Live {
                    model: Model::default(),
                    broken: Some(error.to_string()),
                    stamp: store.stamp(),
                }
            }
        };
        Classifier {
            settings,
            store,
            live: RwLock::new(live),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ClassifierSettings {
        &self.settings
    }

    /// Classifies a message by its features.
    pub fn classify(&self, features: Features) -> Classification {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        let outcome = if live.broken.is_some() {
            Outcome::Unavailable
        } else if live.model.spam_messages < self.settings.min_spam
            || live.model.ham_messages < self.settings.min_ham
        {
            Outcome::Untrained {
                spam: live.model.spam_messages,
                ham: live.model.ham_messages,
            }
        } else {
            Outcome::Probability(live.model.probability(&features))
        };
        drop(live);
        Classification {
            outcome,
            score: self.score(outcome),
            features,
        }
    }

    /// The score of an outcome: linear from 0 at probability 0.5 to the spam weight at 1 and
    /// the ham weight at 0.
    pub fn score(&self, outcome: Outcome) -> f32 {
        let Outcome::Probability(p) = outcome else {
            return 0.0;
        };
        let strength = ((p - 0.5).abs() * 2.0) as f32;
        if p >= 0.5 {
            self.settings.spam_weight * strength
        } else {
            self.settings.ham_weight * strength
        }
    }

    /// Learns a message in memory at once; [`Classifier::sync`] writes it to the file and its
    /// digest to the record of learned messages. Nothing is learned while the model file is
    /// unusable, so that it is never overwritten.
    ///
    /// The model in memory counts the message even if the record says it was learned before;
    /// the next flush replaces it with the file's model, in which the record was obeyed.
    pub fn learn(&self, lesson: Lesson) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if live.broken.is_some() {
            return;
        }
        live.model.learn(&lesson.features, lesson.label);
        drop(live);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push(lesson);
    }

    /// Writes what was learned here since the last call into the file (adding it to what other
    /// writers put there), or, with nothing to write, reloads the file if another process or
    /// node replaced it. Blocking: run it on a blocking thread.
    pub fn sync(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if !pending.is_empty() {
            self.flush(pending);
            return;
        }
        let stamp = self.store.stamp();
        let known = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stamp;
        if stamp != known {
            self.reload(stamp);
        }
    }

    /// Learns `pending` into the file and takes the result as the live model.
    fn flush(&self, pending: Vec<Lesson>) {
        match self.store.learn(&pending) {
            Ok((model, stamp, outcomes)) => {
                let already = outcomes.iter().filter(|o| **o == Learned::Already).count();
                tracing::debug!(
                    messages = pending.len(),
                    already_learned = already,
                    "classifier learning saved"
                );
                self.replace(model, stamp);
            }
            Err(error) => {
                // Kept for the next try: a full disk or a damaged file may be fixed meanwhile.
                // At most SEEN_LIMIT lessons, so that a long outage cannot grow memory
                // without bound; past that the newest are dropped unlearned.
                tracing::error!(%error, "classifier learning not saved; kept in memory");
                let mut kept = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let newer = std::mem::replace(&mut *kept, pending);
                kept.extend(newer);
                kept.truncate(SEEN_LIMIT);
            }
        }
    }

    /// Reads the file again after it changed on disk.
    fn reload(&self, stamp: Option<FileStamp>) {
        match self.store.load() {
            Ok((model, stamp)) => {
                tracing::info!(
                    file = %self.store.path().display(),
                    spam = model.spam_messages,
                    ham = model.ham_messages,
                    "classifier model reloaded"
                );
                self.replace(model, stamp);
            }
            Err(error) => {
                let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
                tracing::error!(%error, "classifier off: rules alone decide");
                live.broken = Some(error.to_string());
                live.stamp = stamp;
            }
        }
    }

    fn replace(&self, model: Model, stamp: Option<FileStamp>) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        *live = Live {
            model,
            broken: None,
            stamp,
        };
    }

    /// Runs [`Classifier::sync`] every [`SYNC_INTERVAL`] on a blocking thread, for as long as
    /// the returned future is polled (`moat serve` spawns it).
    pub async fn run_sync(self: Arc<Self>) {
        let mut interval = tokio::time::interval(SYNC_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let classifier = Arc::clone(&self);
            if let Err(error) = tokio::task::spawn_blocking(move || classifier.sync()).await {
                tracing::error!(%error, "classifier sync failed");
            }
        }
    }

    /// What the model holds now: spam and ham learned, and whether it is usable.
    pub fn learned(&self) -> (u64, u64, bool) {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        (
            live.model.spam_messages,
            live.model.ham_messages,
            live.broken.is_none(),
        )
    }
}
