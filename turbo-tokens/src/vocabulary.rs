//! The vocabularies: every ordinary token's byte string and rank, embedded in the binary
//! as tables (`data/*.ranks`) and read into lookup maps once per process.
//!
//! The tables are tiktoken's vocabularies, written from tiktoken-rs by the test that also
//! checks them rank for rank (`tests/vocabulary.rs`; `TURBO_WRITE_VOCABULARY=1` rewrites
//! them). Reading them is what the first count of a process waits for: building them from
//! tiktoken-rs (base64 text, then its encoder, decoder and sorted token list, then one
//! decode per rank) took 100-300 ms per encoding, which every `turbo-run` paid before its
//! first request; a table reads in a few milliseconds and its long tokens are borrowed
//! from the binary rather than copied.
//!
//! # Table format
//!
//! The four bytes `TTV1`, then rank after rank from 0: one length byte `n` and the token's
//! `n` bytes; `n = 0` means no ordinary token has that rank (a special token's, such as
//! `<|endoftext|>`, which is counted as ordinary text).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A token's rank: its id, and its merge priority (lower merges first).
pub(crate) type Rank = u32;

/// What a table starts with.
pub(crate) const TABLE_MAGIC: &[u8; 4] = b"TTV1";

/// What is wrong with an embedded vocabulary table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VocabularyError {
    /// It does not start with `TTV1`.
    #[error("the table does not start with TTV1")]
    Header,
    /// It ends inside the token of `rank`.
    #[error("the table ends inside the token of rank {rank}")]
    Truncated {
        /// The rank whose bytes are cut short.
        rank: u32,
    },
    /// Some single byte is not a token (every byte must be one for merges to start).
    #[error("byte {byte:#04x} is not a token")]
    MissingByte {
        /// The byte without a rank.
        byte: u8,
    },
}

type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Token ranks by byte string. Byte strings of up to 7 bytes, which are most of the lookups
/// (pairs during merges, short words), are packed into a `u64` key: hashing and comparing
/// them is then a multiply and an integer compare instead of a slice hash and a `memcmp`.
pub(crate) struct Vocabulary {
    /// Ranks of all two-byte strings, by `first << 8 | second`: a merge starts with one
    /// lookup per byte, and this turns those into an array read.
    pairs: Box<[Rank]>,
    short: FxHashMap<u64, Rank>,
    /// Longer tokens, borrowed from the embedded table.
    long: FxHashMap<&'static [u8], Rank>,
}

impl Vocabulary {
    /// Reads a table in the format above.
    pub(crate) fn from_table(table: &'static [u8]) -> Result<Self, VocabularyError> {
        let body = table
            .strip_prefix(TABLE_MAGIC)
            .ok_or(VocabularyError::Header)?;
        // Two passes: the first sizes the maps, so that filling them never rehashes.
        let (mut short, mut long) = (0, 0);
        for token in Tokens::new(body) {
            match token?.1.len() {
                0 => {}
                1..=7 => short += 1,
                _ => long += 1,
            }
        }
        let mut vocabulary = Vocabulary {
            pairs: vec![Rank::MAX; 1 << 16].into_boxed_slice(),
            short: FxHashMap::with_capacity_and_hasher(short, BuildHasherDefault::default()),
            long: FxHashMap::with_capacity_and_hasher(long, BuildHasherDefault::default()),
        };
        for token in Tokens::new(body) {
            let (rank, bytes) = token?;
            if !bytes.is_empty() {
                vocabulary.insert(bytes, rank);
            }
        }
        if let Some(byte) = (0..=u8::MAX).find(|&byte| vocabulary.rank(&[byte]) == Rank::MAX) {
            return Err(VocabularyError::MissingByte { byte });
        }
        Ok(vocabulary)
    }

    fn insert(&mut self, bytes: &'static [u8], rank: Rank) {
        if let [first, second] = *bytes {
            self.pairs[usize::from(first) << 8 | usize::from(second)] = rank;
        }
        match pack(bytes) {
            Some(key) => self.short.insert(key, rank),
            None => self.long.insert(bytes, rank),
        };
    }

