//! Datasets in rbldnsd's formats: one file per type, each reading its lines and answering
//! lookups from its own index.
//!
//! A dataset is read in three steps (see `reader.rs`): every line is parsed on its own, in
//! parallel, into a [`Line`]; one pass in file order then applies what depends on order
//! (default values, special entries) and hands each entry with its value id to the type's
//! builder; the builder finally sorts its index in parallel. The finished [`Dataset`] never
//! changes; a reload builds a new one.

pub(crate) mod addr;
mod combined;
mod dnset;
mod generic;
mod ip4set;
mod ip4trie;
mod ip4tset;
mod ip6trie;
mod ip6tset;
pub(crate) mod line;
pub(crate) mod reader;
pub(crate) mod special;
pub(crate) mod value;

use std::fmt;
use std::str::FromStr;

use crate::answer::{Answers, Want};
use crate::query::Subject;
use special::Meta;
use value::{ValueId, ValueSpec, ValueTable};

pub(crate) use combined::Combined;

/// The dataset types of rbldnsd that Moat reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatasetType {
    /// IPv4 addresses, prefixes and ranges with a value each.
    Ip4Set,
    /// Single IPv4 addresses sharing one value.
    Ip4TSet,
    /// IPv4 CIDR blocks with a value each; the longest prefix wins.
    Ip4Trie,
    /// IPv6 CIDR blocks with a value each; the longest prefix wins.
    Ip6Trie,
    /// IPv6 /64 blocks sharing one value, with /128 exclusions.
    Ip6TSet,
    /// Domain names, with `*.` and `.` wildcards.
    DnSet,
    /// A few records in a simplified BIND format (A, TXT, MX).
    Generic,
    /// Several datasets of other types in one file, each for some subzones.
    Combined,
}

impl DatasetType {
    /// The type's name in rbldnsd's zone specifications.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetType::Ip4Set => "ip4set",
            DatasetType::Ip4TSet => "ip4tset",
            DatasetType::Ip4Trie => "ip4trie",
            DatasetType::Ip6Trie => "ip6trie",
            DatasetType::Ip6TSet => "ip6tset",
            DatasetType::DnSet => "dnset",
            DatasetType::Generic => "generic",
            DatasetType::Combined => "combined",
        }
    }

    /// Whether the type answers reversed IPv4 names (so IPv4-mapped and 6to4 IPv6 names are
    /// turned into IPv4 addresses for it, as rbldnsd does).
    pub(crate) fn is_ip4(self) -> bool {
        matches!(
            self,
            DatasetType::Ip4Set | DatasetType::Ip4TSet | DatasetType::Ip4Trie
        )
    }

    /// Whether the type's default value is reset at the start of each file (rather than the
    /// first default line of the whole dataset winning, as in the "trivial" sets).
    fn resets_default_per_file(self) -> bool {
        !matches!(self, DatasetType::Ip4TSet | DatasetType::Ip6TSet)
    }

    /// The list accepted, for error messages.
    pub const NAMES: &'static str =
        "ip4set, ip4tset, ip4trie, ip6trie, ip6tset, dnset, generic, combined";
}

impl FromStr for DatasetType {
    type Err = ();

