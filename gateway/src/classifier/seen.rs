//! The record of messages learned and as what (SpamAssassin's `bayes_seen`), so that learning
//! a message twice counts it once and learning it as the other class moves it.
//!
//! A message is known by [`MessageDigest`]: SHA-256 over its Message-ID and its body. Not over
//! the whole message, because the header section changes between learnings of one message:
//! `moat serve` auto-learns it as the client sent it, while the copy in the quarantine carries
//! Moat's trace and spam header fields and may have a tagged Subject. The body and the
//! Message-ID stay; line ends are ignored, since a message saved by a mail client has LF where
//! SMTP carried CRLF.
//!
//! Layout of `classifier/seen.bin`, little-endian, written atomically under `model.lock` with
//! the model:
//!
//! | octets | field |
//! |---|---|
//! | 8 | magic `MOATSEEN` |
//! | 4 | format version, 1 |
//! | 8 | number of entries N |
//! | 17 × N | oldest first: digest (16 octets), class (0 spam, 1 ham) |
//! | 32 | SHA-256 of everything before |
//!
//! The record is bounded: past [`SEEN_LIMIT`] entries the oldest are forgotten, so a message
//! learned long ago and learned again counts twice, as it would in SpamAssassin after
//! `bayes_seen` expiry.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::model::Label;

/// Most messages remembered: 17 octets each, so 3.4 MB of file and about twice that in memory
/// while it is merged; enough for a site's whole training corpus and months of auto-learning.
pub const SEEN_LIMIT: usize = 200_000;

/// The file name of the record in the classifier directory.
pub const SEEN_FILE: &str = "seen.bin";

/// The first octets of the file.
const MAGIC: &[u8; 8] = b"MOATSEEN";

/// The format written.
const VERSION: u32 = 1;

/// Octets before the entries.
const HEADER_LEN: usize = 8 + 4 + 8;

/// Octets of one entry.
const ENTRY_LEN: usize = 17;

/// Octets of the checksum.
const CHECKSUM_LEN: usize = 32;

/// What identifies one message across learnings: the first 16 octets of SHA-256 over its
/// Message-ID and its body, which is collision-free for any corpus a site can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageDigest([u8; 16]);

impl MessageDigest {
    /// The digest of a message (header section, empty line, body).
    pub fn of(message: &[u8]) -> MessageDigest {
        let (header, body) = split_message(message);
        let mut hasher = Sha256::new();
        hasher.update(message_id(header).unwrap_or_default());
        hasher.update([0]);
        for line in body.split(|&b| b == b'\n') {
            hasher.update(line.strip_suffix(b"\r").unwrap_or(line));
            hasher.update(b"\n");
        }
        let mut digest = [0; 16];
        digest.copy_from_slice(&hasher.finalize()[..16]);
        MessageDigest(digest)
    }
}

/// The header section and the body: split at the first empty line.
fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < message.len() {
        let end = message[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |at| start + at + 1);
        let line = &message[start..end];
        if line == b"\r\n" || line == b"\n" {
            return (&message[..start], &message[end..]);
        }
        start = end;
    }
    (message, &[])
}

/// The Message-ID field's value, unfolded and trimmed, when there is one.
fn message_id(header: &[u8]) -> Option<Vec<u8>> {
    let mut lines = header.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"message-id") {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        {
            value.extend_from_slice(next);
        }
        value.retain(|b| !b.is_ascii_whitespace());
        return Some(value);
    }
    None
}

/// The messages learned, oldest first, with the class each was last learned as.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    entries: Vec<(MessageDigest, Label)>,
    index: HashMap<MessageDigest, usize>,
}

impl Seen {
    /// The class `digest` was learned as, if it was.
    pub fn label(&self, digest: &MessageDigest) -> Option<Label> {
        self.index.get(digest).map(|&at| self.entries[at].1)
    }

