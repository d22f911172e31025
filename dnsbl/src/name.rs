//! Domain names in wire form (length-prefixed labels), read from zone files and queries.

use std::fmt;

/// The longest name on the wire, the root label included (RFC 1035 section 2.3.4).
pub(crate) const MAX_NAME: usize = 255;

/// The longest label (RFC 1035 section 2.3.4).
pub(crate) const MAX_LABEL: usize = 63;

/// A domain name in wire form, ending with the root label. Case is kept as written.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

impl Name {
    /// The root name.
    pub(crate) fn root() -> Name {
        Name(Box::new([0]))
    }

    /// Parses presentation form as rbldnsd's `dns_ptodn`: labels separated by dots, a trailing
    /// dot optional, `\DDD` and `\X` escapes. Returns `None` for an empty label, a label over
    /// 63 bytes or a name over 255.
    pub(crate) fn parse(text: &[u8]) -> Option<Name> {
        if text == b"." {
            return Some(Name::root());
        }
        let mut wire = Vec::with_capacity(text.len() + 2);
        let mut label_start = 0;
        wire.push(0);
        let mut i = 0;
        while i < text.len() {
            let byte = match text[i] {
                b'.' => {
                    close_label(&mut wire, label_start)?;
                    label_start = wire.len();
                    wire.push(0);
                    i += 1;
                    if i == text.len() {
                        wire.pop();
                        wire.push(0);
                        return finish(wire);
                    }
                    continue;
                }
                b'\\' => {
                    let (byte, used) = unescape(&text[i + 1..])?;
                    wire.push(byte);
                    i += used;
                    continue;
                }
                byte => byte,
            };
            wire.push(byte);
            i += 1;
        }
        close_label(&mut wire, label_start)?;
        wire.push(0);
        finish(wire)
    }

    /// The wire form, root label included.
    pub(crate) fn wire(&self) -> &[u8] {
        &self.0
    }

    /// The labels, leftmost first, without length bytes.
    pub(crate) fn labels(&self) -> Labels<'_> {
        Labels { rest: &self.0 }
    }

    /// The number of labels, the root not counted.
    pub(crate) fn label_count(&self) -> usize {
        self.labels().count()
    }

    /// The name in ASCII lower case (`dns_dntol`).
    pub(crate) fn to_lowercase(&self) -> Name {
        Name(self.0.to_ascii_lowercase().into())
    }

    /// Whether this is the root name.
    pub(crate) fn is_root(&self) -> bool {
        self.0.len() == 1
    }
}

fn close_label(wire: &mut [u8], label_start: usize) -> Option<()> {
    let len = wire.len() - label_start - 1;
    if len == 0 || len > MAX_LABEL {
        return None;
    }
    wire[label_start] = u8::try_from(len).ok()?;
    Some(())
}

fn finish(wire: Vec<u8>) -> Option<Name> {
    (wire.len() <= MAX_NAME).then(|| Name(wire.into()))
}

/// Reads the escape after a backslash: three decimal digits or one literal byte.
fn unescape(s: &[u8]) -> Option<(u8, usize)> {
    match s {
        [a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let value = u32::from(a - b'0') * 100 + u32::from(b - b'0') * 10 + u32::from(c - b'0');
            Some((u8::try_from(value).ok()?, 4))
        }
        [byte, ..] => Some((*byte, 2)),
        [] => None,
    }
}

/// Iterator over the labels of a wire-form name.
pub(crate) struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            return None;
        }
        let (label, rest) = tail.split_at(len);
        self.rest = rest;
        Some(label)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write_label(f, label)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// Writes one label in presentation form, escaping dots, backslashes and non-printables.
pub(crate) fn write_label(f: &mut impl fmt::Write, label: &[u8]) -> fmt::Result {
    for &b in label {
        match b {
            b'.' | b'\\' => write!(f, "\\{}", char::from(b))?,
            0x21..=0x7e => f.write_char(char::from(b))?,
            _ => write!(f, "\\{b:03}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_trailing_dot() {
        let a = Name::parse(b"ns1.bl.test").expect("valid");
        let b = Name::parse(b"ns1.bl.test.").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.wire(), b"\x03ns1\x02bl\x04test\x00");
        assert_eq!(a.to_string(), "ns1.bl.test");
        assert_eq!(a.label_count(), 3);
    }

    #[test]
    fn empty_and_oversized_labels_are_refused() {
        assert_eq!(Name::parse(b"a..b"), None);
        assert_eq!(Name::parse(&[b'x'; 64]), None);
        let long = [b"abcdefghij.".as_slice(); 24].concat();
        assert_eq!(Name::parse(&long), None);
    }

    #[test]
    fn escapes_give_their_byte() {
        let name = Name::parse(b"a\\.b.c\\065").expect("valid");
        assert_eq!(name.wire(), b"\x03a.b\x02cA\x00");
        assert_eq!(name.to_string(), "a\\.b.cA");
    }
}
