//! ClamAV body signatures (`.ndb`): `NAME:TARGET:OFFSET:HEX[:MINFL[:MAXFL]]`, a hex pattern
//! with wildcards that may start anywhere in a file, or at a given offset.
//!
//! Supported in the pattern: hex bytes; `??`, `a?` and `?a` (any byte, any high or low
//! nibble); `*` (any number of bytes); `{n}`, `{-n}`, `{n-}`, `{n-m}` and `[n-m]` (gaps of
//! so many bytes); `(aa|bb)` alternatives of any lengths; `!(aa|bb)` negated single bytes.
//! Supported offsets: `*`, `n`, `n,m` (from n to n+m), `EOF-n` and `EOF-n,m`. Target types
//! are listed at [`applies_to`](BodySignature::applies_to).
//!
//! Not supported, and skipped with a warning at load: offsets relative to a PE entry point or
//! section (`EP+n`, `Sx+n`, `SL+n`, `SE`), the boundary anchors `(B)`, `(L)`, `(W)`, negated
//! alternatives of several bytes, target types this scanner does not tell apart, and patterns
//! without two fixed bytes in a row (nothing to anchor a search on; ClamAV refuses those too).

use super::hash::decode_hex;

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// This byte.
    Byte(u8),
    /// A byte whose bits under `mask` equal `value` (`??` has mask 0).
    Masked {
        /// The bits required.
        value: u8,
        /// Which bits are compared.
        mask: u8,
    },
    /// One byte of a set (256 bits).
    Set([u64; 4]),
    /// One of these byte strings.
    Alternatives(Vec<Vec<u8>>),
    /// Between `min` and `max` bytes of anything (`None`: no upper bound).
    Gap {
        /// Fewest bytes skipped.
        min: usize,
        /// Most bytes skipped.
        max: Option<usize>,
    },
}

/// Where a match must start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// Anywhere.
    Any,
    /// From `from` to `from + shift` bytes into the file.
    Start {
        /// First allowed start.
        from: usize,
        /// How much later it may be.
        shift: usize,
    },
    /// From `back` bytes before the end, up to `shift` bytes later.
    End {
        /// Bytes before the end of the file.
        back: usize,
        /// How much later it may be.
        shift: usize,
    },
}

impl Offset {
    /// Whether a match may start at `start` in a file of `len` bytes.
    pub fn allows(self, start: usize, len: usize) -> bool {
        match self {
            Offset::Any => true,
            Offset::Start { from, shift } => start >= from && start - from <= shift,
            Offset::End { back, shift } => {
                let Some(from) = len.checked_sub(back) else {
                    return false;
                };
                start >= from && start - from <= shift
            }
        }
    }
}

/// A parsed `.ndb` signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySignature {
    /// Its name.
    pub name: String,
    /// ClamAV's target type.
    pub target: u8,
    /// Where a match may start.
    pub offset: Offset,
    /// The pattern.
    pub elements: Vec<Element>,
    /// The longest run of fixed bytes: its first element and length. The search looks for
    /// this run, then checks the rest around it.
    pub anchor: (usize, usize),
}

/// Why a line did not give a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineIssue {
    /// The line is malformed: the file is refused.
    Malformed(String),
    /// The line is valid ClamAV but uses something this scanner lacks: it is skipped.
    Unsupported(String),
}

/// Shortest anchor: ClamAV requires two fixed bytes too, and one byte would make every
/// position of every file a candidate.
const MIN_ANCHOR: usize = 2;

/// Target types this scanner can tell apart (see [`BodySignature::applies_to`]).
const SUPPORTED_TARGETS: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 12];

