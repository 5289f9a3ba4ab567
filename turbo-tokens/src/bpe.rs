//! A count-only byte-pair encoder that gives tiktoken's counts several times faster.
//!
//! tiktoken splits text into pieces with a regex, then merges each piece's bytes by rank.
//! tiktoken-rs runs that regex on fancy-regex, because of one look-ahead (`\s+(?!\S)`), and
//! the backtracking VM is where most of its time goes. Here the pieces come from an
//! anchored lazy-DFA search (regex-automata) over the same pattern minus the look-ahead,
//! whose effect is restored by hand (see [`Pretokenizer::next_piece_end`]), and the merges
//! only count, without building token vectors. The vocabulary is tiktoken's, embedded as a
//! table written from tiktoken-rs (see [`crate::vocabulary`]), so both agree on what a token
//! is; the test suites check that they agree on counts too.

use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::sync::Arc;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input};

use crate::vocabulary::{Rank, Vocabulary};
use crate::{Encoding, LoadError};

/// cl100k_base's split pattern, with `\s+(?!\S)|\s` folded into a trailing `\s+` and the
/// possessive quantifiers made greedy (equivalent here: no alternative can succeed by
/// backtracking into them).
const CL100K_PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"|\s+$",
    r"|\s*[\r\n]",
    r"|\s+",
);

/// o200k_base's split pattern, with `\s+(?!\S)|\s+` folded into a trailing `\s+`.
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+",
);

/// The embedded vocabularies (format in [`crate::vocabulary`]).
const CL100K_TABLE: &[u8] = include_bytes!("../data/cl100k_base.ranks");
const O200K_TABLE: &[u8] = include_bytes!("../data/o200k_base.ranks");

/// Pieces up to this many bytes merge in small stack arrays.
const SHORT_PIECE: usize = 24;
/// Pieces up to this many bytes merge in larger stack arrays; longer ones use a heap.
const SMALL_PIECE: usize = 128;

/// A count-only tokenizer for one encoding.
pub(crate) struct FastBpe {
    vocabulary: Vocabulary,
    pretokenizer: Pretokenizer,
}

impl FastBpe {
    /// Builds the tokenizer for `encoding` from its embedded vocabulary.
    pub(crate) fn load(encoding: Encoding) -> Result<Self, LoadError> {
        let (table, pattern) = match encoding {
            Encoding::Cl100kBase => (CL100K_TABLE, CL100K_PATTERN),
            Encoding::O200kBase => (O200K_TABLE, O200K_PATTERN),
        };
        let vocabulary = Vocabulary::from_table(table).map_err(LoadError::Vocabulary)?;
        let pretokenizer = Pretokenizer::new(encoding, pattern)?;
        Ok(FastBpe {
            vocabulary,
            pretokenizer,
        })
    }

    /// Tokens of `text`, special-token text counted as ordinary text.
    pub(crate) fn count(&self, text: &str) -> usize {
        let mut tokens = 0_usize;
        self.pretokenizer.for_each_piece(text, |piece| {
            tokens = tokens.saturating_add(self.count_piece(piece));
        });
        tokens
    }

