//! Lines of a dataset file as rbldnsd reads them: trimmed, comments and blank lines skipped,
//! `$` lines set apart as special entries.

/// Whether `b` starts a comment (`#` or `;`).
pub(crate) fn is_comment(b: u8) -> bool {
    b == b'#' || b == b';'
}

/// Whether `b` separates words (space or tab, as rbldnsd's ISSPACE).
pub(crate) fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading spaces and tabs.
pub(crate) fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

/// Whether what follows an address may end it: nothing, a space, a comment or a `:` value.
pub(crate) fn ends_address(rest: &[u8]) -> bool {
    match rest.first() {
        None => true,
        Some(&b) => is_space(b) || is_comment(b) || b == b':',
    }
}

/// Splits off the first word (up to a space or tab) and the rest after the spaces.
pub(crate) fn first_word(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|&&b| !is_space(b)).count();
    (&s[..n], skip_space(&s[n..]))
}

/// What a line is before any dataset reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// Blank or a comment.
    Skip,
    /// A `$` special entry (also written `#$`, `;$` or `:$`), without the marker.
    Special(&'a [u8]),
    /// Anything else: an entry or a default value for the dataset to read.
    Data(&'a [u8]),
}

/// Trims one raw line (without its newline) and classifies it.
pub(crate) fn classify(raw: &[u8]) -> Kind<'_> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let start = raw.iter().take_while(|&&b| is_space(b)).count();
    let end = raw.len() - raw.iter().rev().take_while(|&&b| is_space(b)).count();
    let line = if start < end {
        &raw[start..end]
    } else {
        &[][..]
    };
    match line {
        [] => Kind::Skip,
        [b'$', rest @ ..] => Kind::Special(rest),
        [b'#' | b';' | b':', b'$', rest @ ..] => Kind::Special(rest),
        [first, ..] if is_comment(*first) => Kind::Skip,
        _ => Kind::Data(line),
    }
}

/// The lines of file contents, numbered from 1. A last line without a newline counts.
pub(crate) fn numbered_lines(data: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let lines = (!data.is_empty()).then(|| body.split(|&b| b == b'\n'));
    lines
        .into_iter()
        .flatten()
        .zip(1u32..)
        .map(|(line, n)| (n, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_specials_are_told_apart() {
        assert_eq!(classify(b"   "), Kind::Skip);
        assert_eq!(classify(b"# note"), Kind::Skip);
        assert_eq!(classify(b"; note"), Kind::Skip);
        assert_eq!(classify(b"$TTL 1h "), Kind::Special(b"TTL 1h"));
        assert_eq!(classify(b"#$NS 0 ns"), Kind::Special(b"NS 0 ns"));
        assert_eq!(
            classify(b"\t10.0.0.1 :2:x \r"),
            Kind::Data(b"10.0.0.1 :2:x")
        );
    }

    #[test]
    fn lines_are_numbered_from_one_with_or_without_final_newline() {
        let lines: Vec<_> = numbered_lines(b"a\nb\n").collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, &b"b"[..])]);
        assert_eq!(numbered_lines(b"a\n\nc").count(), 3);
        assert_eq!(numbered_lines(b"").count(), 0);
        assert_eq!(numbered_lines(b"\n").count(), 1);
    }
}
