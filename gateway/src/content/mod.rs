//! Content checks at the end of DATA: MIME analysis, weighted rules, and two anti-virus
//! layers, summed up in one [`ContentReport`] for the verdict.
//!
//! A tour:
//!
//! - `[content]` is read into [`ContentSection`] and validated into [`ContentSettings`]
//!   (`settings`); [`ContentScanner::load`] then reads the rules and signature files once.
//! - [`ContentScanner::scan`] runs two things at once for each message:
//!   - on a blocking thread, `mime` parses the message with mail-parser and takes it apart:
//!     text, HTML stripped to text (`mail-parser`'s own stripper), attachments with their
//!     declared and detected type (`magic`), ZIP archives listed and unpacked (`archive`),
//!     nested messages, URLs and their hosts (`urls`). Then, in parallel with rayon, the
//!     rules (`rules`, one Aho-Corasick pass, GTUBE built in) and layer 2, the built-in
//!     scanner (`signatures`: ClamAV `.hdb`/`.hsb`/`.ndb` over every part, unpacked file and
//!     the raw message, parts in parallel); the attachment policy (`policy`) is applied
//!     while taking the message apart;
//!   - layer 1, clamd over INSTREAM with a time limit (`clamd`).
//! - With a [`Classifier`] given to [`ContentScanner::load_with_classifier`], the same
//!   blocking step draws the message's classifier features from the decoded headers, body
//!   text and URL domains and classifies it; [`ContentScanner::examine`] returns that
//!   [`Classification`] beside the report.
//! - The report (`report`) states findings only. When clamd gave no verdict (down, slow, or
//!   an `ERROR` reply), [`ContentReport::failure`] carries the configured [`FailureMode`]:
//!   temporary failure by default, so unscanned mail is never accepted silently.

mod archive;
mod clamd;
mod error;
mod magic;
mod mime;
mod policy;
mod report;
mod rules;
mod settings;
mod signatures;
mod urls;

use std::sync::Arc;
use std::time::Instant;

use mail_parser::MessageParser;
use rayon::prelude::*;

use crate::classifier::{
    Classification, Classifier, Document, FeatureScheme, Features, MODEL_SCHEME,
};

pub use archive::{MAX_ARCHIVE_DEPTH, MAX_ARCHIVE_ENTRIES};
pub use error::ContentError;
pub use magic::FileType;
pub use report::{
    Analysis, ArchiveEntry, ArchiveListing, Attachment, ClamdOutcome, ContentReport, Layer,
    PolicyHit, RuleHit, ScanFailure, VirusHit,
};
pub use rules::{DEFAULT_RULES, GTUBE, RuleSides};
pub use settings::{
    AttachmentPolicy, AttachmentSection, ClamdAddress, ClamdSection, ClamdSettings, ContentSection,
    ContentSettings, DEFAULT_CLAMD_TIMEOUT, DEFAULT_DANGEROUS_EXTENSIONS, DEFAULT_MAX_SCAN_SIZE,
    FailureMode, MAX_CLAMD_TIMEOUT,
};
pub use urls::MAX_URLS;

use clamd::Clamd;
use mime::{Dissection, Purpose, ScanItem};
use rules::{RuleOutcome, RuleSet};
use signatures::SignatureDb;

/// The part name of the whole message in hits.
const WHOLE_MESSAGE: &str = "message";

/// From how many octets a message's parts are scanned in parallel. Below this, handing work
/// to rayon's threads (and waking them) costs more than the scan: most mail is a few
/// kilobytes, scanned in tens of microseconds, and the gateway already scans many messages at
/// once on its blocking threads.
const PARALLEL_FROM: usize = 256 * 1024;

/// The content checks, loaded once and shared by every session.
#[derive(Clone)]
pub struct ContentScanner {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ContentSettings,
    parser: MessageParser,
    rules: RuleSet,
    signatures: Option<SignatureDb>,
    clamd: Option<Clamd>,
    classifier: Option<Arc<Classifier>>,
}

/// What the in-process checks found.
struct Local {
    analysis: report::Analysis,
    rules: RuleOutcome,
    viruses: Vec<VirusHit>,
    policy_hits: Vec<PolicyHit>,
    classification: Option<Classification>,
}

impl ContentScanner {
    /// Reads the rules file (or the built-in rules) and the signature directory.
    ///
    /// # Errors
    /// [`ContentError`] naming the file and line that cannot be used.
    pub fn load(settings: ContentSettings) -> Result<ContentScanner, ContentError> {
        ContentScanner::load_with_classifier(settings, None)
    }

