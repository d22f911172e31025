//! Loading a dataset from its files: lines parsed in parallel, then applied in file order.
//!
//! Parsing a line needs nothing but the line, so big files are parsed by all cores at once
//! (rayon). What depends on order is applied after, in one pass: `:A:TXT` defaults (reset at
//! each file, except in the "trivial" sets where the first one wins), `$` special entries,
//! and combined datasets' `$DATASET` parts. Malformed lines are warnings with file and line;
//! they never stop the load, unless strict mode is asked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rayon::prelude::*;

use super::combined::{Combined, Subzone};
use super::ip4tset::TSET_VALUE;
use super::line::{self, first_word, is_comment, is_space};
use super::special::{self, Meta, Special};
use super::value::{EXCLUDED, Value, ValueId, ValueSpec, ValueTable};
use super::{Builder, Data, Dataset, DatasetType, Line, ParseOptions, parse_line};
use crate::error::Error;
use crate::name::Name;

/// Chunks with more lines than this are parsed in parallel; below it threads cost more than
/// they save.
const PARALLEL_LINES: usize = 16_384;

/// Lines parsed at once: enough for every core to have work, few enough that the parsed lines
/// (about 100 bytes each) stay a few megabytes.
const CHUNK_LINES: usize = 65_536;

/// How a dataset is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    /// TTL of answers when the data sets none (`$TTL`).
    pub default_ttl: u32,
    /// Options that change what lines mean.
    pub parse: ParseOptions,
    /// Refuse the whole dataset on the first malformed line.
    pub strict: bool,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone)]
pub(crate) struct Warning {
    /// The file.
    pub path: Arc<Path>,
    /// The line, from 1; 0 for the file as a whole.
    pub line: u32,
    /// What is wrong.
    pub message: &'static str,
}

/// When a file was last seen: what a reload compares to decide whether to read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    /// Modification time.
    pub modified: SystemTime,
    /// Size in bytes.
    pub len: u64,
}

impl FileStamp {
    /// The stamp of `path` now.
    pub(crate) fn of(path: &Path) -> std::io::Result<FileStamp> {
        let meta = std::fs::metadata(path)?;
        Ok(FileStamp {
            modified: meta.modified()?,
            len: meta.len(),
        })
    }
}

/// A dataset as loaded, with what the load found.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The dataset.
    pub dataset: Dataset,
    /// Skipped lines.
    pub warnings: Vec<Warning>,
    /// The files and their stamps at load time.
    pub stamps: Vec<(PathBuf, FileStamp)>,
    /// The newest file time, in seconds since 1970: the dataset's version (the SOA serial
    /// when `$SOA` gives 0).
    pub version: u32,
    /// How long the load took.
    pub elapsed: std::time::Duration,
}

