//! dnset: domain names with a value each, and wildcards: `*.example.com` lists the subdomains,
//! `.example.com` the name and its subdomains, `!` excludes.
//!
//! Names are keyed by their labels reversed (`com\0example\0`), so a name's subdomains sort
//! right after it: a wildcard lookup tries ever shorter prefixes of the query's key, and the
//! empty non-terminal test is one range search.

use super::line::{first_word, skip_space};
use super::value::{EXCLUDED, ValueId, has_value, parse_value};
use super::{Dataset, Entry, Line};
use crate::answer::{Answers, Want};
use crate::name::{Name, write_label};
use crate::query::Subject;

/// Reads one dnset line: `[!][*.|.]name [value]` or a `:A:TXT` default.
pub(crate) fn parse_line(data: &[u8]) -> Line<'_> {
    if data[0] == b':' {
        return match parse_value(data) {
            Ok(spec) => Line::Default(spec),
            Err(warning) => Line::Invalid(warning),
        };
    }
    let (excluded, text) = match data.strip_prefix(b"!") {
        Some(rest) => (true, skip_space(rest)),
        None => (false, data),
    };
    let (plain, wild, text) = match text {
        [b'.', rest @ ..] => (true, true, rest),
        [b'*', b'.', rest @ ..] => (false, true, rest),
        _ => (true, false, text),
    };
    let (word, rest) = first_word(text);
    let Some(key) = Name::parse(word)
        .filter(|n| !n.is_root())
        .and_then(|n| reversed_key(&n))
    else {
        return Line::Invalid("invalid domain name");
    };
    let value = match (excluded, has_value(rest)) {
        (false, true) => match parse_value(rest) {
            Ok(spec) => Some(spec),
            Err(warning) => return Line::Invalid(warning),
        },
        _ => None,
    };
    Line::Entry {
        entry: Entry::Domain { key, plain, wild },
        excluded,
        value,
    }
}

/// The key of a name: its labels lower-cased, right to left, each followed by a zero byte.
/// `None` if a label holds a zero byte, which would make keys ambiguous.
fn reversed_key(name: &Name) -> Option<Vec<u8>> {
    let labels: Vec<&[u8]> = name.labels().collect();
    let mut key = Vec::with_capacity(name.wire().len());
    for label in labels.iter().rev() {
        if label.contains(&0) {
            return None;
        }
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        key.push(0);
    }
    Some(key)
}

/// Writes a key back as a domain name in presentation form.
fn key_to_text(key: &[u8]) -> String {
    let mut text = String::with_capacity(key.len());
    for label in key.split(|&b| b == 0).filter(|l| !l.is_empty()).rev() {
        if !text.is_empty() {
            text.push('.');
        }
        let _ = write_label(&mut text, label);
    }
    text
}

/// Collects names while loading: keys in one arena, so ten million names are not ten million
/// allocations.
#[derive(Default)]
pub(crate) struct Builder {
    plain: KeyList,
    wild: KeyList,
}

#[derive(Default)]
struct KeyList {
    arena: Vec<u8>,
    items: Vec<(u32, u32, ValueId)>,
}

impl KeyList {
    fn push(&mut self, key: &[u8], value: ValueId) {
        let start = u32::try_from(self.arena.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(key.len()).unwrap_or(0);
        self.arena.extend_from_slice(key);
        self.items.push((start, len, value));
    }
}

impl Builder {
    /// Adds a name to the plain list, the wildcard list, or both.
    pub(crate) fn add(
        &mut self,
        key: Vec<u8>,
        plain: bool,
        wild: bool,
        value: ValueId,
    ) -> Result<(), &'static str> {
        if plain {
            self.plain.push(&key, value);
        }
        if wild {
            self.wild.push(&key, value);
        }
        Ok(())
    }

    /// Sorts both lists.
    pub(crate) fn finish(self) -> DnSet {
        let (plain, wild) = rayon::join(
            || NameTable::build(self.plain),
            || NameTable::build(self.wild),
        );
        DnSet { plain, wild }
    }
}

/// Sorted unique keys, each with its value ids.
#[derive(Debug, Default)]
struct NameTable {
    arena: Box<[u8]>,
    starts: Box<[u32]>,
    groups: Box<[u32]>,
    values: Box<[ValueId]>,
}