    /// As [`ContentScanner::load`], with the statistical classifier run on every message.
    ///
    /// # Errors
    /// [`ContentError`] naming the file and line that cannot be used.
    pub fn load_with_classifier(
        settings: ContentSettings,
        classifier: Option<Arc<Classifier>>,
    ) -> Result<ContentScanner, ContentError> {
        let rules = RuleSet::load(settings.rules_file.as_deref())?;
        let signatures = settings
            .signatures_dir
            .as_deref()
            .map(SignatureDb::load_dir)
            .transpose()?;
        let clamd = settings.clamd.clone().map(Clamd::new);
        tracing::info!(
            rules = rules.len(),
            signatures = signatures.as_ref().map_or(0, SignatureDb::len),
            signatures_skipped = signatures.as_ref().map_or(0, SignatureDb::skipped),
            clamd = %settings.clamd.as_ref().map_or("off".to_owned(), |c| c.address.to_string()),
            "content checks loaded"
        );
        // Every header is read as text (encoded words decoded) for the rules; only the MIME
        // headers need structure.
        let parser = MessageParser::new()
            .with_mime_headers()
            .default_header_text();
        Ok(ContentScanner {
            inner: Arc::new(Inner {
                settings,
                parser,
                rules,
                signatures,
                clamd,
                classifier,
            }),
        })
    }

    /// The classifier, when one was given.
    pub fn classifier(&self) -> Option<&Arc<Classifier>> {
        self.inner.classifier.as_ref()
    }

    /// The message's rule points split into header and body, and whether a test pattern
    /// (GTUBE, a `noautolearn` rule) matched: what the classifier's auto-learning needs.
    pub fn rule_sides(&self, report: &ContentReport) -> RuleSides {
        let mut sides = self.inner.rules.sides(&report.rule_hits);
        sides.test_pattern |= report.gtube;
        sides
    }

    /// The classifier features of `message`, drawn from its decoded text as a scan would:
    /// what `moat learn` learns.
    pub fn features(&self, message: &[u8], scheme: FeatureScheme) -> Features {
        let parsed = self.inner.parser.parse(message);
        let dissection = self
            .inner
            .dissect(message, parsed.as_ref(), Purpose::AllChecks);
        features_of(&dissection, scheme)
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &ContentSettings {
        &self.inner.settings
    }

    /// Runs every check on `message` (as received, CRLF line ends): the in-process ones on a
    /// blocking thread, clamd at the same time.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the clamd connection; the in-process checks
    /// finish on their thread and are discarded.
    pub async fn scan(&self, message: &[u8]) -> ContentReport {
        self.examine(message).await.0
    }

    /// As [`ContentScanner::scan`], with the classifier's verdict when a classifier was
    /// given.
    ///
    /// # Cancel safety
    /// As [`ContentScanner::scan`].
    pub async fn examine(&self, message: &[u8]) -> (ContentReport, Option<Classification>) {
        let started = Instant::now();
        let message: Arc<[u8]> = Arc::from(message);

        let local = {
            let inner = Arc::clone(&self.inner);
            let message = Arc::clone(&message);
            tokio::task::spawn_blocking(move || inner.scan_local(&message))
        };
        let clamd = async {
            match &self.inner.clamd {
                Some(clamd) => Some(clamd.scan(&message).await),
                None => None,
            }
        };
        let (local, clamd) = tokio::join!(local, clamd);

        let mut failure = None;
        let local = local.unwrap_or_else(|e| {
            // A panic in a parser is a bug, but the message must not pass unscanned.
            tracing::error!(error = %e, "in-process content scan failed");
            failure = Some(ScanFailure {
                reason: format!("in-process content scan failed: {e}"),
                mode: FailureMode::TempFail,
            });
            Local::failed()
        });

        let mut viruses = Vec::new();
        let outcome = match clamd {
            None => ClamdOutcome::NotConfigured,
            Some(verdict) => {
                viruses.extend(verdict.viruses.into_iter().map(|name| VirusHit {
                    layer: Layer::Clamd,
                    name,
                    part: WHOLE_MESSAGE.to_owned(),
                }));
                verdict.outcome
            }
        };
        if let (ClamdOutcome::Error(reason) | ClamdOutcome::Unavailable(reason), Some(clamd)) =
            (&outcome, &self.inner.clamd)
        {
            failure = failure.or(Some(ScanFailure {
                reason: reason.clone(),
                mode: clamd.settings().failure_mode,
            }));
        }
        viruses.extend(local.viruses);

        let report = ContentReport {
            analysis: local.analysis,
            rule_hits: local.rules.hits,
            rule_score: local.rules.score,
            gtube: local.rules.gtube,
            viruses,
            policy_hits: local.policy_hits,
            clamd: outcome,
            failure,
            elapsed: started.elapsed(),
        };
        tracing::debug!(
            elapsed_us = report.elapsed.as_micros() as u64,
            viruses = report.viruses.len(),
            policy_hits = report.policy_hits.len(),
            rule_score = report.rule_score,
            gtube = report.gtube,
            clamd = ?report.clamd,
            "content scanned"
        );
        (report, local.classification)
    }

    /// Layer 2 alone, synchronously: the built-in scanner's virus hits in `message` (its
    /// parts, archives and raw bytes). For tools and benchmarks; [`ContentScanner::scan`] is
    /// what the gateway calls.
    pub fn scan_builtin(&self, message: &[u8]) -> Vec<VirusHit> {
        let parsed = self.inner.parser.parse(message);
        let dissection = self
            .inner
            .dissect(message, parsed.as_ref(), Purpose::Signatures);
        self.inner.scan_items(&dissection.items)
    }
}

impl Inner {
    /// Every in-process check.
    fn scan_local(&self, message: &[u8]) -> Local {
        let parsed = self.parser.parse(message);
        let dissection = self.dissect(message, parsed.as_ref(), Purpose::AllChecks);
        let (rules, viruses) = if message.len() < PARALLEL_FROM {
            let rules = self.rules.apply(&dissection.rule_text);
            (rules, self.scan_items(&dissection.items))
        } else {
            rayon::join(
                || self.rules.apply(&dissection.rule_text),
                || self.scan_items(&dissection.items),
            )
        };
        let classification = self
            .classifier
            .as_ref()
            .filter(|classifier| classifier.settings().enabled)
            .map(|classifier| classifier.classify(features_of(&dissection, MODEL_SCHEME)));
        Local {
            analysis: dissection.analysis,
            rules,
            viruses,
            policy_hits: dissection.policy_hits,
            classification,
        }
    }

