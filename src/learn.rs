//! `moat learn spam|ham PATH...`: trains the statistical classifier on message files, adding
//! to the model in the data directory under its lock, so that a running `moat serve` and
//! other `moat learn` runs lose nothing.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use moat_gateway::classifier::{FeatureScheme, Label, MODEL_SCHEME, Model, ModelStore};
use moat_gateway::content::{ContentScanner, ContentSettings};

use crate::config::{DEFAULT_DATA_DIR, FileConfig, Overrides};
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
    let files = expand(&paths)?;

    let scanner = ContentScanner::load(ContentSettings::default())
        .context("loading the message parser")
        .map_err(fail(exit::SOFTWARE))?;
    let (delta, unreadable) = learn_files(&scanner, &files, label);

    let store = ModelStore::new(&data_dir.join("classifier"));
    let (model, _) = store
        .update(&delta)
        .context("saving the classifier model")
        .map_err(fail(exit::CANT_CREATE))?;
    let learned = match label {
        Label::Spam => delta.spam_messages,
        Label::Ham => delta.ham_messages,
    };
    println!(
        "learned {learned} {} messages ({unreadable} unreadable skipped), model now {} spam / {} ham",
        label.name(),
        model.spam_messages,
        model.ham_messages
    );
    Ok(())
}

/// Learns one message into the model of `data_dir`, for `moat quarantine`.
pub(crate) fn learn_message(
    data_dir: &Path,
    message: &[u8],
    label: Label,
) -> anyhow::Result<Model> {
    let scanner = ContentScanner::load(ContentSettings::default())?;
    let mut delta = Model::default();
    delta.learn(
        &scanner.features(&as_received(message), MODEL_SCHEME),
        label,
    );
    let (model, _) = ModelStore::new(&data_dir.join("classifier")).update(&delta)?;
    Ok(model)
}

/// The features of every file, on every core; the counts of those that could be read, and how
/// many could not.
fn learn_files(scanner: &ContentScanner, files: &[PathBuf], label: Label) -> (Model, usize) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(workers).max(1);
    let results: Vec<(Model, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    let mut model = Model::default();
                    let mut unreadable = 0;
                    for path in part {
                        match std::fs::read(path) {
                            Ok(raw) => {
                                let message = as_received(&raw);
                                model.learn(&scanner.features(&message, MODEL_SCHEME), label);
                            }
                            Err(error) => {
                                tracing::warn!(path = %path.display(), %error, "unreadable message skipped");
                                unreadable += 1;
                            }
                        }
                    }
                    (model, unreadable)
                });
                (part.len(), handle)
            })
            .collect();
        // A worker that panicked (a parser bug) counts its whole share as unreadable.
        handles
            .into_iter()
            .map(|(len, handle)| handle.join().unwrap_or_else(|_| (Model::default(), len)))
            .collect()
    });
    let mut delta = Model::default();
    let mut unreadable = 0;
    for (model, skipped) in results {
        delta.merge(&model);
        unreadable += skipped;
    }
    (delta, unreadable)
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

/// The message files named by `paths`: files as they are, directories walked (a Maildir's
/// `cur/` and `new/` only, anything else recursively), `-` for paths read from stdin.
///
/// # Errors
/// Exit 66 for a path that does not exist, before anything is learned.
pub(crate) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut named = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line
                    .context("reading paths from stdin")
                    .map_err(fail(exit::NO_INPUT))?;
                if !line.trim().is_empty() {
                    named.push(PathBuf::from(line.trim_end_matches(['\r', '\n'])));
                }
            }
        } else {
            named.push(path.clone());
        }
    }

    let mut files = Vec::new();
    for path in named {
        if !path.exists() {
            return Err(fail(exit::NO_INPUT)(anyhow::anyhow!(
                "{} does not exist: name message files, directories of them, or a Maildir",
                path.display()
            )));
        }
        if path.is_dir() {
            let maildir = path.join("cur").is_dir() || path.join("new").is_dir();
            let roots = if maildir {
                vec![path.join("cur"), path.join("new")]
            } else {
                vec![path]
            };
            for root in roots {
                walk(&root, &mut files);
            }
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Every regular file under `dir`, sorted, recursively; unreadable directories are skipped
/// with a warning.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            if dir.exists() {
                tracing::warn!(dir = %dir.display(), %error, "directory skipped");
            }
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, files);
        } else if path.is_file() {
            files.push(path);
        }
    }
}

/// A message file as the gateway would have received it: an mbox `From ` envelope line
/// dropped (it is no header field), and bare LF line ends made CRLF, as SMTP carries them.
pub(crate) fn as_received(raw: &[u8]) -> Vec<u8> {
    let raw = match raw.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&raw[raw.len()..], |end| &rest[end + 1..]),
        None => raw,
    };
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (index, &byte) in raw.iter().enumerate() {
        if byte == b'\n' && (index == 0 || raw[index - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_line_is_dropped_and_line_ends_become_crlf() {
        assert_eq!(
            as_received(b"From a@example.com  Thu Aug 22 2002\nSubject: x\n\nbody\r\n"),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(as_received(b"Subject: y\n"), b"Subject: y\r\n");
    }
}
