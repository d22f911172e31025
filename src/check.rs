//! `moat check PATH...`: the content verdict `moat serve` would give each message at the end of
//! DATA (MIME analysis, rules, built-in signatures, attachment policy, classifier), without the
//! network checks, one tab-separated line per message.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use moat_gateway::Evidence;
use moat_gateway::classifier::Classifier;
use moat_gateway::content::{ContentScanner, ContentSettings};

use crate::config::{FileConfig, Overrides};
use crate::learn::{Location, as_received, expand};
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
    let files = expand(&paths)?;

    // Without [content] the checks run with their defaults: `moat check` is asked for them.
    let mut content = settings.content.unwrap_or_else(ContentSettings::default);
    if no_network {
        content.clamd = None;
    }
    let classifier = settings.classifier.enabled.then(|| {
        let dir = settings.data_dir.join("classifier");
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
    for path in files {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "unreadable message skipped");
                continue;
            }
        };
        let (report, classification) = runtime.block_on(scanner.examine(&as_received(&raw)));

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
            .map(|c| format!("{}={:.1}", c.check, c.score))
            .collect::<Vec<_>>()
            .join(",");
        writeln!(
            out,
            "{}\t{:.1}\t{probability}\t{}\t{contributions}",
            path.display(),
            verdict.score,
            verdict.action.name()
        )
        .context("writing to stdout")
        .map_err(fail(exit::SOFTWARE))?;
    }
    out.flush()
        .context("writing to stdout")
        .map_err(fail(exit::SOFTWARE))?;
    Ok(())
}