impl BodySignature {
    /// Parses one `.ndb` line; `Ok(None)` for blank lines and `#` comments.
    ///
    /// # Errors
    /// [`LineIssue`]: malformed, or using what is not supported.
    pub fn parse(line: &str) -> Result<Option<BodySignature>, LineIssue> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        let malformed = |detail: String| LineIssue::Malformed(detail);
        let fields: Vec<&str> = line.split(':').collect();
        if !(4..=6).contains(&fields.len()) {
            return Err(malformed(
                "expected NAME:TARGET:OFFSET:HEX[:MINFL[:MAXFL]]".to_owned(),
            ));
        }
        let name = fields[0];
        if name.is_empty() {
            return Err(malformed("the signature has no name".to_owned()));
        }
        let target: u8 = fields[1]
            .parse()
            .map_err(|_| malformed(format!("target type {:?} is not a number", fields[1])))?;
        if !SUPPORTED_TARGETS.contains(&target) {
            return Err(LineIssue::Unsupported(format!("target type {target}")));
        }
        let offset = parse_offset(fields[2])?;
        let elements = parse_pattern(fields[3])?;
        let anchor = longest_fixed_run(&elements);
        if anchor.1 < MIN_ANCHOR {
            return Err(LineIssue::Unsupported(
                "no two fixed bytes in a row to anchor the search".to_owned(),
            ));
        }
        Ok(Some(BodySignature {
            name: name.to_owned(),
            target,
            offset,
            elements,
            anchor,
        }))
    }

    /// The anchor's bytes.
    pub fn anchor_bytes(&self) -> Vec<u8> {
        let (start, len) = self.anchor;
        self.elements[start..start + len]
            .iter()
            .filter_map(|element| match element {
                Element::Byte(byte) => Some(*byte),
                _ => None,
            })
            .collect()
    }
}

/// `*`, `n`, `n,m`, `EOF-n`, `EOF-n,m`.
fn parse_offset(text: &str) -> Result<Offset, LineIssue> {
    if text == "*" {
        return Ok(Offset::Any);
    }
    let (base, shift) = match text.split_once(',') {
        Some((base, shift)) => (base, shift),
        None => (text, "0"),
    };
    let number = |digits: &str| {
        digits
            .parse::<usize>()
            .map_err(|_| LineIssue::Malformed(format!("offset {text:?} is not understood")))
    };
    let shift = number(shift)?;
    if let Some(back) = base.strip_prefix("EOF-") {
        return Ok(Offset::End {
            back: number(back)?,
            shift,
        });
    }
    if base.starts_with("EP") || base.starts_with('S') || base.starts_with("VI") {
        return Err(LineIssue::Unsupported(format!("offset {text:?}")));
    }
    Ok(Offset::Start {
        from: number(base)?,
        shift,
    })
}

/// Parses the hex pattern into elements, adjacent gaps merged.
fn parse_pattern(text: &str) -> Result<Vec<Element>, LineIssue> {
    let malformed = |detail: &str| LineIssue::Malformed(format!("pattern: {detail}"));
    let bytes = text.as_bytes();
    let mut elements = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' => {
                push_gap(&mut elements, 0, None);
                i += 1;
            }
            b'{' => {
                let end = find(bytes, i, b'}').ok_or_else(|| malformed("{ without }"))?;
                let (min, max) = parse_range(&text[i + 1..end], true)
                    .ok_or_else(|| malformed("a {gap} is not n, -n, n- or n-m"))?;
                push_gap(&mut elements, min, max);
                i = end + 1;
            }
            b'[' => {
                let end = find(bytes, i, b']').ok_or_else(|| malformed("[ without ]"))?;
                let (min, max) = parse_range(&text[i + 1..end], false)
                    .ok_or_else(|| malformed("a [range] is not n-m"))?;
                push_gap(&mut elements, min, max);
                i = end + 1;
            }
            b'!' if bytes.get(i + 1) == Some(&b'(') => {
                let end = find(bytes, i, b')').ok_or_else(|| malformed("( without )"))?;
                elements.push(negated(&text[i + 2..end])?);
                i = end + 1;
            }
            b'(' => {
                let end = find(bytes, i, b')').ok_or_else(|| malformed("( without )"))?;
                elements.push(alternatives(&text[i + 1..end])?);
                i = end + 1;
            }
            _ => {
                let pair = text
                    .get(i..i + 2)
                    .ok_or_else(|| malformed("odd number of hex digits"))?;
                elements.push(nibbles(pair).ok_or_else(|| malformed("not hex"))?);
                i += 2;
            }
        }
    }
    if !matches!(elements.first(), Some(e) if !matches!(e, Element::Gap { .. })) {
        return Err(malformed("must start with a byte"));
    }
    if matches!(elements.last(), Some(Element::Gap { .. })) {
        return Err(malformed("must end with a byte"));
    }
    Ok(elements)
}

