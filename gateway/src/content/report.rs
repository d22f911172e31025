//! What the content checks found in one message: the [`ContentReport`] the verdict reads.
//!
//! The report only states findings; it decides nothing. The verdict turns virus hits and
//! policy hits into a refusal, the rule score into part of the spam score, and
//! [`ContentReport::failure`] into a temporary failure or an accepted-but-unscanned message.

use std::time::Duration;

use super::magic::FileType;
use super::settings::FailureMode;

/// Everything the content checks found in one message.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentReport {
    /// The message's structure: parts, attachments, archives, URLs.
    pub analysis: Analysis,
    /// The rules that matched, each once.
    pub rule_hits: Vec<RuleHit>,
    /// The sum of the matched rules' weights.
    pub rule_score: f32,
    /// The GTUBE test string is in the body (SpamAssassin's test for "this is spam").
    pub gtube: bool,
    /// Viruses found by either layer.
    pub viruses: Vec<VirusHit>,
    /// Attachments the policy refuses.
    pub policy_hits: Vec<PolicyHit>,
    /// What clamd said.
    pub clamd: ClamdOutcome,
    /// A scan that had to run but gave no verdict, and what the configuration says to do.
    pub failure: Option<ScanFailure>,
    /// Wall-clock time of the whole scan.
    pub elapsed: Duration,
}

impl ContentReport {
    /// Whether either anti-virus layer found something.
    pub fn infected(&self) -> bool {
        !self.viruses.is_empty()
    }
}

/// The structure of a message as the checks saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Whether the message had a header section the parser could read; `false` means only
    /// the raw bytes were scanned.
    pub parsed: bool,
    /// Text parts read as the body (text/plain and other text/* that are not attachments).
    pub text_parts: usize,
    /// HTML parts read as the body, stripped to text for the rules.
    pub html_parts: usize,
    /// Attachments and inline binary parts, in message order.
    pub attachments: Vec<Attachment>,
    /// Messages attached as message/rfc822 (their parts are analysed too).
    pub nested_messages: usize,
    /// URLs found in the text and in HTML links, in order, without duplicates.
    pub urls: Vec<String>,
    /// The host names of [`Analysis::urls`], lower case, sorted, without duplicates: what the
    /// URI blocklist check looks up.
    pub url_domains: Vec<String>,
    /// Why some content was not fully scanned by the built-in scanner (limits met, archives
    /// that could not be opened). Empty when everything was.
    pub incomplete: Vec<String>,
}

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Where it is, as reported in hits: its name, or `part N`.
    pub part: String,
    /// The file name the sender gave, if any.
    pub name: Option<String>,
    /// The Content-Type the sender declared, as `application/pdf`.
    pub declared_type: Option<String>,
    /// What its content is.
    pub detected_type: FileType,
    /// Its decoded size in octets.
    pub size: usize,
    /// Its listing when it is an archive the scanner opens (ZIP and Office Open XML).
    pub archive: Option<ArchiveListing>,
}

/// The entries of an archive, nested archives included with their path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveListing {
    /// Entries in archive order; an entry of a nested archive is named `inner.zip/file`.
    pub entries: Vec<ArchiveEntry>,
    /// Whether any entry is encrypted.
    pub encrypted: bool,
}

/// One file in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Its path in the archive.
    pub name: String,
    /// Its size when unpacked, as the archive declares it.
    pub size: u64,
    /// Whether it is encrypted (and so could not be scanned).
    pub encrypted: bool,
    /// What its content is, when it was unpacked.
    pub detected_type: Option<FileType>,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleHit {
    /// The rule's name.
    pub name: String,
    /// Its weight.
    pub weight: f32,
}

/// Which anti-virus layer found a virus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// ClamAV's clamd (layer 1).
    Clamd,
    /// The scanner built into Moat (layer 2).
    Builtin,
}

/// A virus found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirusHit {
    /// The layer that found it.
    pub layer: Layer,
    /// The signature's name. clamd adds `.UNOFFICIAL` to the names of signatures that are not
    /// ClamAV's own; the built-in scanner reports names as the files give them.
    pub name: String,
    /// Where: `message` for the whole message, else the part as in [`Attachment::part`],
    /// with `/entry` for a file in an archive.
    pub part: String,
}

/// An attachment the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHit {
    /// Which check: `dangerous_extension`, `double_extension`, `executable`, `script`,
    /// `office_macro` or `encrypted_archive`.
    pub rule: &'static str,
    /// Where, as in [`VirusHit::part`].
    pub part: String,
}

/// What clamd said about the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdOutcome {
    /// No virus.
    Clean,
    /// A virus; its name is in [`ContentReport::viruses`].
    Virus,
    /// clamd answered, but with an error (a size limit, say): not clean, not a virus.
    Error(String),
    /// clamd could not be reached, or did not answer in time.
    Unavailable(String),
    /// No clamd is configured.
    NotConfigured,
}

/// A scan that must run gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFailure {
    /// What went wrong, for the log and the reply.
    pub reason: String,
    /// What the configuration says the message gets.
    pub mode: FailureMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_with_a_virus_hit_is_infected() {
        let mut report = ContentReport {
            analysis: Analysis::default(),
            rule_hits: Vec::new(),
            rule_score: 0.0,
            gtube: false,
            viruses: Vec::new(),
            policy_hits: Vec::new(),
            clamd: ClamdOutcome::NotConfigured,
            failure: None,
            elapsed: Duration::ZERO,
        };
        assert!(!report.infected());
        report.viruses.push(VirusHit {
            layer: Layer::Builtin,
            name: "Test.Sig".into(),
            part: "message".into(),
        });
        assert!(report.infected());
    }
}