impl NameTable {
    fn build(list: KeyList) -> NameTable {
        use rayon::slice::ParallelSliceMut;
        let KeyList { arena, mut items } = list;
        let key = |&(start, len, _): &(u32, u32, ValueId)| -> &[u8] {
            let start = start as usize;
            &arena[start..start + len as usize]
        };
        items.par_sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.2.cmp(&b.2)));
        items.dedup_by(|a, b| key(a) == key(b) && a.2 == b.2);

        let mut table = (Vec::new(), vec![0u32], Vec::new(), Vec::new());
        let (new_arena, starts, groups, values) = &mut table;
        for (i, item) in items.iter().enumerate() {
            let is_new = i == 0 || key(&items[i - 1]) != key(item);
            if is_new {
                groups.push(u32::try_from(values.len()).unwrap_or(u32::MAX));
                new_arena.extend_from_slice(key(item));
                starts.push(u32::try_from(new_arena.len()).unwrap_or(u32::MAX));
            }
            values.push(item.2);
        }
        groups.push(u32::try_from(values.len()).unwrap_or(u32::MAX));
        let (arena, starts, groups, values) = table;
        NameTable {
            arena: arena.into(),
            starts: starts.into(),
            groups: groups.into(),
            values: values.into(),
        }
    }

    fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.arena[self.starts[i] as usize..self.starts[i + 1] as usize]
    }

    /// The first index whose key is not less than `key`.
    fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < key {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        lo
    }

    fn find(&self, key: &[u8]) -> Option<&[ValueId]> {
        let i = self.lower_bound(key);
        if i < self.len() && self.key(i) == key {
            return Some(&self.values[self.groups[i] as usize..self.groups[i + 1] as usize]);
        }
        None
    }

    /// Whether a listed key longer than `prefix` starts with it. Looks at a bounded number of
    /// candidates: past that many exclusions the name is taken as having listed names below.
    fn lists_below(&self, prefix: &[u8]) -> bool {
        const CANDIDATES: usize = 64;
        let start = self.lower_bound(prefix);
        for i in (start..self.len()).take(CANDIDATES) {
            let key = self.key(i);
            if !key.starts_with(prefix) {
                return false;
            }
            let ids = &self.values[self.groups[i] as usize..self.groups[i + 1] as usize];
            if key.len() > prefix.len() && ids.first().is_some_and(|&id| id != EXCLUDED) {
                return true;
            }
        }
        start + CANDIDATES < self.len()
    }

    fn heap_bytes(&self) -> usize {
        self.arena.len() + 4 * (self.starts.len() + self.groups.len() + self.values.len())
    }
}

/// A loaded dnset.
#[derive(Debug)]
pub(crate) struct DnSet {
    plain: NameTable,
    wild: NameTable,
}

impl DnSet {
    /// Answers for the name of `subject`: an exact entry, else the nearest wildcard above it.
    pub(crate) fn query(
        &self,
        subject: &Subject<'_>,
        want: Want,
        ds: &Dataset,
        out: &mut Answers,
    ) -> bool {
        if subject.depth == 0 {
            return false;
        }
        let mut key = Vec::with_capacity(256);
        subject.reversed_key(&mut key);
        let Some((ids, entry)) = self.find(&key) else {
            return false;
        };
        if ids[0] == EXCLUDED {
            return false;
        }
        let text = if want.txt {
            key_to_text(entry)
        } else {
            String::new()
        };
        for &id in ids {
            ds.answer_value(id, text.as_bytes(), want, out);
        }
        true
    }

    /// The plain entry of `key`, or the wildcard entry of its nearest ancestor, with the key
    /// that matched.
    fn find<'k>(&self, key: &'k [u8]) -> Option<(&[ValueId], &'k [u8])> {
        if let Some(ids) = self.plain.find(key) {
            return Some((ids, key));
        }
        // Drop the leftmost label (the last in the key) one at a time: a wildcard matches
        // only names strictly below its own.
        let mut end = key.len().checked_sub(1)?;
        loop {
            end = key[..end].iter().rposition(|&b| b == 0)?;
            let ancestor = &key[..=end];
            if let Some(ids) = self.wild.find(ancestor) {
                return Some((ids, ancestor));
            }
        }
    }

    /// Whether a plain entry is listed below the name of `subject`.
    pub(crate) fn has_names_below(&self, subject: &Subject<'_>) -> bool {
        let mut key = Vec::with_capacity(256);
        subject.reversed_key(&mut key);
        self.plain.lists_below(&key)
    }

    /// The number of plain and wildcard entries.
    pub(crate) fn len(&self) -> usize {
        self.plain.values.len() + self.wild.values.len()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.plain.heap_bytes() + self.wild.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Vec<u8> {
        reversed_key(&Name::parse(text.as_bytes()).expect("valid")).expect("valid key")
    }

    fn set(entries: &[(&str, bool, bool, ValueId)]) -> DnSet {
        let mut builder = Builder::default();
        for (name, plain, wild, value) in entries {
            builder
                .add(key(name), *plain, *wild, *value)
                .expect("accepted");
        }
        builder.finish()
    }

    #[test]
    fn keys_are_reversed_and_lower_cased() {
        assert_eq!(key("Mixed.CASE.example"), b"example\0case\0mixed\0");
        assert_eq!(key_to_text(&key("a.b.example")), "a.b.example");
    }

    #[test]
    fn wildcards_match_below_their_name_and_the_nearest_wins() {
        let set = set(&[
            ("star.example", false, true, 1),
            ("dot.example", true, true, 2),
            ("deep.dot.example", false, true, EXCLUDED),
        ]);
        assert!(set.find(&key("star.example")).is_none());
        assert_eq!(
            set.find(&key("a.b.star.example")).map(|(ids, _)| ids),
            Some(&[1][..])
        );
        assert_eq!(
            set.find(&key("dot.example")).map(|(ids, _)| ids),
            Some(&[2][..])
        );
        assert_eq!(
            set.find(&key("deep.dot.example")).map(|(ids, _)| ids),
            Some(&[2][..])
        );
        assert_eq!(
            set.find(&key("x.deep.dot.example")).map(|(ids, _)| ids),
            Some(&[EXCLUDED][..])
        );
    }

    #[test]
    fn names_above_plain_entries_have_names_below() {
        let set = set(&[("plain.example", true, false, 1)]);
        assert!(set.plain.lists_below(&key("example")));
        assert!(!set.plain.lists_below(&key("plain.example")));
        assert!(!set.plain.lists_below(&key("other")));
    }
}