    fn rank(&self, bytes: &[u8]) -> Rank {
        self.vocabulary.rank(bytes)
    }

    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece) != Rank::MAX {
            // Every single byte is a token in both vocabularies.
            piece.len().min(1)
        } else if piece.len() <= SHORT_PIECE {
            self.count_small::<SHORT_PIECE>(piece)
        } else if piece.len() <= SMALL_PIECE {
            self.count_small::<SMALL_PIECE>(piece)
        } else {
            self.count_large(piece)
        }
    }

    /// Merges the lowest-ranked adjacent pair (leftmost on ties) until no pair is a token,
    /// in stack arrays of `N` entries indexed by byte offset, the parts chained by `next`:
    /// O(n²) but allocation- and copy-free, and pieces are short. `N` comes in two sizes
    /// because initialising the arrays is a visible cost for the short pieces that dominate.
    fn count_small<const N: usize>(&self, piece: &[u8]) -> usize {
        const NONE: usize = usize::MAX;
        let len = piece.len();
        debug_assert!((2..=N).contains(&len) && N <= usize::from(u8::MAX));
        // next[i]: where the part after the part starting at i starts (len: none).
        let mut next = [0_u8; N];
        // pair_rank[i]: rank of the part at i joined with the next one (MAX: not a token).
        let mut pair_rank = [Rank::MAX; N];
        for (i, next) in next.iter_mut().enumerate().take(len) {
            *next = (i + 1) as u8;
        }
        for (rank, pair) in pair_rank.iter_mut().zip(piece.windows(2)) {
            *rank = self.vocabulary.pair_rank([pair[0], pair[1]]);
        }
        let mut parts = len;
        loop {
            let (mut best_rank, mut best, mut best_prev) = (Rank::MAX, 0, NONE);
            let (mut prev, mut part) = (NONE, 0);
            while part < len {
                if pair_rank[part] < best_rank {
                    (best_rank, best, best_prev) = (pair_rank[part], part, prev);
                }
                prev = part;
                part = usize::from(next[part]);
            }
            if best_rank == Rank::MAX {
                return parts;
            }
            // The part at `best` absorbs the one after it.
            let after = usize::from(next[usize::from(next[best])]);
            next[best] = after as u8;
            parts -= 1;
            pair_rank[best] = if after < len {
                self.rank(&piece[best..usize::from(next[after])])
            } else {
                Rank::MAX
            };
            if best_prev != NONE {
                pair_rank[best_prev] = self.rank(&piece[best_prev..after]);
            }
        }
    }

    /// The same merge order as [`Self::count_small`] in O(n log n), for long pieces such as
    /// a megabyte without spaces: a linked list of parts and a min-heap of candidate pairs,
    /// where a popped pair is stale unless its left part still has that pair rank.
    fn count_large(&self, piece: &[u8]) -> usize {
        const NONE: u32 = u32::MAX;
        let Ok(len) = u32::try_from(piece.len()) else {
            // A single 4 GiB piece: its byte length is an upper bound on its tokens.
            return piece.len();
        };
        let at = |part: u32| part as usize;
        // next[i]/prev[i]: starts of the parts after/before the part starting at i.
        let mut next: Vec<u32> = (1..=len).collect();
        let mut prev: Vec<u32> = (0..len).map(|i| i.wrapping_sub(1)).collect();
        let mut pair_rank = vec![Rank::MAX; piece.len()];
        // A candidate is `rank << 32 | start` in one word: smaller words are lower ranks,
        // leftmost first, and a heap of words is half the memory of a heap of tuples.
        let candidate =
            |rank: Rank, start: u32| std::cmp::Reverse(u64::from(rank) << 32 | u64::from(start));
        let mut initial = Vec::with_capacity(piece.len());
        for (i, pair) in (0..len).zip(piece.windows(2)) {
            let rank = self.vocabulary.pair_rank([pair[0], pair[1]]);
            pair_rank[at(i)] = rank;
            if rank != Rank::MAX {
                initial.push(candidate(rank, i));
            }
        }
        let mut heap = BinaryHeap::from(initial);
        let mut parts = piece.len();
        while let Some(std::cmp::Reverse(word)) = heap.pop() {
            let (rank, left) = ((word >> 32) as Rank, word as u32);
            if pair_rank[at(left)] != rank {
                continue;
            }
            let right = next[at(left)];
            let after = next[at(right)];
            next[at(left)] = after;
            if after < len {
                prev[at(after)] = left;
            }
            pair_rank[at(right)] = Rank::MAX;
            parts -= 1;

            pair_rank[at(left)] = if after < len {
                self.rank(&piece[at(left)..at(next[at(after)])])
            } else {
                Rank::MAX
            };
            if pair_rank[at(left)] != Rank::MAX {
                heap.push(candidate(pair_rank[at(left)], left));
            }
            let before = prev[at(left)];
            if before != NONE {
                pair_rank[at(before)] = self.rank(&piece[at(before)..at(after)]);
                if pair_rank[at(before)] != Rank::MAX {
                    heap.push(candidate(pair_rank[at(before)], before));
                }
            }
        }
        parts
    }
}

/// Splits text into the pieces tiktoken would: ASCII text by hand ([`crate::ascii`]), any
/// other by the lazy DFA.
struct Pretokenizer {
    dfa: DFA,
    /// Which thread-local cache slot belongs to this regex.
    slot: usize,
    /// The pattern written out for ASCII text.
    ascii_piece_end: PieceEnd,
}

/// Where the piece of a text that starts at an offset ends.
type PieceEnd = fn(&[u8], usize) -> usize;

thread_local! {
    /// One lazy-DFA cache per encoding and thread: counting allocates nothing once a thread
    /// has warmed up, and threads never contend.
    static CACHES: RefCell<[Option<Cache>; 2]> = const { RefCell::new([None, None]) };
}