    /// The rank of `bytes`, or `Rank::MAX` if they are not a token.
    #[inline]
    pub(crate) fn rank(&self, bytes: &[u8]) -> Rank {
        let found = match pack(bytes) {
            Some(key) => self.short.get(&key),
            None => self.long.get(bytes),
        };
        found.copied().unwrap_or(Rank::MAX)
    }

    /// The rank of the two bytes `pair`, or `Rank::MAX`.
    #[inline]
    pub(crate) fn pair_rank(&self, pair: [u8; 2]) -> Rank {
        self.pairs[usize::from(pair[0]) << 8 | usize::from(pair[1])]
    }

    /// How many ordinary tokens there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
}

/// A table's entries in rank order: `(rank, bytes)`, empty bytes for an unused rank.
struct Tokens {
    rest: &'static [u8],
    rank: Rank,
}

impl Tokens {
    fn new(body: &'static [u8]) -> Self {
        Tokens {
            rest: body,
            rank: 0,
        }
    }
}

impl Iterator for Tokens {
    type Item = Result<(Rank, &'static [u8]), VocabularyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&len, after) = self.rest.split_first()?;
        let rank = self.rank;
        let Some((bytes, rest)) = after.split_at_checked(usize::from(len)) else {
            self.rest = &[];
            return Some(Err(VocabularyError::Truncated { rank }));
        };
        self.rest = rest;
        self.rank = rank.saturating_add(1);
        Some(Ok((rank, bytes)))
    }
}

/// Up to 7 bytes and their length in one `u64` (the length keeps `"a"` and `"a\0"` apart).
#[inline]
fn pack(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 7 {
        return None;
    }
    // A byte loop rather than `copy_from_slice`, which becomes a `memcpy` call for a
    // variable length and costs more than the whole hash.
    let packed = bytes
        .iter()
        .rev()
        .fold(0_u64, |word, &byte| word << 8 | u64::from(byte));
    Some(packed | (bytes.len() as u64) << 56)
}

/// The Fx hash (rustc's) with a folded-multiply finish: much faster than SipHash on short
/// byte strings, and the keys are a fixed vocabulary, so hash flooding is not a concern.
/// The finish matters: a plain Fx product's low bits, which pick the bucket, depend only on
/// the key's first bytes, and packed tokens share first bytes (`" t…"`) in droves.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let full = u128::from(self.hash) * u128::from(FX_SEED);
        (full as u64) ^ ((full >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(tokens: &[&[u8]]) -> &'static [u8] {
        let mut table = TABLE_MAGIC.to_vec();
        for token in tokens {
            table.push(u8::try_from(token.len()).unwrap());
            table.extend_from_slice(token);
        }
        table.leak()
    }

    fn every_byte() -> Vec<Vec<u8>> {
        (0..=u8::MAX).map(|byte| vec![byte]).collect()
    }

    #[test]
    fn reads_ranks_short_and_long_tokens_and_gaps() {
        let mut tokens = every_byte();
        tokens.push(b"ab".to_vec());
        tokens.push(Vec::new());
        tokens.push(b"abcdefgh-long".to_vec());
        let borrowed: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        let vocabulary = Vocabulary::from_table(table(&borrowed)).unwrap();
        assert_eq!(vocabulary.len(), 258);
        assert_eq!(vocabulary.rank(b"a"), 97);
        assert_eq!(vocabulary.rank(b"ab"), 256);
        assert_eq!(vocabulary.pair_rank(*b"ab"), 256);
        assert_eq!(vocabulary.rank(b"abcdefgh-long"), 258);
        assert_eq!(vocabulary.rank(b"abc"), Rank::MAX);
    }

    #[test]
    fn damaged_tables_say_what_is_wrong() {
        assert_eq!(
            Vocabulary::from_table(b"TTV0").err(),
            Some(VocabularyError::Header)
        );
        let mut cut = table(&[&b"a"[..], &b"bc"[..]]).to_vec();
        cut.pop();
        assert_eq!(
            Vocabulary::from_table(cut.leak()).err(),
            Some(VocabularyError::Truncated { rank: 1 })
        );
        let tokens = every_byte();
        let without_zero: Vec<&[u8]> = tokens[1..].iter().map(Vec::as_slice).collect();
        assert_eq!(
            Vocabulary::from_table(table(&without_zero)).err(),
            Some(VocabularyError::MissingByte { byte: 0 })
        );
    }
}
