//! combined: several datasets in one file, each serving some subzones of the base zone.
//!
//! `$DATASET type[:name] subzone...` starts a part; `@` is the base zone itself. A query is
//! answered by the parts of the longest subzone that contains it. `$SOA` and `$NS` anywhere in
//! the file are the base zone's; `$TTL` and variables belong to the part they are in.

use super::Dataset;
use crate::answer::{Answers, Want};
use crate::query::Subject;

/// A subzone of a combined dataset and the parts that serve it.
#[derive(Debug)]
pub(crate) struct Subzone {
    /// The subzone's labels below the base zone, leftmost first; empty for `@`.
    pub labels: Vec<Box<[u8]>>,
    /// Indexes into [`Combined::parts`].
    pub parts: Vec<usize>,
}

/// A loaded combined dataset.
#[derive(Debug)]
pub(crate) struct Combined {
    /// The nested datasets, in file order.
    pub parts: Vec<Dataset>,
    /// The subzones, longest first so the first match is the most specific.
    pub subzones: Vec<Subzone>,
}

impl Combined {
    /// Builds the dataset; sorts the subzones longest first.
    pub(crate) fn new(parts: Vec<Dataset>, mut subzones: Vec<Subzone>) -> Combined {
        subzones.sort_by_key(|s| std::cmp::Reverse(s.labels.len()));
        Combined { parts, subzones }
    }

    /// The subzone containing `subject`, and the subject seen from it.
    fn subzone<'s>(&self, subject: &Subject<'s>) -> Option<(&Subzone, Subject<'s>)> {
        let zone = self.subzones.iter().find(|zone| {
            let n = zone.labels.len();
            n <= subject.depth
                && zone
                    .labels
                    .iter()
                    .enumerate()
                    .all(|(i, label)| subject.label(subject.depth - n + i) == &label[..])
        })?;
        let ip4 = zone
            .parts
            .iter()
            .any(|&p| self.parts.get(p).is_some_and(|d| d.kind.is_ip4()));
        Some((zone, subject.below(zone.labels.len(), ip4)))
    }

    /// Answers from the parts of the subzone containing `subject`. The apex of a subzone
    /// always exists.
    pub(crate) fn query(&self, subject: &Subject<'_>, want: Want, out: &mut Answers) -> bool {
        let Some((zone, inner)) = self.subzone(subject) else {
            return false;
        };
        let mut found = inner.depth == 0;
        for &part in &zone.parts {
            if let Some(dataset) = self.parts.get(part) {
                found |= dataset.query(&inner, want, out);
            }
        }
        found
    }

    /// Whether names exist below `subject`: a subzone under it, or names in its subzone.
    pub(crate) fn has_names_below(&self, subject: &Subject<'_>) -> bool {
        let deeper_subzone = self.subzones.iter().any(|zone| {
            let n = zone.labels.len();
            n > subject.depth
                && (0..subject.depth)
                    .all(|i| subject.label(i) == &zone.labels[n - subject.depth + i][..])
        });
        if deeper_subzone {
            return true;
        }
        let Some((zone, inner)) = self.subzone(subject) else {
            return false;
        };
        zone.parts
            .iter()
            .filter_map(|&p| self.parts.get(p))
            .any(|d| d.has_names_below(&inner))
    }

    /// Entries over all parts.
    pub(crate) fn entries(&self) -> usize {
        self.parts.iter().map(Dataset::entries).sum()
    }

    /// Heap bytes over all parts.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.parts.iter().map(Dataset::heap_bytes).sum()
    }
}
