//! The split patterns of cl100k_base and o200k_base, hand-written for ASCII text.
//!
//! Most requests are plain ASCII, and on them the lazy DFA of [`crate::bpe`] cost more than
//! the rest of a count: a 33-byte prompt took about 1,800 instructions to split (callgrind).
//! On ASCII the patterns' Unicode classes reduce to byte tests (`\p{L}` is `[A-Za-z]`, `\p{Lu}`
//! `[A-Z]`, `\p{Ll}` `[a-z]`, `\p{N}` `[0-9]`, `\s` is tab, line feed, vertical tab, form
//! feed, carriage return and space; `\p{Lt}`, `\p{Lm}`, `\p{Lo}` and `\p{M}` are empty), and
//! each alternative, tried in order as a backtracking engine would, becomes a few scans.
//! Each function returns where the piece starting at `start` ends, exactly as the DFA's
//! anchored leftmost-first search followed by `Pretokenizer::next_piece_end`'s look-ahead
//! rule would; the tests check that on random ASCII text for both encodings.

/// `\s` on ASCII.
fn is_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

fn is_newline(byte: u8) -> bool {
    matches!(byte, b'\r' | b'\n')
}

/// `[^\r\n\p{L}\p{N}]`: the optional character before a word.
fn is_before_word(byte: u8) -> bool {
    !is_newline(byte) && !byte.is_ascii_alphanumeric()
}

/// `[^\s\p{L}\p{N}]`: punctuation, symbols and control characters.
fn is_symbol(byte: u8) -> bool {
    !is_space(byte) && !byte.is_ascii_alphanumeric()
}

/// The end of the run of bytes from `start` that pass `test`.
fn run(text: &[u8], start: usize, test: impl Fn(u8) -> bool) -> usize {
    text[start..]
        .iter()
        .position(|&byte| !test(byte))
        .map_or(text.len(), |offset| start + offset)
}

/// Length of the contraction at `at`, if any: `'s`, `'t`, `'m`, `'d` (2) or `'re`, `'ve`,
/// `'ll` (3), in either case.
fn contraction(text: &[u8], at: usize) -> usize {
    if text.get(at) != Some(&b'\'') {
        return 0;
    }
    let lower = |offset: usize| text.get(at + offset).map(u8::to_ascii_lowercase);
    match (lower(1), lower(2)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => 2,
        (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 3,
        _ => 0,
    }
}

/// A whitespace run from `start` (which is whitespace) to `end`: the piece the pattern's
/// whitespace alternatives take when no earlier one matched. A run holding a line break
/// ends after its last one (o200k's `\s*[\r\n]+` and cl100k's `\s*[\r\n]` end at the same
/// place); otherwise the look-ahead rule below applies.
fn whitespace_piece(text: &[u8], start: usize, end: usize) -> usize {
    if let Some(last) = text[start..end].iter().rposition(|&byte| is_newline(byte)) {
        return start + last + 1;
    }
    // `\s+(?!\S)|\s+`: a run before a non-space leaves its last character to the next
    // piece, unless it is that one character.
    if end < text.len() && end - start > 1 {
        end - 1
    } else {
        end
    }
}

/// A run of symbols after an optional space: `' '?[^\s\p{L}\p{N}]+` and the line breaks
/// (`[\r\n]*`, and for o200k slashes too) that follow it.
fn symbol_piece(text: &[u8], start: usize, trailing: impl Fn(u8) -> bool) -> Option<usize> {
    let first = start + usize::from(text[start] == b' ');
    if first >= text.len() || !is_symbol(text[first]) {
        return None;
    }
    let symbols = run(text, first, is_symbol);
    Some(run(text, symbols, trailing))
}

/// o200k_base: where the piece of ASCII `text` starting at `start` ends.
pub(crate) fn o200k_piece_end(text: &[u8], start: usize) -> usize {
    // [^\r\n\p{L}\p{N}]?[\p{Lu}...]*[\p{Ll}...]+ contraction?
    // | [^\r\n\p{L}\p{N}]?[\p{Lu}...]+[\p{Ll}...]* contraction?
    let word = start + usize::from(is_before_word(text[start]));
    let upper = run(text, word, |byte| byte.is_ascii_uppercase());
    let lower = run(text, upper, |byte| byte.is_ascii_lowercase());
    if lower > word {
        return lower + contraction(text, lower);
    }
    // \p{N}{1,3}
    if text[start].is_ascii_digit() {
        return run(text, start, |byte| byte.is_ascii_digit()).min(start + 3);
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n/]*
    if let Some(end) = symbol_piece(text, start, |byte| is_newline(byte) || byte == b'/') {
        return end;
    }
    // \s*[\r\n]+ | \s+(?!\S) | \s+
    whitespace_piece(text, start, run(text, start, is_space))
}

/// cl100k_base: where the piece of ASCII `text` starting at `start` ends.
pub(crate) fn cl100k_piece_end(text: &[u8], start: usize) -> usize {
    // '(?i:[sdmt]|ll|ve|re)
    let contracted = contraction(text, start);
    if contracted > 0 {
        return start + contracted;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    let word = start + usize::from(is_before_word(text[start]));
    let letters = run(text, word, |byte| byte.is_ascii_alphabetic());
    if letters > word {
        return letters;
    }
    // \p{N}{1,3}
    if text[start].is_ascii_digit() {
        return run(text, start, |byte| byte.is_ascii_digit()).min(start + 3);
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n]*
    if let Some(end) = symbol_piece(text, start, is_newline) {
        return end;
    }
    // \s+$ | \s*[\r\n] | \s+(?!\S) | \s+
    let end = run(text, start, is_space);
    if end == text.len() {
        return end;
    }
    whitespace_piece(text, start, end)
}
