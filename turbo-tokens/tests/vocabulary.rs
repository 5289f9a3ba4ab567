//! The embedded vocabularies (`data/*.ranks`) are tiktoken-rs's, rank for rank.
//!
//! After a tiktoken-rs upgrade that changes a vocabulary, this test fails; then
//! `TURBO_WRITE_VOCABULARY=1 cargo test -p turbo-tokens --test vocabulary` writes the
//! tables again (format: `src/vocabulary.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use tiktoken_rs::{CoreBPE, Rank};

/// The table of `reference`'s ordinary tokens: `TTV1`, then per rank a length byte and
/// the token's bytes, 0 for a rank that is a special token or unused. It ends with the
/// last ordinary token; a run of 1,024 unknown ranks ends the vocabulary.
fn table(reference: &CoreBPE) -> Vec<u8> {
    let special = reference.special_tokens();
    let mut table = b"TTV1".to_vec();
    let (mut gaps, mut misses) = (0, 0);
    for rank in 0..Rank::MAX {
        let bytes = match reference.decode_bytes(&[rank]) {
            Ok(bytes) => bytes,
            Err(_) if misses < 1024 => {
                misses += 1;
                gaps += 1;
                continue;
            }
            Err(_) => break,
        };
        misses = 0;
        if std::str::from_utf8(&bytes).is_ok_and(|text| special.contains(text)) {
            gaps += 1;
            continue;
        }
        table.extend(std::iter::repeat_n(0, gaps));
        gaps = 0;
        let len = u8::try_from(bytes.len())
            .unwrap_or_else(|_| panic!("rank {rank} is {} bytes long", bytes.len()));
        assert!(len > 0, "rank {rank} is empty");
        table.push(len);
        table.extend_from_slice(&bytes);
    }
    table
}

fn check(name: &str, reference: &CoreBPE) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(format!("{name}.ranks"));
    let expected = table(reference);
    if std::env::var_os("TURBO_WRITE_VOCABULARY").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let embedded = std::fs::read(&path).unwrap();
    assert!(
        embedded == expected,
        "{} ({} bytes) is not tiktoken-rs's {name} ({} bytes): write it again with \
         TURBO_WRITE_VOCABULARY=1 cargo test -p turbo-tokens --test vocabulary",
        path.display(),
        embedded.len(),
        expected.len()
    );
}

#[test]
fn cl100k_base_is_tiktoken_rs() {
    check("cl100k_base", tiktoken_rs::cl100k_base_singleton());
}

#[test]
fn o200k_base_is_tiktoken_rs() {
    check("o200k_base", tiktoken_rs::o200k_base_singleton());
}
