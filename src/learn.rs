//! `moat learn spam|ham PATH...`: trains the statistical classifier on message files, adding
//! to the model in the data directory under its lock, so that a running `moat serve` and
//! other `moat learn` runs lose nothing. The named paths become message files in `inputs`.
//!
//! Exit codes: 66 (EX_NOINPUT) when no named input held a message, or after learning when a
//! named path did not exist; 65 (EX_DATAERR) for a damaged model file; 73 (EX_CANTCREAT) when
//! the model cannot be written.

use std::path::{Path, PathBuf};

use anyhow::Context;
use moat_gateway::classifier::{
    ClassifierError, FeatureScheme, Label, Learned, Lesson, MODEL_SCHEME, MessageDigest, Model,
    ModelStore,
};
use moat_gateway::content::{ContentScanner, ContentSettings};

use crate::config::{DEFAULT_DATA_DIR, FileConfig, Overrides};
use crate::inputs::{Skipped, as_received, expand};
use crate::{Failure, exit, fail};

/// Where the model is: shared by `moat learn`, `moat check` and `moat quarantine`.
#[derive(Debug, clap::Args)]
pub(crate) struct Location {
    /// The data directory (default: the configuration's `data_dir`, else ./moat-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The configuration file `moat serve` uses.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// What a message is learned as.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LabelArg {
    /// Unsolicited bulk mail.
    Spam,
    /// Wanted mail.
    Ham,
}

impl From<LabelArg> for Label {
    fn from(label: LabelArg) -> Label {
        match label {
            LabelArg::Spam => Label::Spam,
            LabelArg::Ham => Label::Ham,
        }
    }
}

/// `moat learn`.
pub(crate) fn run(label: LabelArg, location: Location, paths: Vec<PathBuf>) -> Result<(), Failure> {
    let label = Label::from(label);
    let data_dir = data_dir(&location)?;
    let mut inputs = expand(&paths)?;

    let scanner = ContentScanner::load(ContentSettings::default())
        .context("loading the message parser")
        .map_err(fail(exit::SOFTWARE))?;
    let (lessons, skipped) = read_lessons(&scanner, &inputs.files, label);
    inputs.skipped.add(&skipped);
    if lessons.is_empty() {
        return Err(fail(exit::NO_INPUT)(anyhow::anyhow!(
            "nothing to learn: no named input held a message (skipped {})",
            inputs.skipped
        )));
    }

    let store = ModelStore::new(&data_dir.join("classifier"));
    let (model, _, outcomes) = store.learn(&lessons).map_err(store_failure)?;
    let count = |wanted| outcomes.iter().filter(|o| **o == wanted).count();
    let (new, relearned, already) = (
        count(Learned::New),
        count(Learned::Relearned),
        count(Learned::Already),
    );
    println!(
        "learned {} {} {} ({new} new, {relearned} relearned, {already} already learned), \
         skipped {}, model now {} spam / {} ham",
        new + relearned,
        label.name(),
        messages(new + relearned),
        inputs.skipped,
        model.spam_messages,
        model.ham_messages
    );
    inputs.missing_failure()
}

/// "message" or "messages".
pub(crate) fn messages(count: usize) -> &'static str {
    if count == 1 { "message" } else { "messages" }
}

/// The exit code of a model that cannot be used or saved: a damaged file is a data error the
/// operator must repair (EX_DATAERR), anything else a file that cannot be written.
pub(crate) fn store_failure(error: ClassifierError) -> Failure {
    let code = match error {
        ClassifierError::Corrupt { .. } => exit::DATA_ERR,
        _ => exit::CANT_CREATE,
    };
    fail(code)(anyhow::Error::new(error).context("saving the classifier model"))
}

/// Learns one message into the model of `data_dir`, for `moat quarantine`: what the model
/// holds after, and whether the message was new, already learned or moved from the other
/// class.
///
/// # Errors
/// [`ClassifierError`] from the model store.
pub(crate) fn learn_message(
    data_dir: &Path,
    message: &[u8],
    label: Label,
) -> anyhow::Result<Result<(Model, Learned), ClassifierError>> {
    let scanner = ContentScanner::load(ContentSettings::default())?;
    let message = as_received(message);
    let lesson = Lesson {
        digest: MessageDigest::of(&message),
        features: scanner.features(&message, MODEL_SCHEME),
        label,
    };
    let store = ModelStore::new(&data_dir.join("classifier"));
    Ok(store
        .learn(std::slice::from_ref(&lesson))
        .map(|(model, _, outcomes)| (model, outcomes.first().copied().unwrap_or(Learned::Already))))
}