fn find(bytes: &[u8], from: usize, wanted: u8) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == wanted)
        .map(|p| from + p)
}

/// A gap after another gap becomes one gap.
fn push_gap(elements: &mut Vec<Element>, min: usize, max: Option<usize>) {
    if let Some(Element::Gap {
        min: last_min,
        max: last_max,
    }) = elements.last_mut()
    {
        *last_min += min;
        *last_max = last_max.zip(max).map(|(a, b)| a + b);
        return;
    }
    elements.push(Element::Gap { min, max });
}

/// `n`, `-n`, `n-`, `n-m` (the open forms only in braces).
fn parse_range(text: &str, braces: bool) -> Option<(usize, Option<usize>)> {
    let Some((low, high)) = text.split_once('-') else {
        let n = text.parse().ok()?;
        return braces.then_some((n, Some(n)));
    };
    let min = if low.is_empty() && braces {
        0
    } else {
        low.parse().ok()?
    };
    let max = if high.is_empty() && braces {
        None
    } else {
        Some(high.parse().ok()?)
    };
    if max.is_some_and(|max| max < min) {
        return None;
    }
    Some((min, max))
}

/// Two characters: hex digits or `?`.
fn nibbles(pair: &str) -> Option<Element> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let (high, low) = (pair.as_bytes()[0], pair.as_bytes()[1]);
    Some(match (high, low) {
        (b'?', b'?') => Element::Masked { value: 0, mask: 0 },
        (b'?', low) => Element::Masked {
            value: digit(low)?,
            mask: 0x0f,
        },
        (high, b'?') => Element::Masked {
            value: digit(high)? << 4,
            mask: 0xf0,
        },
        (high, low) => Element::Byte(digit(high)? << 4 | digit(low)?),
    })
}

/// `(aa|bb|ccdd)`: a set when every choice is one byte.
fn alternatives(text: &str) -> Result<Element, LineIssue> {
    if matches!(text, "B" | "L" | "W") {
        return Err(LineIssue::Unsupported(format!("boundary anchor ({text})")));
    }
    let choices = choices(text)?;
    if choices.iter().all(|choice| choice.len() == 1) {
        let mut set = [0u64; 4];
        for choice in &choices {
            set_bit(&mut set, choice[0]);
        }
        return Ok(Element::Set(set));
    }
    Ok(Element::Alternatives(choices))
}

/// `!(aa|bb)`: any byte but these.
fn negated(text: &str) -> Result<Element, LineIssue> {
    let choices = choices(text)?;
    if choices.iter().any(|choice| choice.len() != 1) {
        return Err(LineIssue::Unsupported(
            "negated alternatives of several bytes".to_owned(),
        ));
    }
    let mut set = [u64::MAX; 4];
    for choice in &choices {
        let byte = choice[0];
        set[usize::from(byte >> 6)] &= !(1u64 << (byte & 63));
    }
    Ok(Element::Set(set))
}

fn choices(text: &str) -> Result<Vec<Vec<u8>>, LineIssue> {
    text.split('|')
        .map(|choice| {
            if choice.contains('?') {
                return Err(LineIssue::Unsupported(
                    "wildcards inside alternatives".to_owned(),
                ));
            }
            decode_hex(choice).ok_or_else(|| {
                LineIssue::Malformed(format!("alternative {choice:?} is not hex bytes"))
            })
        })
        .collect()
}

/// Sets `byte`'s bit in a 256-bit set.
pub fn set_bit(set: &mut [u64; 4], byte: u8) {
    set[usize::from(byte >> 6)] |= 1u64 << (byte & 63);
}

/// Whether `byte` is in a 256-bit set.
pub fn has_bit(set: &[u64; 4], byte: u8) -> bool {
    set[usize::from(byte >> 6)] & (1u64 << (byte & 63)) != 0
}

