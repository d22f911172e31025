//! Listing values: the A record and TXT template an entry answers with, as rbldnsd writes them
//! (`:127.0.0.2:Listed, see http://example.com/?$`), and the `$` substitution in TXT.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::addr::ip4_loose;
use super::line::{is_comment, skip_space};

/// The A value when nothing says otherwise (rbldnsd's default).
pub(crate) const DEFAULT_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// rbldnsd keeps at most 255 bytes of a TXT template, the most one DNS character-string holds.
pub(crate) const MAX_TXT: usize = 255;

/// What one listing answers: an A address and an optional TXT template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Value {
    /// The A record's address.
    pub a: Ipv4Addr,
    /// The TXT template; empty means no TXT record.
    pub txt: Box<[u8]>,
}

impl Value {
    /// rbldnsd's default: 127.0.0.2 and no TXT.
    pub(crate) fn fallback() -> Value {
        Value {
            a: DEFAULT_A,
            txt: Box::default(),
        }
    }
}

/// A value as written on a line, before the default in scope fills the parts it leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueSpec<'a> {
    /// The A address, if the line gives one (`:3:` or `:127.0.0.3:`).
    pub a: Option<Ipv4Addr>,
    /// The TXT template: `None` takes the default's, `Some(b"")` means no TXT at all.
    pub txt: Option<&'a [u8]>,
}

impl ValueSpec<'_> {
    /// Fills the omitted parts from `default`.
    pub(crate) fn resolve(&self, default: &Value) -> Value {
        Value {
            a: self.a.unwrap_or(default.a),
            txt: match self.txt {
                Some(txt) => txt.into(),
                None => default.txt.clone(),
            },
        }
    }
}

/// Parses a value as rbldnsd's `parse_a_txt`: `:A:TXT`, `:A:` (no TXT), `:A` (the default's
/// TXT), or `TXT` alone (the default's A). A one-number A such as `:5` means 127.0.0.5.
pub(crate) fn parse_value(s: &[u8]) -> Result<ValueSpec<'_>, &'static str> {
    let Some(after) = s.strip_prefix(b":") else {
        return Ok(ValueSpec {
            a: None,
            txt: Some(truncate(s)),
        });
    };
    let (mut a, octets, rest) = ip4_loose(after).ok_or("invalid A RR")?;
    if a == 0 {
        return Err("invalid A RR");
    }
    if octets == 8 {
        a |= 0x7f00_0000;
    }
    let rest = skip_space(rest);
    match rest.split_first() {
        Some((b':', txt)) => Ok(ValueSpec {
            a: Some(a.into()),
            txt: Some(truncate(skip_space(txt))),
        }),
        None => Ok(ValueSpec {
            a: Some(a.into()),
            txt: None,
        }),
        Some(_) => Err("unrecognized value for an entry"),
    }
}

fn truncate(txt: &[u8]) -> &[u8] {
    &txt[..txt.len().min(MAX_TXT)]
}

/// Whether the rest of an entry line holds a value (not blank, not a comment).
pub(crate) fn has_value(rest: &[u8]) -> bool {
    let rest = skip_space(rest);
    !rest.is_empty() && !is_comment(rest[0])
}

/// The values of one dataset, each stored once; entries refer to them by [`ValueId`].
#[derive(Debug, Default)]
pub(crate) struct ValueTable {
    values: Vec<Value>,
    ids: HashMap<Value, ValueId>,
}

/// An index into a [`ValueTable`]. Id 0 is reserved for exclusions (`!entry`), so that they
/// sort before every listing of the same key and win at equal specificity, as in rbldnsd.
pub(crate) type ValueId = u32;

/// The id that marks an exclusion.
pub(crate) const EXCLUDED: ValueId = 0;

impl ValueTable {
    /// Returns the id of `value`, adding it if new.
    pub(crate) fn intern(&mut self, value: Value) -> ValueId {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        self.values.push(value.clone());
        let id = ValueId::try_from(self.values.len()).unwrap_or(ValueId::MAX);
        self.ids.insert(value, id);
        id
    }