    fn dissect<'m>(
        &self,
        message: &'m [u8],
        parsed: Option<&'m mail_parser::Message<'m>>,
        purpose: Purpose,
    ) -> Dissection<'m> {
        let settings = &self.settings;
        let mut dissection = mime::dissect(
            message,
            parsed,
            &settings.attachment_policy,
            settings.max_scan_size,
            purpose,
        );
        if message.len() > settings.max_scan_size {
            // Analysis and rules still run; the signatures do not, so the report says so.
            dissection.items.clear();
            dissection.analysis.incomplete.push(format!(
                "message of {} octets is over max_scan_size ({}): not scanned for signatures",
                message.len(),
                settings.max_scan_size
            ));
        }
        dissection
    }

    /// Layer 2 over every item, in parallel.
    fn scan_items(&self, items: &[ScanItem<'_>]) -> Vec<VirusHit> {
        let Some(signatures) = &self.signatures else {
            return Vec::new();
        };
        let scan = |item: &ScanItem<'_>| {
            signatures
                .scan(&item.data, item.target, item.in_raw_message)
                .into_iter()
                .map(|name| VirusHit {
                    layer: Layer::Builtin,
                    name: name.to_owned(),
                    part: item.part.clone(),
                })
                .collect::<Vec<_>>()
        };
        let size: usize = items.iter().map(|item| item.data.len()).sum();
        if size < PARALLEL_FROM {
            return items.iter().flat_map(scan).collect();
        }
        items.par_iter().flat_map_iter(scan).collect()
    }
}

impl Local {
    /// Nothing found, because nothing could be looked at.
    fn failed() -> Local {
        Local {
            analysis: report::Analysis::default(),
            rules: RuleOutcome::default(),
            viruses: Vec::new(),
            policy_hits: Vec::new(),
            classification: None,
        }
    }
}

