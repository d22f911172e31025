//! `moat check PATH...`: the content verdict `moat serve` would give each message at the end of
//! DATA (MIME analysis, rules, built-in signatures, attachment policy, classifier), without the
//! network checks, one tab-separated line per message.
//!
//! Every named input that holds a message is checked; one that does not exist, cannot be
//! read, is not a regular file or holds no message is reported on stderr and skipped. Exit 66
//! (EX_NOINPUT) at the end when a named path did not exist or nothing could be checked.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use moat_gateway::Evidence;
use moat_gateway::classifier::{Classifier, MODEL_FILE};
use moat_gateway::content::{ContentScanner, ContentSettings};

use crate::config::{FileConfig, Overrides};
use crate::inputs::expand;
use crate::learn::Location;
use crate::{Failure, exit, fail};

/// `moat check`.
pub(crate) fn run(
    location: Location,
    no_network: bool,
    paths: Vec<PathBuf>,
) -> Result<(), Failure> {
    let file = match &location.config {
        Some(path) => FileConfig::load(path).map_err(|error| fail(exit::CONFIG)(error.into()))?,
        None => FileConfig::default(),
    };
    let settings = file
        .validate(Overrides {
            data_dir: location.data_dir.clone(),
            ..Overrides::default()
        })
        .map_err(|error| fail(exit::CONFIG)(error.into()))?;
    let mut inputs = expand(&paths)?;

    // Without [content] the checks run with their defaults: `moat check` is asked for them.
    let mut content = settings.content.unwrap_or_else(ContentSettings::default);
    if no_network {
        content.clamd = None;
    }
    let classifier = settings.classifier.enabled.then(|| {
        let dir = settings.data_dir.join("classifier");
        // A mistyped --data-dir would otherwise pass for a model not trained yet.
        if !dir.join(MODEL_FILE).exists() {
            eprintln!(
                "moat: warning: no classifier model at {}: the classifier says untrained; \
                 check --data-dir, or train it with `moat learn`",
                dir.join(MODEL_FILE).display()
            );
        }
        Arc::new(Classifier::open(&dir, settings.classifier.clone()))
    });
    let scanner = ContentScanner::load_with_classifier(content, classifier)
        .context("loading content rules and signatures")
        .map_err(fail(exit::CONFIG))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(fail(exit::SOFTWARE))?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut checked = 0;
    for path in &inputs.files {
        let Some(message) = inputs.skipped.read(path) else {
            continue;
        };
        checked += 1;
        let (report, classification) = runtime.block_on(scanner.examine(&message));

        let mut evidence = Evidence::default();
        evidence.add_content(&report);
        if let Some(classification) = &classification {
            evidence.add_classification(classification);
        }
        let verdict = settings.verdict.judge(&evidence, &[]);

        let probability = classification
            .as_ref()
            .and_then(|c| c.probability())
            .map_or("-".to_owned(), |p| format!("{p:.4}"));
        let contributions = verdict
            .contributions
            .iter()
            .map(|c| format!("{}={}", c.check, score_text(c.score)))
            .collect::<Vec<_>>()
            .join(",");
        writeln!(
            out,
            "{}\t{}\t{probability}\t{}\t{contributions}",
            path.display(),
            score_text(verdict.score),
            verdict.action.name()
        )
        .context("writing to stdout")
        .map_err(fail(exit::SOFTWARE))?;
    }
    out.flush()
        .context("writing to stdout")
        .map_err(fail(exit::SOFTWARE))?;

    if checked == 0 {
        return Err(fail(exit::NO_INPUT)(anyhow::anyhow!(
            "nothing to check: no named input held a message (skipped {})",
            inputs.skipped
        )));
    }
    inputs.missing_failure()
}

/// A score with one decimal, never `-0.0`: a small negative sum rounds to zero, and a minus
/// sign on it reads as a sign of good mail that is not there.
fn score_text(score: f32) -> String {
    let text = format!("{score:.1}");
    if text == "-0.0" {
        "0.0".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_zero_score_prints_as_zero() {
        assert_eq!(score_text(-0.0), "0.0");
        assert_eq!(score_text(-0.04), "0.0");
        assert_eq!(score_text(-0.06), "-0.1");
        assert_eq!(score_text(12.25), "12.2");
    }
}