/// The lessons of every file that holds a message, on every core, in file order; and what
/// was skipped.
fn read_lessons(
    scanner: &ContentScanner,
    files: &[PathBuf],
    label: Label,
) -> (Vec<Lesson>, Skipped) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(workers).max(1);
    let results: Vec<(Vec<Lesson>, Skipped)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    let mut lessons = Vec::new();
                    let mut skipped = Skipped::default();
                    for path in part {
                        let Some(message) = skipped.read(path) else {
                            continue;
                        };
                        lessons.push(Lesson {
                            digest: MessageDigest::of(&message),
                            features: scanner.features(&message, MODEL_SCHEME),
                            label,
                        });
                    }
                    (lessons, skipped)
                });
                (part.len(), handle)
            })
            .collect();
        // A worker that panicked (a parser bug) counts its whole share as unreadable.
        handles
            .into_iter()
            .map(|(len, handle)| {
                handle.join().unwrap_or_else(|_| {
                    let skipped = Skipped {
                        unreadable: len,
                        ..Skipped::default()
                    };
                    (Vec::new(), skipped)
                })
            })
            .collect()
    });
    let mut lessons = Vec::new();
    let mut skipped = Skipped::default();
    for (part, part_skipped) in results {
        lessons.extend(part);
        skipped.add(&part_skipped);
    }
    (lessons, skipped)
}

/// The data directory: `--data-dir`, else the configuration's, else the default.
pub(crate) fn data_dir(location: &Location) -> Result<PathBuf, Failure> {
    if let Some(dir) = &location.data_dir {
        return Ok(dir.clone());
    }
    let Some(path) = &location.config else {
        return Ok(PathBuf::from(DEFAULT_DATA_DIR));
    };
    let file = FileConfig::load(path).map_err(|error| fail(exit::CONFIG)(error.into()))?;
    let settings = file
        .validate(Overrides::default())
        .map_err(|error| fail(exit::CONFIG)(error.into()))?;
    Ok(settings.data_dir)
}

/// `moat classifier-eval`: cross-validates the candidate models on the corpus's training half
/// and prints one line of figures per candidate.
pub(crate) fn evaluate(corpus: &Path, folds: usize) -> Result<(), Failure> {
    use moat_gateway::classifier::evaluate::{Method, cross_validate, training_half};

    if folds < 2 {
        return Err(fail(exit::USAGE)(anyhow::anyhow!(
            "--folds must be 2 or more"
        )));
    }
    let half = training_half(corpus)
        .with_context(|| format!("reading the corpus in {}", corpus.display()))
        .map_err(fail(exit::NO_INPUT))?;
    let scanner = ContentScanner::load(ContentSettings::default())
        .context("loading the message parser")
        .map_err(fail(exit::SOFTWARE))?;

    for scheme in [FeatureScheme::Words, FeatureScheme::Osb] {
        let started = std::time::Instant::now();
        let mut examples = Vec::with_capacity(half.len());
        for (label, path) in &half {
            let raw = std::fs::read(path)
                .with_context(|| format!("reading {}", path.display()))
                .map_err(fail(exit::NO_INPUT))?;
            examples.push((*label, scanner.features(&as_received(&raw), scheme)));
        }
        let extract_ms = started.elapsed().as_secs_f64() * 1_000.0 / half.len().max(1) as f64;
        let methods = [
            ("naive-bayes", Method::Bayes),
            ("logistic-0.1", Method::Logistic { rate: 0.1 }),
            ("logistic-0.5", Method::Logistic { rate: 0.5 }),
            ("logistic-2", Method::Logistic { rate: 2.0 }),
        ];
        for (name, method) in methods {
            let figures = cross_validate(&examples, folds, method, 0.002);
            println!(
                "{scheme:?}\t{name}\tauc={:.5}\trecall@fpr0.2%={:.4}\tthreshold={:.6}\tfp={}\t\
                 spam={}\tham={}\tstate_bytes={}\tparse+features_ms={extract_ms:.3}\tclassify_ms={:.4}",
                figures.auc,
                figures.recall,
                figures.threshold,
                figures.false_positives,
                figures.spam,
                figures.ham,
                figures.state_bytes,
                figures.classify_ms
            );
            for (threshold, recall, false_positives) in &figures.at_thresholds {
                println!("\t\tat p>{threshold}: recall={recall:.4} fp={false_positives}");
            }
        }
    }
    Ok(())
}