impl Pretokenizer {
    fn new(encoding: Encoding, pattern: &str) -> Result<Self, LoadError> {
        // No give-up threshold: the lazy DFA clears its cache and carries on however
        // adversarial the text, so a search never fails.
        let config = DFA::config().minimum_cache_clear_count(None);
        let dfa = DFA::builder()
            .configure(config)
            .build(pattern)
            .map_err(|error| LoadError::Pattern(Arc::new(error)))?;
        let (slot, ascii_piece_end): (usize, PieceEnd) = match encoding {
            Encoding::Cl100kBase => (0, crate::ascii::cl100k_piece_end),
            Encoding::O200kBase => (1, crate::ascii::o200k_piece_end),
        };
        Ok(Pretokenizer {
            dfa,
            slot,
            ascii_piece_end,
        })
    }

    fn for_each_piece(&self, text: &str, piece: impl FnMut(&[u8])) {
        if !text.is_ascii() {
            return self.for_each_piece_by_dfa(text, piece);
        }
        let bytes = text.as_bytes();
        split(bytes, |start| (self.ascii_piece_end)(bytes, start), piece);
    }

    fn for_each_piece_by_dfa(&self, text: &str, mut piece: impl FnMut(&[u8])) {
        let mut run = |cache: &mut Cache| {
            split(
                text.as_bytes(),
                |start| self.next_piece_end(cache, text, start),
                &mut piece,
            );
        };
        let reused = CACHES.with(|caches| match caches.try_borrow_mut() {
            Ok(mut caches) => {
                let cache = caches[self.slot].get_or_insert_with(|| self.dfa.create_cache());
                run(cache);
                true
            }
            Err(_) => false,
        });
        if !reused {
            run(&mut self.dfa.create_cache());
        }
    }

    /// Where the piece starting at `start` ends.
    ///
    /// The pattern's last alternative matches a whole run of horizontal whitespace; the
    /// original `\s+(?!\S)|\s` would leave the run's last character for the next piece (so
    /// that `"  word"` splits as `" "`, `" word"`), unless the run is a single character.
    /// Only that alternative can end a piece on a whitespace character other than `\r`/`\n`
    /// before the end of the text, which is how such a match is recognised.
    fn next_piece_end(&self, cache: &mut Cache, text: &str, start: usize) -> usize {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let end = match self.dfa.try_search_fwd(cache, &input) {
            Ok(Some(found)) if found.offset() > start => found.offset(),
            // Every character starts a match, so this is unreachable; still, never loop.
            _ => return next_char_boundary(text, start),
        };
        if end == text.len() {
            return end;
        }
        match text[start..end].chars().next_back() {
            Some(last) if last.is_whitespace() && last != '\r' && last != '\n' => {
                let shorter = end - last.len_utf8();
                if shorter > start { shorter } else { end }
            }
            _ => end,
        }
    }
}

/// Hands `piece` each piece of `text`, in order; `piece_end` says where the piece that
/// starts at an offset ends.
fn split(text: &[u8], mut piece_end: impl FnMut(usize) -> usize, mut piece: impl FnMut(&[u8])) {
    let mut start = 0;
    while start < text.len() {
        let end = piece_end(start);
        piece(&text[start..end]);
        start = end;
    }
}