    /// Records that `digest` was learned as `label`.
    pub fn record(&mut self, digest: MessageDigest, label: Label) {
        match self.index.get(&digest) {
            Some(&at) => self.entries[at].1 = label,
            None => {
                self.index.insert(digest, self.entries.len());
                self.entries.push((digest, label));
            }
        }
    }

    /// How many messages are recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets the oldest entries past `limit`.
    pub fn truncate_oldest(&mut self, limit: usize) {
        if self.entries.len() <= limit {
            return;
        }
        self.entries.drain(..self.entries.len() - limit);
        self.index = index_of(&self.entries);
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.len() * ENTRY_LEN + CHECKSUM_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for (digest, label) in &self.entries {
            bytes.extend_from_slice(&digest.0);
            bytes.push(match label {
                Label::Spam => 0,
                Label::Ham => 1,
            });
        }
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        bytes
    }

    /// The record in `bytes`, or what is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<Seen, String> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN || &bytes[..8] != MAGIC {
            return Err("not a Moat record of learned messages (bad magic or too short)".into());
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != checksum {
            return Err("checksum mismatch: the file is damaged or was cut short".into());
        }
        let mut version = [0; 4];
        version.copy_from_slice(&body[8..12]);
        let version = u32::from_le_bytes(version);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this Moat reads version {VERSION}"
            ));
        }
        let entries_octets = body.len() - HEADER_LEN;
        if !entries_octets.is_multiple_of(ENTRY_LEN) {
            return Err(format!(
                "{entries_octets} octets of entries, not a multiple of {ENTRY_LEN}"
            ));
        }

        let mut entries = Vec::with_capacity(entries_octets / ENTRY_LEN);
        for entry in body[HEADER_LEN..].chunks_exact(ENTRY_LEN) {
            let mut digest = [0; 16];
            digest.copy_from_slice(&entry[..16]);
            let label = match entry[16] {
                0 => Label::Spam,
                1 => Label::Ham,
                other => return Err(format!("class {other} is neither spam (0) nor ham (1)")),
            };
            entries.push((MessageDigest(digest), label));
        }
        let index = index_of(&entries);
        Ok(Seen { entries, index })
    }
}

fn index_of(entries: &[(MessageDigest, Label)]) -> HashMap<MessageDigest, usize> {
    entries
        .iter()
        .enumerate()
        .map(|(at, (digest, _))| (*digest, at))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_the_header_section_but_the_message_id() {
        let received = b"Message-ID: <1@example.com>\r\nSubject: hi\r\n\r\nbody\r\n";
        let held = b"X-Spam-Score: 12\nSubject: [SPAM] hi\nMessage-Id:\n <1@example.com>\n\nbody\n";
        assert_eq!(MessageDigest::of(received), MessageDigest::of(held));
        let other = b"Message-ID: <2@example.com>\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_ne!(MessageDigest::of(received), MessageDigest::of(other));
    }

    #[test]
    fn a_record_survives_encoding_and_relearning_moves_it() {
        let mut seen = Seen::default();
        let one = MessageDigest::of(b"Subject: a\r\n\r\none\r\n");
        let two = MessageDigest::of(b"Subject: a\r\n\r\ntwo\r\n");
        seen.record(one, Label::Spam);
        seen.record(two, Label::Ham);
        seen.record(one, Label::Ham);
        let decoded = Seen::decode(&seen.encode()).expect("decodes");
        assert_eq!(decoded, seen);
        assert_eq!(decoded.label(&one), Some(Label::Ham));
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn the_oldest_entries_are_forgotten_past_the_limit() {
        let mut seen = Seen::default();
        let digests: Vec<_> = (0..5)
            .map(|n| MessageDigest::of(format!("Subject: a\r\n\r\n{n}\r\n").as_bytes()))
            .collect();
        for digest in &digests {
            seen.record(*digest, Label::Spam);
        }
        seen.truncate_oldest(3);
        assert_eq!(seen.label(&digests[1]), None);
        assert_eq!(seen.label(&digests[2]), Some(Label::Spam));
        assert_eq!(seen.len(), 3);
    }
}