/// The longest run of [`Element::Byte`]: its start and length (the first one on a tie).
fn longest_fixed_run(elements: &[Element]) -> (usize, usize) {
    let mut best = (0, 0);
    let mut run_start = 0;
    for (index, element) in elements.iter().enumerate() {
        if !matches!(element, Element::Byte(_)) {
            run_start = index + 1;
            continue;
        }
        let len = index + 1 - run_start;
        if len > best.1 {
            best = (run_start, len);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> BodySignature {
        BodySignature::parse(line)
            .expect("valid signature")
            .expect("not a comment")
    }

    #[test]
    fn parses_plain_hex_anywhere() {
        let signature = parse("Test.Hello:0:*:68656c6c6f");
        assert_eq!(signature.name, "Test.Hello");
        assert_eq!(signature.offset, Offset::Any);
        assert_eq!(signature.anchor_bytes(), b"hello");
    }

    #[test]
    fn parses_wildcards_gaps_and_alternatives() {
        let signature = parse("T:0:*:4142??4?{2}(61|62)*{-3}(6364|65)!(00)5a5a");
        use Element::*;
        assert_eq!(signature.elements[0], Byte(0x41));
        assert_eq!(signature.elements[2], Masked { value: 0, mask: 0 });
        assert_eq!(
            signature.elements[3],
            Masked {
                value: 0x40,
                mask: 0xf0
            }
        );
        assert_eq!(
            signature.elements[4],
            Gap {
                min: 2,
                max: Some(2)
            }
        );
        assert!(matches!(signature.elements[5], Set(_)));
        assert_eq!(signature.elements[6], Gap { min: 0, max: None });
        assert_eq!(
            signature.elements[7],
            Alternatives(vec![b"cd".to_vec(), b"e".to_vec()])
        );
        assert!(matches!(signature.elements[8], Set(set) if !has_bit(&set, 0) && has_bit(&set, 1)));
        assert_eq!(signature.anchor, (0, 2));
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(
            parse("T:0:0:4d5a").offset,
            Offset::Start { from: 0, shift: 0 }
        );
        assert_eq!(
            parse("T:0:10,20:4d5a").offset,
            Offset::Start {
                from: 10,
                shift: 20
            }
        );
        assert_eq!(
            parse("T:0:EOF-4:4d5a").offset,
            Offset::End { back: 4, shift: 0 }
        );
    }

    #[test]
    fn offsets_allow_the_right_starts() {
        let exact = Offset::Start { from: 3, shift: 0 };
        assert!(exact.allows(3, 10) && !exact.allows(4, 10));
        let range = Offset::Start { from: 3, shift: 2 };
        assert!(range.allows(5, 10) && !range.allows(6, 10) && !range.allows(2, 10));
        let end = Offset::End { back: 4, shift: 0 };
        assert!(end.allows(6, 10) && !end.allows(5, 10) && !end.allows(0, 2));
    }

    #[test]
    fn skips_what_is_not_supported() {
        for line in [
            "T:0:EP+0:4d5a",
            "T:0:S1+4:4d5a",
            "T:0:*:4d5a(B)4d5a",
            "T:0:*:4d5a!(4142|43)4d5a",
            "T:11:*:4d5a",
            "T:0:*:4d??5a",
        ] {
            assert!(
                matches!(BodySignature::parse(line), Err(LineIssue::Unsupported(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn refuses_malformed_lines() {
        for line in [
            "T:0:*:4d5",
            "T:0:*:zz",
            "T:0:*",
            "T:x:*:4d5a",
            ":0:*:4d5a",
            "T:0:*:4d5a{3",
            "T:0:*:*4d5a",
            "T:0:*:4d5a*",
            "T:0:*:4d5a{5-2}4d",
            "T:0:later:4d5a",
        ] {
            assert!(
                matches!(BodySignature::parse(line), Err(LineIssue::Malformed(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn adjacent_gaps_merge() {
        let signature = parse("T:0:*:4142{2}{1-3}4344");
        assert_eq!(
            signature.elements[2],
            Element::Gap {
                min: 3,
                max: Some(5)
            }
        );
        let signature = parse("T:0:*:4142{2}*4344");
        assert_eq!(signature.elements[2], Element::Gap { min: 2, max: None });
    }

    #[test]
    fn comments_are_not_signatures() {
        assert_eq!(BodySignature::parse("# note"), Ok(None));
        assert_eq!(BodySignature::parse("   "), Ok(None));
    }
}