    /// The value of a listing id (never [`EXCLUDED`]).
    pub(crate) fn value(&self, id: ValueId) -> Option<&Value> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.values.get(index)
    }

    /// Drops the lookup map once loading is done; only ids are needed to answer.
    pub(crate) fn seal(&mut self) {
        self.ids = HashMap::new();
        self.values.shrink_to_fit();
    }

    /// Gives every value the A address `a` (a configured return code for the dataset).
    pub(crate) fn override_a(&mut self, a: Ipv4Addr) {
        for value in &mut self.values {
            value.a = a;
        }
    }

    /// Heap bytes held, for the bytes-per-entry figure.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<Value>()
            + self.values.iter().map(|v| v.txt.len()).sum::<usize>()
    }
}

/// Substitution variables `$0` to `$9` of a dataset (the first assignment of each wins).
pub(crate) type Substitutions = [Option<Box<[u8]>>; 10];

/// Expands a TXT template into `out`: `$` becomes `subject` (the listed address or domain),
/// `$$` a dollar sign, `$0`..`$9` the dataset's variables (kept as written when unset).
/// The result is cut at [`MAX_TXT`] bytes.
pub(crate) fn expand_txt(template: &[u8], subject: &[u8], vars: &Substitutions, out: &mut Vec<u8>) {
    out.clear();
    let mut rest = template;
    while let Some(at) = rest.iter().position(|&b| b == b'$') {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + 1..];
        match rest.first() {
            Some(b'$') => {
                out.push(b'$');
                rest = &rest[1..];
            }
            Some(&d) if d.is_ascii_digit() => {
                match &vars[usize::from(d - b'0')] {
                    Some(var) => out.extend_from_slice(var),
                    None => out.extend_from_slice(&[b'$', d]),
                }
                rest = &rest[1..];
            }
            _ => out.extend_from_slice(subject),
        }
        if out.len() >= MAX_TXT {
            break;
        }
    }
    out.extend_from_slice(rest);
    out.truncate(MAX_TXT);
}

/// Writes `addr` in dotted decimal into `buf` without allocating; returns the text.
pub(crate) fn ip4_text(addr: u32, buf: &mut [u8; 15]) -> &[u8] {
    let mut len = 0;
    for (i, octet) in addr.to_be_bytes().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ValueSpec<'_> {
        parse_value(s.as_bytes()).expect("valid value")
    }

    #[test]
    fn a_and_txt_forms_follow_rbldnsd() {
        assert_eq!(spec(":5").a, Some(Ipv4Addr::new(127, 0, 0, 5)));
        assert_eq!(spec(":5").txt, None);
        assert_eq!(spec(":6:").txt, Some(&b""[..]));
        assert_eq!(spec(":127.0.0.3:Listed $").txt, Some(&b"Listed $"[..]));
        assert_eq!(
            spec("127.0.0.3"),
            ValueSpec {
                a: None,
                txt: Some(b"127.0.0.3")
            }
        );
        assert!(parse_value(b":0:x").is_err());
        assert!(parse_value(b":5 x").is_err());
    }

    #[test]
    fn dollar_is_replaced_by_the_subject_and_variables() {
        let mut vars: Substitutions = Default::default();
        vars[1] = Some(b"see http://x".as_slice().into());
        let mut out = Vec::new();
        expand_txt(b"Listed $ $1 cost $$5 $2", b"10.0.0.1", &vars, &mut out);
        assert_eq!(out, b"Listed 10.0.0.1 see http://x cost $5 $2");
    }

    #[test]
    fn addresses_are_written_in_dotted_decimal() {
        let mut buf = [0u8; 15];
        assert_eq!(ip4_text(0x0a00_6405, &mut buf), b"10.0.100.5");
        assert_eq!(ip4_text(u32::MAX, &mut buf), b"255.255.255.255");
    }

    #[test]
    fn expanded_txt_is_cut_at_255_bytes() {
        let mut out = Vec::new();
        let long = vec![b'y'; 250];
        let mut template = long.clone();
        template.extend_from_slice(b" $");
        expand_txt(&template, b"192.0.2.100", &Default::default(), &mut out);
        assert_eq!(out.len(), MAX_TXT);
    }
}
