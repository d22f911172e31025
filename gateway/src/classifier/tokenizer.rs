//! Words out of decoded text: the tokens the classifier's features are made of.
//!
//! A word is a run of letters, digits and the few signs that belong inside words and prices
//! (`$ - _ ' .`), lower-cased, with those signs trimmed from its ends. Words shorter than two
//! characters say nothing; words longer than [`MAX_WORD_CHARS`] (base64 leftovers, tracking
//! ids) are replaced by a token naming their first letters and length, as SpamAssassin's
//! tokenizer does, so that a thousand random strings do not become a thousand features.

/// Longest word kept as it is, in characters.
pub const MAX_WORD_CHARS: usize = 24;

/// Most words taken from one text: a message that is a novel is classified by its first pages,
/// which bounds the time and memory of every message.
pub const MAX_WORDS: usize = 4_000;

/// Signs kept inside a word: `$9.99`, `e-mail`, `don't`, `user_name`, `example.com`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '$' | '-' | '_' | '\'' | '.')
}

/// The words of `text`, in order, at most [`MAX_WORDS`].
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| !is_word_char(c)) {
        if out.len() >= MAX_WORDS {
            break;
        }
        let word = raw.trim_matches(|c: char| matches!(c, '-' | '_' | '\'' | '.'));
        if let Some(token) = token_of(word) {
            out.push(token);
        }
    }
    out
}

/// The token for one trimmed word, or `None` when it is too short to mean anything.
fn token_of(word: &str) -> Option<String> {
    let chars = word.chars().count();
    if chars < 2 {
        return None;
    }
    if chars > MAX_WORD_CHARS {
        // The first three letters and the length in tens keep some signal (a long URL path, a
        // base64 run) without one feature per random string.
        let head: String = word.chars().take(3).flat_map(char::to_lowercase).collect();
        return Some(format!("sk:{head}:{}", chars / 10));
    }
    Some(word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_and_trimmed_of_punctuation() {
        assert_eq!(
            words("Buy NOW!!! Only $9.99 -- don't wait... e-mail us."),
            [
                "buy", "now", "only", "$9.99", "don't", "wait", "e-mail", "us"
            ]
        );
    }

    #[test]
    fn single_letters_are_dropped_and_long_runs_summarised() {
        let base64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789";
        assert_eq!(
            words(&format!("a I {base64} ok")),
            ["sk:quj:4".to_string(), "ok".to_string()]
        );
    }

    #[test]
    fn non_ascii_words_are_kept() {
        assert_eq!(words("Grüße aus Köln"), ["grüße", "aus", "köln"]);
    }

    #[test]
    fn a_huge_text_gives_at_most_max_words() {
        let text = "word ".repeat(MAX_WORDS * 2);
        assert_eq!(words(&text).len(), MAX_WORDS);
    }
}