    fn from_str(s: &str) -> Result<DatasetType, ()> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ip4set" => DatasetType::Ip4Set,
            "ip4tset" => DatasetType::Ip4TSet,
            "ip4trie" => DatasetType::Ip4Trie,
            "ip6trie" => DatasetType::Ip6Trie,
            "ip6tset" => DatasetType::Ip6TSet,
            "dnset" => DatasetType::DnSet,
            "generic" => DatasetType::Generic,
            "combined" => DatasetType::Combined,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for DatasetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reading options that change what a line means.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ParseOptions {
    /// Accept CIDR blocks with host bits set, clearing them (rbldnsd's `-e`).
    pub accept_in_cidr: bool,
}

/// One line after the context-free parse.
#[derive(Debug)]
pub(crate) enum Line<'a> {
    /// Blank or a comment.
    Skip,
    /// A `$` special entry.
    Special(&'a [u8]),
    /// A `:A:TXT` default for the entries that follow.
    Default(ValueSpec<'a>),
    /// An entry with its own value, if any.
    Entry {
        entry: Entry,
        excluded: bool,
        value: Option<ValueSpec<'a>>,
    },
    /// Malformed: skipped with this warning.
    Invalid(&'static str),
}

/// The key part of an entry line, per dataset type.
#[derive(Debug)]
pub(crate) enum Entry {
    /// An ip4set range.
    Ip4Range(addr::Ip4Range),
    /// An ip4tset address.
    Ip4(u32),
    /// An ip4trie block.
    Cidr4(u32, u8),
    /// An ip6trie block.
    Cidr6(u128, u8),
    /// An ip6tset /64 (listing) or /128 (exclusion).
    Ip6TSet(u128, u8),
    /// A dnset name: its key, and whether it lists the name itself and its subdomains.
    Domain {
        key: Vec<u8>,
        plain: bool,
        wild: bool,
    },
    /// A generic record (boxed: it is much larger than the other kinds of entry).
    Record(Box<generic::Record>),
}

/// Parses one line for a dataset of type `kind`.
pub(crate) fn parse_line<'a>(kind: DatasetType, raw: &'a [u8], options: ParseOptions) -> Line<'a> {
    let data = match line::classify(raw) {
        line::Kind::Skip => return Line::Skip,
        line::Kind::Special(text) => return Line::Special(text),
        line::Kind::Data(data) => data,
    };
    match kind {
        DatasetType::Ip4Set => ip4set::parse_line(data, options),
        DatasetType::Ip4TSet => ip4tset::parse_line(data),
        DatasetType::Ip4Trie => ip4trie::parse_line(data, options),
        DatasetType::Ip6Trie => ip6trie::parse_line(data, options),
        DatasetType::Ip6TSet => ip6tset::parse_line(data),
        DatasetType::DnSet => dnset::parse_line(data),
        DatasetType::Generic => generic::parse_line(data),
        DatasetType::Combined => {
            Line::Invalid("invalid/unrecognized entry - specify $DATASET line")
        }
    }
}

/// Collects the entries of one dataset while its lines are read in order.
pub(crate) enum Builder {
    /// ip4set.
    Ip4Set(ip4set::Builder),
    /// ip4tset.
    Ip4TSet(ip4tset::Builder),
    /// ip4trie.
    Ip4Trie(ip4trie::Builder),
    /// ip6trie.
    Ip6Trie(ip6trie::Builder),
    /// ip6tset.
    Ip6TSet(ip6tset::Builder),
    /// dnset.
    DnSet(dnset::Builder),
    /// generic.
    Generic(generic::Builder),
}

impl Builder {
    /// An empty builder for `kind` (not combined, which holds builders of its own).
    pub(crate) fn new(kind: DatasetType) -> Option<Builder> {
        Some(match kind {
            DatasetType::Ip4Set => Builder::Ip4Set(Default::default()),
            DatasetType::Ip4TSet => Builder::Ip4TSet(Default::default()),
            DatasetType::Ip4Trie => Builder::Ip4Trie(Default::default()),
            DatasetType::Ip6Trie => Builder::Ip6Trie(Default::default()),
            DatasetType::Ip6TSet => Builder::Ip6TSet(Default::default()),
            DatasetType::DnSet => Builder::DnSet(Default::default()),
            DatasetType::Generic => Builder::Generic(Default::default()),
            DatasetType::Combined => return None,
        })
    }

    /// Adds one entry. `order` says where it was read (for duplicate warnings); the result is
    /// a warning when the dataset's rules refuse the entry.
    pub(crate) fn add(
        &mut self,
        entry: Entry,
        value: ValueId,
        order: u64,
        meta: &Meta,
    ) -> Result<(), &'static str> {
        match (self, entry) {
            (Builder::Ip4Set(b), Entry::Ip4Range(range)) => b.add(range, value, meta),
            (Builder::Ip4TSet(b), Entry::Ip4(addr)) => b.add(addr),
            (Builder::Ip4Trie(b), Entry::Cidr4(addr, bits)) => {
                b.add(addr, bits, value, order, meta)
            }
            (Builder::Ip6Trie(b), Entry::Cidr6(addr, bits)) => b.add(addr, bits, value, order),
            (Builder::Ip6TSet(b), Entry::Ip6TSet(addr, bits)) => b.add(addr, bits),
            (Builder::DnSet(b), Entry::Domain { key, plain, wild }) => {
                b.add(key, plain, wild, value)
            }
            (Builder::Generic(b), Entry::Record(record)) => b.add(*record, meta),
            _ => Err("entry of another dataset type"),
        }
    }

    /// Sorts the index. `duplicate` hears the order of each trie entry that lost to an
    /// earlier one for the same prefix.
    pub(crate) fn finish(self, duplicate: &mut dyn FnMut(u64)) -> Data {
        match self {
            Builder::Ip4Set(b) => Data::Ip4Set(b.finish()),
            Builder::Ip4TSet(b) => Data::Ip4TSet(b.finish()),
            Builder::Ip4Trie(b) => Data::Ip4Trie(b.finish(duplicate)),
            Builder::Ip6Trie(b) => Data::Ip6Trie(b.finish(duplicate)),
            Builder::Ip6TSet(b) => Data::Ip6TSet(b.finish()),
            Builder::DnSet(b) => Data::DnSet(b.finish()),
            Builder::Generic(b) => Data::Generic(b.finish()),
        }
    }
}

