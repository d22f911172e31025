//! The test messages of the corpora, and the comparison of a message as sent with the message
//! as delivered.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use super::repo_root;

/// A message as it travels over SMTP when a client sends the file `raw`: every CRLF, bare LF and
/// bare CR becomes CRLF (as smtplib does for text), and a final CRLF is added if missing, since
/// `CRLF . CRLF` ends the data and its first CRLF belongs to the last line.
pub fn smtp_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits off the first header field of `delivered`: its first line and the continuation lines
/// after it (lines starting with a space or a tab). Returns `(header, rest)`, or an explanation
/// when the first field is not a `Received:` header ending in CRLF.
pub fn strip_received(delivered: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let start = String::from_utf8_lossy(&delivered[..delivered.len().min(120)]).into_owned();
    if !delivered.starts_with(b"Received:") {
        return Err(format!(
            "does not start with a Received: header but with {start:?}"
        ));
    }
    let mut end = 0;
    loop {
        let Some(eol) = delivered[end..].windows(2).position(|w| w == b"\r\n") else {
            return Err(format!(
                "the Received: header has no CRLF ending: {start:?}"
            ));
        };
        end += eol + 2;
        if !matches!(delivered.get(end), Some(b' ' | b'\t')) {
            return Ok(delivered.split_at(end));
        }
    }
}

/// Where two byte strings first differ, with some bytes of context from each; `None` if equal.
pub fn first_difference(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let at = expected.iter().zip(actual).position(|(a, b)| a != b);
    let at = at.unwrap_or(expected.len().min(actual.len()));
    let context = |bytes: &[u8]| {
        let from = at.saturating_sub(40);
        let to = (at + 40).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..to]).into_owned()
    };
    Some(format!(
        "expected {} bytes, got {}; first difference at byte {at}: expected ...{:?}..., got ...{:?}...",
        expected.len(),
        actual.len(),
        context(expected),
        context(actual),
    ))
}

/// One test message from a corpus.
#[derive(Debug, Clone)]
pub struct CorpusMessage {
    /// A name unique over all corpora, usable as an address's local part: `cpython-msg_01`,
    /// `sa-easy-ham-1-00001`.
    pub name: String,
    /// The raw message file.
    pub path: PathBuf,
}

impl CorpusMessage {
    /// The file's bytes, unchanged.
    pub fn raw(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()))
    }
}

/// CPython's email test messages (`test/test_email/data/msg_*.txt`, 48 in CPython 3.11), from
/// `.corpus/cpython/`.
pub fn cpython_corpus() -> Vec<CorpusMessage> {
    let dir = corpus_dir("cpython");
    let mut messages: Vec<CorpusMessage> = list_dir(&dir)
        .into_iter()
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?;
            let stem = file.strip_prefix("msg_")?.strip_suffix(".txt")?;
            Some(CorpusMessage {
                name: format!("cpython-msg_{stem}"),
                path,
            })
        })
        .collect();
    messages.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        messages.len() >= 40,
        "only {} messages in {}",
        messages.len(),
        dir.display()
    );
    messages
}

/// The SpamAssassin public corpus (6,046 messages in five groups), from `.corpus/spamassassin/`,
/// sorted by group and number.
pub fn spamassassin_corpus() -> Vec<CorpusMessage> {
    let dir = corpus_dir("spamassassin");
    let mut messages = Vec::new();
    for group in list_dir(&dir).into_iter().filter(|p| p.is_dir()) {
        let group_name = group
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("")
            .to_owned();
        for path in list_dir(&group) {
            let Some(id) = path.file_name().and_then(OsStr::to_str) else {
                continue;
            };
            let Some(id) = id.strip_suffix(".eml") else {
                continue;
            };
            messages.push(CorpusMessage {
                name: format!("sa-{group_name}-{id}"),
                path,
            });
        }
    }
    messages.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        messages.len(),
        6046,
        "the SpamAssassin corpus in {} is incomplete",
        dir.display()
    );
    messages
}

/// Every `n`th message, starting with the first: a deterministic sample.
pub fn every_nth(messages: &[CorpusMessage], n: usize) -> Vec<CorpusMessage> {
    messages.iter().step_by(n).cloned().collect()
}

/// Asserts that `messages` hold each case a transport tends to get wrong: 8-bit bytes, a line
/// over the 998 octets of RFC 5322, a line that starts with a dot, a bare CR. A sample that lost
/// one of them would pass without testing it.
pub fn assert_has_hard_cases(messages: &[CorpusMessage]) {
    fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
        raw.split(|&b| b == b'\n')
    }
    type Case = (&'static str, fn(&[u8]) -> bool);
    let cases: [Case; 4] = [
        ("8-bit bytes", |raw| raw.iter().any(|&b| b >= 0x80)),
        ("a line over 998 octets", |raw| {
            lines(raw).any(|l| l.len() > 999)
        }),
        ("a line starting with a dot", |raw| {
            lines(raw).any(|l| l.starts_with(b"."))
        }),
        ("a bare CR", |raw| {
            raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
        }),
    ];
    let raws: Vec<Vec<u8>> = messages.iter().map(CorpusMessage::raw).collect();
    for (case, test) in cases {
        assert!(
            raws.iter().any(|raw| test(raw)),
            "no message in the sample has {case}"
        );
    }
}

fn corpus_dir(name: &str) -> PathBuf {
    let dir = repo_root().join(".corpus").join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-corpus first",
        dir.display()
    );
    dir
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
}