/// Reads the files of a dataset of type `kind`, in order, as one dataset.
///
/// # Errors
///
/// [`Error::Read`] when a file cannot be read; [`Error::Strict`] in strict mode when a line is
/// malformed.
pub(crate) fn load(
    kind: DatasetType,
    label: &str,
    files: &[PathBuf],
    options: LoadOptions,
) -> Result<Loaded, Error> {
    let started = Instant::now();
    let mut stamps = Vec::with_capacity(files.len());
    let mut fold = Fold::new(kind, label, options);

    for (index, path) in files.iter().enumerate() {
        let read = |error| Error::Read {
            path: path.clone(),
            error,
        };
        let before = FileStamp::of(path).map_err(read)?;
        let data = std::fs::read(path).map_err(read)?;
        let after = FileStamp::of(path).map_err(read)?;
        if before != after {
            // rbldnsd's rule: data must be renamed into place, never written over.
            let error = std::io::Error::other(
                "file changed while being read; write a temporary file and rename it",
            );
            return Err(read(error));
        }
        stamps.push((path.clone(), before));
        fold.file(Arc::from(path.as_path()), index, &data);
    }

    let version = stamps
        .iter()
        .filter_map(|(_, s)| s.modified.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .max()
        .unwrap_or(0);
    let (dataset, warnings) = fold.finish();
    if let (true, Some(w)) = (options.strict, warnings.first()) {
        return Err(Error::Strict {
            path: w.path.to_path_buf(),
            line: w.line,
            message: w.message.to_owned(),
        });
    }
    Ok(Loaded {
        dataset,
        warnings,
        stamps,
        version,
        elapsed: started.elapsed(),
    })
}

/// A dataset (or a combined dataset's part) being read.
struct Part {
    kind: DatasetType,
    label: Box<str>,
    meta: Meta,
    values: ValueTable,
    builder: Builder,
    default: Value,
    default_id: Option<ValueId>,
    default_fixed: bool,
}

impl Part {
    fn new(kind: DatasetType, label: &str, meta: Meta) -> Option<Part> {
        Some(Part {
            kind,
            label: label.into(),
            meta,
            values: ValueTable::default(),
            builder: Builder::new(kind)?,
            default: Value::fallback(),
            default_id: None,
            default_fixed: false,
        })
    }

    fn start_file(&mut self) {
        if self.kind.resets_default_per_file() {
            self.default = Value::fallback();
            self.default_id = None;
        }
    }

    fn set_default(&mut self, spec: &ValueSpec<'_>) {
        if self.default_fixed {
            return;
        }
        self.default = spec.resolve(&Value::fallback());
        self.default_id = None;
        self.default_fixed = !self.kind.resets_default_per_file();
    }

    fn value_id(&mut self, excluded: bool, spec: Option<&ValueSpec<'_>>) -> ValueId {
        if excluded {
            return EXCLUDED;
        }
        if !self.kind.resets_default_per_file() {
            return TSET_VALUE;
        }
        match spec {
            Some(spec) => self.values.intern(spec.resolve(&self.default)),
            None => *self
                .default_id
                .get_or_insert_with(|| self.values.intern(self.default.clone())),
        }
    }

    fn finish(mut self, warn: &mut dyn FnMut(u64, &'static str)) -> Dataset {
        if !self.kind.resets_default_per_file() {
            // The trivial sets answer with their one value, interned last so it is id 1.
            self.values.intern(self.default.clone());
        }
        self.values.seal();
        let data = self
            .builder
            .finish(&mut |order| warn(order, "duplicated entry"));
        Dataset {
            kind: self.kind,
            label: self.label,
            meta: self.meta,
            values: self.values,
            data,
        }
    }
}

/// A combined dataset's parts and subzones while it is read.
#[derive(Default)]
struct Parts {
    parts: Vec<Part>,
    subzones: Vec<Subzone>,
    current: Option<usize>,
}

/// The in-order pass over all lines of a dataset.
struct Fold {
    kind: DatasetType,
    options: LoadOptions,
    /// The dataset itself; for a combined dataset only its metadata is used.
    base: Part,
    /// Metadata of a combined dataset (a plain dataset keeps it in `base`).
    combined: Option<(Meta, Parts)>,
    warnings: Vec<Warning>,
    paths: Vec<Arc<Path>>,
}

impl Fold {
    fn new(kind: DatasetType, label: &str, options: LoadOptions) -> Fold {
        let meta = Meta::new(options.default_ttl);
        // A combined dataset holds no entries itself; its base part is a placeholder.
        let base_kind = if kind == DatasetType::Combined {
            DatasetType::Generic
        } else {
            kind
        };
        let base = Part::new(base_kind, label, meta.clone())
            .expect("every type but combined has a builder, and combined uses generic's");
        let combined = (kind == DatasetType::Combined).then(|| (meta, Parts::default()));
        Fold {
            kind,
            options,
            base,
            combined,
            warnings: Vec::new(),
            paths: Vec::new(),
        }
    }

    fn warn(&mut self, file: usize, line: u32, message: &'static str) {
        let path = self
            .paths
            .get(file)
            .cloned()
            .unwrap_or_else(|| Arc::from(Path::new("")));
        self.warnings.push(Warning {
            path,
            line,
            message,
        });
    }

    /// Parses and applies all lines of one file.
    fn file<'d>(&mut self, path: Arc<Path>, index: usize, data: &'d [u8]) {
        self.paths.push(path);
        self.base.start_file();
        if let Some((_, parts)) = &mut self.combined {
            // Each file of a combined dataset starts outside any part.
            parts.current = None;
        }

        // Lines are parsed a chunk at a time, so the parsed form of a whole big file never
        // sits in memory at once (it is several times the size of the index it becomes).
        let mut section = DatasetType::Combined;
        let mut lines = line::numbered_lines(data);
        let mut chunk: Vec<(u32, &'d [u8], DatasetType)> = Vec::with_capacity(CHUNK_LINES);
        loop {
            chunk.clear();
            for (number, raw) in lines.by_ref().take(CHUNK_LINES) {
                let kind = match self.combined {
                    Some(_) => section_kind(raw, &mut section),
                    None => self.kind,
                };
                chunk.push((number, raw, kind));
            }
            if chunk.is_empty() {
                return;
            }
            let options = self.options.parse;
            let parse = |&(number, raw, kind): &(u32, &'d [u8], DatasetType)| -> (u32, Line<'d>) {
                (number, parse_line(kind, raw, options))
            };
            let parsed: Vec<(u32, Line<'d>)> = if chunk.len() >= PARALLEL_LINES {
                chunk.par_iter().map(parse).collect()
            } else {
                chunk.iter().map(parse).collect()
            };
            for (number, line) in parsed {
                let order = (u64::try_from(index).unwrap_or(0) << 32) | u64::from(number);
                self.apply(index, number, order, line);
            }
        }
    }

    fn apply(&mut self, file: usize, number: u32, order: u64, line: Line<'_>) {
        match line {
            Line::Skip => {}
            Line::Invalid(message) => self.warn(file, number, message),
            Line::Special(text) => self.special(file, number, text),
            Line::Default(spec) => match self.current_part() {
                Some(part) => part.set_default(&spec),
                None => self.warn(
                    file,
                    number,
                    "invalid/unrecognized entry - specify $DATASET line",
                ),
            },
            Line::Entry {
                entry,
                excluded,
                value,
            } => {
                let Some(part) = self.current_part() else {
                    return self.warn(
                        file,
                        number,
                        "invalid/unrecognized entry - specify $DATASET line",
                    );
                };
                let id = part.value_id(excluded, value.as_ref());
                if let Err(message) = part.builder.add(entry, id, order, &part.meta) {
                    self.warn(file, number, message);
                }
            }
        }
    }

    /// The part that entries go to: the dataset itself, or a combined dataset's current part.
    fn current_part(&mut self) -> Option<&mut Part> {
        match &mut self.combined {
            None => Some(&mut self.base),
            Some((_, parts)) => parts.current.and_then(|i| parts.parts.get_mut(i)),
        }
    }

    fn special(&mut self, file: usize, number: u32, text: &[u8]) {
        let outcome = match &mut self.combined {
            None => special::apply(text, &mut self.base.meta, None),
            Some((meta, parts)) => {
                let part = parts
                    .current
                    .and_then(|i| parts.parts.get_mut(i))
                    .map(|p| &mut p.meta);
                special::apply(text, meta, part)
            }
        };
        match outcome {
            Special::Applied => {}
            Special::Invalid(message) => self.warn(file, number, message),
            Special::Dataset(args) => {
                if let Err(message) = self.start_part(args) {
                    self.warn(file, number, message);
                }
            }
        }
    }

    /// Starts a part of a combined dataset at `$DATASET type[:name] subzone...`.
    fn start_part(&mut self, args: &[u8]) -> Result<(), &'static str> {
        let Some((meta, parts)) = &mut self.combined else {
            return Err("$DATASET is only allowed in a combined dataset");
        };
        parts.current = None;
        let args = strip_comment(args);
        let (spec, mut rest) = first_word(args);
        let kind = part_type(args).ok_or("unknown or nested dataset type in $DATASET")?;
        let name = spec
            .iter()
            .position(|&b| b == b':')
            .map(|at| &spec[at + 1..])
            .unwrap_or_default();
        let name = String::from_utf8_lossy(&name[..name.len().min(20)]).into_owned();
        let label = if name.is_empty() {
            kind.as_str().to_owned()
        } else {
            format!("{kind}:{name}")
        };
        let part = Part::new(kind, &label, Meta::nested(meta))
            .ok_or("dataset type cannot be used inside combined")?;
        let index = parts.parts.len();
        parts.parts.push(part);
        parts.current = Some(index);

        if rest.is_empty() {
            return Err("no subzone(s) specified for dataset, data will be ignored");
        }
        while !rest.is_empty() {
            let (word, after) = first_word(rest);
            rest = after;
            let labels: Vec<Box<[u8]>> = if word == b"@" {
                Vec::new()
            } else {
                let name = Name::parse(word)
                    .ok_or("invalid subzone name in $DATASET")?
                    .to_lowercase();
                name.labels().map(Box::from).collect()
            };
            match parts.subzones.iter_mut().find(|s| s.labels == labels) {
                Some(subzone) => subzone.parts.push(index),
                None => parts.subzones.push(Subzone {
                    labels,
                    parts: vec![index],
                }),
            }
        }
        Ok(())
    }

    fn finish(self) -> (Dataset, Vec<Warning>) {
        let Fold {
            base,
            combined,
            mut warnings,
            paths,
            ..
        } = self;
        let mut duplicates = Vec::new();
        let mut note = |order: u64, message: &'static str| duplicates.push((order, message));
        let dataset = match combined {
            None => base.finish(&mut note),
            Some((meta, parts)) => {
                let finished: Vec<Dataset> = parts
                    .parts
                    .into_iter()
                    .map(|p| p.finish(&mut note))
                    .collect();
                let combined = Combined::new(finished, parts.subzones);
                Dataset {
                    kind: DatasetType::Combined,
                    label: base.label,
                    meta,
                    values: ValueTable::default(),
                    data: Data::Combined(Box::new(combined)),
                }
            }
        };
        for (order, message) in duplicates {
            let file = usize::try_from(order >> 32).unwrap_or(0);
            let path = paths
                .get(file)
                .cloned()
                .unwrap_or_else(|| Arc::from(Path::new("")));
            let line = u32::try_from(order & 0xffff_ffff).unwrap_or(0);
            warnings.push(Warning {
                path,
                line,
                message,
            });
        }
        (dataset, warnings)
    }
}

/// The type a line of a combined dataset is parsed as: that of the `$DATASET` part it is in.
/// `section` carries the current part's type from line to line.
fn section_kind(raw: &[u8], section: &mut DatasetType) -> DatasetType {
    if let line::Kind::Special(text) = line::classify(raw) {
        let (keyword, args) = first_word(text);
        if keyword.eq_ignore_ascii_case(b"dataset") {
            *section = part_type(args).unwrap_or(DatasetType::Combined);
        }
    }
    *section
}

/// The dataset type named in `$DATASET type[:name] ...`, if it may be a part.
fn part_type(args: &[u8]) -> Option<DatasetType> {
    let (spec, _) = first_word(args);
    let kind = spec.split(|&b| b == b':').next().unwrap_or_default();
    let kind: DatasetType = std::str::from_utf8(kind).ok()?.parse().ok()?;
    (kind != DatasetType::Combined).then_some(kind)
}

/// `$DATASET` arguments without a trailing comment (a `#` or `;` after a space).
fn strip_comment(args: &[u8]) -> &[u8] {
    let end = (0..args.len())
        .find(|&i| is_comment(args[i]) && (i == 0 || is_space(args[i - 1])))
        .unwrap_or(args.len());
    &args[..end]
}