/// The index of a loaded dataset.
#[derive(Debug)]
pub(crate) enum Data {
    /// ip4set.
    Ip4Set(ip4set::Ip4Set),
    /// ip4tset.
    Ip4TSet(ip4tset::Ip4TSet),
    /// ip4trie.
    Ip4Trie(ip4trie::Ip4Trie),
    /// ip6trie.
    Ip6Trie(ip6trie::Ip6Trie),
    /// ip6tset.
    Ip6TSet(ip6tset::Ip6TSet),
    /// dnset.
    DnSet(dnset::DnSet),
    /// generic.
    Generic(generic::Generic),
    /// combined.
    Combined(Box<Combined>),
}

/// A loaded dataset: its index, values and metadata.
#[derive(Debug)]
pub(crate) struct Dataset {
    /// The type.
    pub kind: DatasetType,
    /// A label for logs: the specification, or a combined part's name.
    pub label: Box<str>,
    /// `$SOA`, `$NS`, `$TTL` and variables.
    pub meta: Meta,
    /// The values entries refer to.
    pub values: ValueTable,
    /// The index.
    pub data: Data,
}

impl Dataset {
    /// Looks `subject` up and adds what it lists to `out`. Returns whether the name exists
    /// (listed, or a generic record of any type).
    pub(crate) fn query(&self, subject: &Subject<'_>, want: Want, out: &mut Answers) -> bool {
        match &self.data {
            Data::Ip4Set(d) => d.query(subject, want, self, out),
            Data::Ip4TSet(d) => d.query(subject, want, self, out),
            Data::Ip4Trie(d) => d.query(subject, want, self, out),
            Data::Ip6Trie(d) => d.query(subject, want, self, out),
            Data::Ip6TSet(d) => d.query(subject, want, self, out),
            Data::DnSet(d) => d.query(subject, want, self, out),
            Data::Generic(d) => d.query(subject, want, out),
            Data::Combined(d) => d.query(subject, want, out),
        }
    }

    /// Whether `subject` names an empty non-terminal: no entry of its own, but listed names
    /// below it (RFC 8020: such a name exists and must not get NXDOMAIN).
    pub(crate) fn has_names_below(&self, subject: &Subject<'_>) -> bool {
        match &self.data {
            Data::Ip4Set(d) => subject.partial4.is_some_and(|(n, b)| d.lists_any_in(n, b)),
            Data::Ip4TSet(d) => subject.partial4.is_some_and(|(n, b)| d.lists_any_in(n, b)),
            Data::Ip4Trie(d) => subject.partial4.is_some_and(|(n, b)| d.lists_any_in(n, b)),
            Data::Ip6Trie(d) => subject.partial6.is_some_and(|(n, b)| d.lists_any_in(n, b)),
            Data::Ip6TSet(d) => subject.partial6.is_some_and(|(n, b)| d.lists_any_in(n, b)),
            Data::DnSet(d) => d.has_names_below(subject),
            Data::Generic(d) => d.has_names_below(subject),
            Data::Combined(d) => d.has_names_below(subject),
        }
    }

    /// Adds the A and TXT records of value `id` for `subject_text` (what `$` stands for).
    pub(crate) fn answer_value(
        &self,
        id: ValueId,
        subject_text: &[u8],
        want: Want,
        out: &mut Answers,
    ) {
        let Some(value) = self.values.value(id) else {
            return;
        };
        if want.a {
            out.add_a(value.a, self.meta.ttl);
        }
        if want.txt && !value.txt.is_empty() {
            out.add_txt_template(&value.txt, subject_text, &self.meta.subst, self.meta.ttl);
        }
    }

    /// The number of entries in the index.
    pub(crate) fn entries(&self) -> usize {
        match &self.data {
            Data::Ip4Set(d) => d.len(),
            Data::Ip4TSet(d) => d.len(),
            Data::Ip4Trie(d) => d.len(),
            Data::Ip6Trie(d) => d.len(),
            Data::Ip6TSet(d) => d.len(),
            Data::DnSet(d) => d.len(),
            Data::Generic(d) => d.len(),
            Data::Combined(d) => d.entries(),
        }
    }

    /// Heap bytes of the index and values.
    pub(crate) fn heap_bytes(&self) -> usize {
        let index = match &self.data {
            Data::Ip4Set(d) => d.heap_bytes(),
            Data::Ip4TSet(d) => d.heap_bytes(),
            Data::Ip4Trie(d) => d.heap_bytes(),
            Data::Ip6Trie(d) => d.heap_bytes(),
            Data::Ip6TSet(d) => d.heap_bytes(),
            Data::DnSet(d) => d.heap_bytes(),
            Data::Generic(d) => d.heap_bytes(),
            Data::Combined(d) => d.heap_bytes(),
        };
        index + self.values.heap_bytes()
    }
}
