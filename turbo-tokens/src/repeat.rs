//! Counts of long texts seen lately, per thread: a system prompt (or a
//! document) shared by every request of a batch is counted once, not once
//! per request.
//!
//! Counting costs about a microsecond per 30-60 bytes; a 8 KB system prompt
//! on every request of a million-line batch is minutes of CPU spent on the
//! same text. Texts of at least [`MIN_BYTES`] are looked up by a SipHash
//! fingerprint of their encoding and bytes, and their length, in a small
//! direct-mapped table per thread (no lock, no allocation). A false hit
//! needs two different texts of one length with the same 64-bit keyed hash:
//! about one in 2^64 per lookup, and even then the result is an estimate
//! that the limiter corrects from the server's counts.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use crate::Encoding;

/// Texts shorter than this are counted every time: hashing them would cost a
/// good part of what counting does.
pub(crate) const MIN_BYTES: usize = 1024;

/// Table size: a batch rarely shares more than a few long texts.
const SLOTS: usize = 64;

#[derive(Clone, Copy, Default)]
struct Seen {
    fingerprint: u64,
    len: usize,
    tokens: usize,
}

thread_local! {
    static SEEN: RefCell<[Seen; SLOTS]> = const { RefCell::new([Seen { fingerprint: 0, len: 0, tokens: 0 }; SLOTS]) };
}

/// One random key per process, so fingerprints cannot be aimed at.
fn hasher() -> &'static std::collections::hash_map::RandomState {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
}

/// `count(text)`, remembered for a long `text`.
pub(crate) fn count_remembered(
    encoding: Encoding,
    text: &str,
    count: impl FnOnce(&str) -> usize,
) -> usize {
    if text.len() < MIN_BYTES {
        return count(text);
    }
    let mut state = hasher().build_hasher();
    encoding.hash(&mut state);
    text.hash(&mut state);
    let fingerprint = state.finish();
    // An empty slot has length 0, which no text here has.
    let slot = (fingerprint % SLOTS as u64) as usize;
    let known = SEEN.with(|seen| {
        let entry = seen.borrow()[slot];
        (entry.fingerprint == fingerprint && entry.len == text.len()).then_some(entry.tokens)
    });
    if let Some(tokens) = known {
        return tokens;
    }
    let tokens = count(text);
    SEEN.with(|seen| {
        seen.borrow_mut()[slot] = Seen {
            fingerprint,
            len: text.len(),
            tokens,
        };
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_counted_once_and_a_short_one_every_time() {
        let long = "word ".repeat(MIN_BYTES);
        let mut calls = 0;
        for _ in 0..3 {
            let tokens = count_remembered(Encoding::O200kBase, &long, |_| {
                calls += 1;
                7
            });
            assert_eq!(tokens, 7);
        }
        assert_eq!(calls, 1);
        // The same text in another encoding is another count.
        assert_eq!(count_remembered(Encoding::Cl100kBase, &long, |_| 9), 9);
        // A text that differs in one byte is counted afresh.
        let mut other = long.clone();
        other.replace_range(0..1, "x");
        assert_eq!(count_remembered(Encoding::O200kBase, &other, |_| 8), 8);
        let short = "a short prompt";
        let mut short_calls = 0;
        for _ in 0..2 {
            count_remembered(Encoding::O200kBase, short, |_| {
                short_calls += 1;
                3
            });
        }
        assert_eq!(short_calls, 2);
    }
}