/// The classifier features of a dissected message.
fn features_of(dissection: &Dissection<'_>, scheme: FeatureScheme) -> Features {
    let analysis = &dissection.analysis;
    let attachment_types: Vec<String> = analysis
        .attachments
        .iter()
        .map(|attachment| attachment.detected_type.mime_type().to_owned())
        .collect();
    let document = Document {
        headers: &dissection.rule_text.headers,
        body: &dissection.rule_text.body,
        url_domains: &analysis.url_domains,
        text_parts: analysis.text_parts,
        html_parts: analysis.html_parts,
        attachment_types: &attachment_types,
    };
    crate::classifier::extract(&document, scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

    fn scanner_with_signatures(files: &[(&str, &str)]) -> (ContentScanner, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "moat-content-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write signatures");
        }
        let settings = ContentSettings {
            signatures_dir: Some(dir.clone()),
            ..ContentSettings::default()
        };
        (ContentScanner::load(settings).expect("loads"), dir)
    }

    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn with_attachment(name: &str, data: &[u8]) -> Vec<u8> {
        format!(
            "From: a@example.com\r\nSubject: files\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
--b\r\nContent-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename=\"{name}\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64(data)
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn builtin_layer_finds_eicar_in_a_base64_attachment() {
        let (scanner, dir) = scanner_with_signatures(&[(
            "t.hdb",
            "44d88612fea8a8f36de82e1278abb02f:68:Test.Eicar\n",
        )]);
        let report = scanner
            .scan(&with_attachment("eicar.com", EICAR.as_bytes()))
            .await;
        assert!(report.infected());
        assert_eq!(report.viruses[0].layer, Layer::Builtin);
        assert_eq!(report.viruses[0].name, "Test.Eicar");
        assert_eq!(report.viruses[0].part, "eicar.com");
        assert_eq!(report.clamd, ClamdOutcome::NotConfigured);
        assert!(report.failure.is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn scanner_and_scan_future_can_cross_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let scanner = ContentScanner::load(ContentSettings::default()).expect("loads");
        send_sync(&scanner);
        // Sessions run on tokio's worker threads: the scan must be spawnable.
        send(scanner.scan(b""));
    }

    #[tokio::test]
    async fn gtube_message_is_flagged_and_scored() {
        let scanner = ContentScanner::load(ContentSettings::default()).expect("loads");
        let message = format!("Subject: test\r\n\r\nThis is the GTUBE\r\n{GTUBE}\r\n");
        let report = scanner.scan(message.as_bytes()).await;
        assert!(report.gtube);
        assert!(report.rule_score >= 1000.0);
        assert!(!report.infected());
    }

    #[tokio::test]
    async fn plain_message_is_clean() {
        let scanner = ContentScanner::load(ContentSettings::default()).expect("loads");
        let report = scanner
            .scan(b"From: a@example.com\r\nSubject: lunch\r\n\r\nNoon at the usual place?\r\n")
            .await;
        assert!(!report.infected() && !report.gtube);
        assert!(report.policy_hits.is_empty());
        assert!(report.rule_hits.is_empty());
        assert_eq!(report.analysis.text_parts, 1);
    }

    #[tokio::test]
    async fn unreachable_clamd_fails_with_the_configured_mode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let settings = ContentSettings {
            clamd: Some(ClamdSettings {
                address: ClamdAddress::Tcp(address),
                timeout: DEFAULT_CLAMD_TIMEOUT,
                failure_mode: FailureMode::Accept,
            }),
            ..ContentSettings::default()
        };
        let scanner = ContentScanner::load(settings).expect("loads");
        let report = scanner.scan(b"Subject: x\r\n\r\nhello\r\n").await;
        assert!(
            matches!(report.clamd, ClamdOutcome::Unavailable(_)),
            "{report:?}"
        );
        let failure = report.failure.expect("a failure");
        assert_eq!(failure.mode, FailureMode::Accept);
    }

    #[tokio::test]
    async fn oversized_message_is_analysed_but_not_scanned() {
        let (scanner, dir) = scanner_with_signatures(&[("t.ndb", "Test.Eicar:0:*:45494341522d\n")]);
        let mut settings = scanner.settings().clone();
        settings.max_scan_size = 16;
        let scanner = ContentScanner::load(settings).expect("loads");
        let report = scanner
            .scan(format!("Subject: x\r\n\r\n{EICAR}\r\n").as_bytes())
            .await;
        assert!(!report.infected());
        assert!(
            report
                .analysis
                .incomplete
                .iter()
                .any(|r| r.contains("max_scan_size")),
            "{:?}",
            report.analysis.incomplete
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn verbatim_part_is_searched_once_and_decoded_part_by_itself() {
        let (scanner, dir) = scanner_with_signatures(&[(
            "t.ndb",
            "Test.Eicar:0:*:45494341522d\nTest.Text:7:*:45494341522d\n",
        )]);
        let parts = |message: &[u8]| {
            let hits = scanner.scan_builtin(message);
            hits.iter()
                .map(|hit| format!("{} in {}", hit.name, hit.part))
                .collect::<Vec<_>>()
        };
        // A 7-bit body is a slice of the message: the floating signature found it there, and
        // only the text-only signature looks at the part.
        let plain = format!("Subject: x\r\n\r\n{EICAR}\r\n");
        assert_eq!(
            parts(plain.as_bytes()),
            ["Test.Eicar in message", "Test.Text in part 0"]
        );
        // A base64 body is not in the message as such: the decoded part is searched.
        let encoded = format!(
            "Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(EICAR.as_bytes())
        );
        assert_eq!(
            parts(encoded.as_bytes()),
            ["Test.Eicar in part 0", "Test.Text in part 0"]
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