fn next_char_boundary(text: &str, start: usize) -> usize {
    text[start..]
        .chars()
        .next()
        .map_or(text.len(), |c| start + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiktoken_rs::CoreBPE;

    fn reference(encoding: Encoding) -> &'static CoreBPE {
        match encoding {
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        }
    }

    fn fast(encoding: Encoding) -> &'static FastBpe {
        crate::counter::bpe(encoding).unwrap()
    }

    #[test]
    fn vocabulary_sizes_exclude_special_tokens() {
        for (encoding, size) in [
            (Encoding::Cl100kBase, 100_256),
            (Encoding::O200kBase, 199_998),
        ] {
            let fast = fast(encoding);
            assert_eq!(fast.vocabulary.len(), size, "{encoding}");
            assert_eq!(fast.vocabulary.rank(b"<|endoftext|>"), Rank::MAX);
            for word in ["hello", " information", "\n\n"] {
                let expected = reference(encoding).encode_ordinary(word);
                assert_eq!(expected.len(), 1, "test premise: {word:?} is one token");
                assert_eq!(
                    fast.vocabulary.rank(word.as_bytes()),
                    expected[0],
                    "{word:?}"
                );
            }
        }
    }

    #[test]
    fn small_and_large_merges_agree() {
        let fast = cl100k();
        for piece in [
            &b"antidisestablishmentarianism"[..],
            b"aaaaaaaaaaaaaaaaaaaaaaaaa",
            b"xqzjvkwpfbxqzjvkwpfb",
            "Пр\u{0438}в\u{0435}тПривет".as_bytes(),
            b"0x1f2e3d4c5b6a",
        ] {
            assert_eq!(
                fast.count_small::<SMALL_PIECE>(piece),
                fast.count_large(piece),
                "{piece:?}"
            );
        }
    }

    #[test]
    fn pieces_match_the_reference_splitter() {
        for encoding in Encoding::ALL {
            let fast = fast(encoding);
            let reference = reference(encoding);
            for text in [
                "  word",
                "a  b   c\t\td \u{3000}\u{3000}e",
                "x \n  y\r\n\r\n  z  ",
                "don't WON'T Can'T 'S 'ſ",
                "123456 7 89 1.2.3",
                "path/to/file//x \\n",
                "   ",
                " ",
                "\u{85}\u{a0}a\u{a0}\u{a0}b",
            ] {
                let mut pieces = Vec::new();
                fast.pretokenizer
                    .for_each_piece(text, |piece| pieces.push(piece.to_vec()));
                let expected: Vec<Vec<u8>> = reference
                    .split_by_token_ordinary_iter(text)
                    .map(|token| token.unwrap().into_bytes())
                    .collect();
                // Tokens refine pieces, so joining pieces must rebuild the text and counting
                // must agree.
                assert_eq!(pieces.concat(), text.as_bytes());
                assert_eq!(fast.count(text), expected.len(), "{encoding} {text:?}");
            }
        }
    }

    /// tiktoken-rs panics on this input: fancy-regex gives up backtracking through
    /// `\s+(?!\S)` after a million steps. The lazy DFA has no such limit.
    #[test]
    fn a_megabyte_of_spaces_before_a_word_splits_like_tiktoken() {
        let fast = fast(Encoding::O200kBase);
        let spaces = 1_000_001;
        let text = " ".repeat(spaces) + "x";
        let mut pieces = Vec::new();
        fast.pretokenizer
            .for_each_piece(&text, |piece| pieces.push(piece.len()));
        assert_eq!(pieces, [spaces - 1, 2]);
    }

    proptest::proptest! {
        #[test]
        fn heap_merge_agrees_with_array_merge(
            piece in proptest::collection::vec(
                proptest::sample::select(b" \n\tabcsteTHE01.,'\xe4\xb8\x96\xff".to_vec()),
                2..=SMALL_PIECE,
            ),
        ) {
            let fast = cl100k();
            proptest::prop_assert_eq!(
                fast.count_small::<SMALL_PIECE>(&piece),
                fast.count_large(&piece)
            );
        }
    }

    fn pieces(encoding: Encoding, text: &str, by_dfa: bool) -> Vec<Vec<u8>> {
        let pretokenizer = &fast(encoding).pretokenizer;
        let mut pieces = Vec::new();
        let push = |piece: &[u8]| pieces.push(piece.to_vec());
        if by_dfa {
            pretokenizer.for_each_piece_by_dfa(text, push);
        } else {
            pretokenizer.for_each_piece(text, push);
        }
        pieces
    }

    #[test]
    fn ascii_pieces_match_the_dfa_on_every_alternative() {
        for text in [
            "Summarise item 42 in one line.",
            "don't WON'T Can'T 'S 'll 'LL 'Re 've 'm 'd 'x",
            "ABCdef abcDEF A a 1234567 12a3",
            "  word\t\tword \t!  !!x !!\n/\n/ x",
            "a \n  \r\n\r\n  z  ",
            "end with newline and spaces\n  ",
            "\x00\x1b[0m\x7f\x0b\x0c\x1c",
            "'",
            " ",
            "path/to//file/\n/",
        ] {
            for encoding in Encoding::ALL {
                assert_eq!(
                    pieces(encoding, text, false),
                    pieces(encoding, text, true),
                    "{encoding} {text:?}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn ascii_splitting_agrees_with_the_dfa(
            text in proptest::collection::vec(
                proptest::sample::select(
                    b"  \t\n\r\x0b\x0c\x00\x1f\x7faAzZsStTdDmMlLrReEvVqQ09'/.!-_#".to_vec(),
                ),
                0..40,
            ),
        ) {
            let text = String::from_utf8(text).unwrap();
            for encoding in Encoding::ALL {
                proptest::prop_assert_eq!(
                    pieces(encoding, &text, false),
                    pieces(encoding, &text, true),
                    "{} {:?}", encoding, text
                );
            }
        }
    }

    fn cl100k() -> &'static FastBpe {
        fast(Encoding::Cl100kBase)
    }
}
