//! Invariants over generated input: agreement with tiktoken-rs, no panics, bounds, formulas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use turbo_tokens::{
    DefaultOutput, Encoding, MessageRef, RequestShape, TiktokenCounter, TokenCounter,
    output_reservation,
};

/// Fragments that sit on the edges of the split patterns: every whitespace flavour,
/// contractions in odd cases, letters of each general category, digit kinds, marks,
/// joiners, and special-token text.
const FRAGMENTS: &[&str] = &[
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{85}",
    "\u{2028}",
    "\u{b}",
    "\u{c}",
    "a",
    "Z",
    "s",
    "S",
    "t",
    "ſ",
    "'",
    "’",
    "'s",
    "'LL",
    "'Ve",
    "0",
    "7",
    "123",
    "\u{663}",
    "²",
    "Ⅻ",
    "/",
    ".",
    ",",
    "!",
    "-",
    "_",
    "世",
    "こ",
    "ǅ",
    "ʰ",
    "ª",
    "\u{301}",
    "\u{903}",
    "\u{20dd}",
    "й",
    "Й",
    "ß",
    "İ",
    "🚀",
    "\u{200d}",
    "\u{fe0f}",
    "é",
    "\u{212a}",
    "<|endoftext|>",
    "<|fim_prefix|>",
    "hello",
    " world",
    "HTTP",
    "JSONParser",
];

fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|parts| parts.concat())
}

fn reference_count(encoding: Encoding, text: &str) -> usize {
    let bpe = match encoding {
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
    };
    bpe.encode_ordinary(text).len()
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(Encoding::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_tiktoken_rs_on_edge_fragments(text in tricky_text(), encoding in encoding()) {
        let counter = TiktokenCounter::new();
        prop_assert_eq!(counter.count_text(encoding, &text), reference_count(encoding, &text));
    }

    #[test]
    fn agrees_with_tiktoken_rs_on_arbitrary_text(text in any::<String>(), encoding in encoding()) {
        let counter = TiktokenCounter::new();
        prop_assert_eq!(counter.count_text(encoding, &text), reference_count(encoding, &text));
    }

    #[test]
    fn counts_are_bounded_by_bytes(text in any::<String>(), encoding in encoding()) {
        let count = TiktokenCounter::new().count_text(encoding, &text);
        prop_assert!(count <= text.len());
        // No token is longer than 128 bytes in either vocabulary.
        prop_assert!(count * 128 >= text.len());
        prop_assert_eq!(count == 0, text.is_empty());
    }

    #[test]
    fn chat_count_is_the_formula_over_text_counts(
        messages in prop::collection::vec(
            (tricky_text(), tricky_text(), prop::option::of(tricky_text())),
            0..6,
        ),
        model in prop::sample::select(vec!["gpt-4o", "gpt-4", "llama-3.1-8b-instant", "o3-mini"]),
    ) {
        let counter = TiktokenCounter::new();
        let refs: Vec<MessageRef<'_>> = messages
            .iter()
            .map(|(role, content, name)| MessageRef { role, content, name: name.as_deref() })
            .collect();
        let encoding = turbo_tokens::encoding_for_model(model);
        let count = |text: &str| counter.count_text(encoding, text);
        let expected = 3 + refs
            .iter()
            .map(|m| 3 + count(m.role) + count(m.content) + m.name.map_or(0, |n| count(n) + 1))
            .sum::<usize>();
        prop_assert_eq!(counter.count_chat(model, &refs), expected);
    }

    #[test]
    fn estimate_total_is_prompt_plus_reservation(
        content in tricky_text(),
        max_tokens in prop::option::of(any::<u32>()),
        max_completion_tokens in prop::option::of(any::<u32>()),
        n in prop::option::of(any::<u32>()),
        default_output in prop_oneof![
            any::<u32>().prop_map(DefaultOutput::Tokens),
            (0.0_f64..4.0).prop_map(DefaultOutput::FractionOfPrompt),
        ],
    ) {
        let counter = TiktokenCounter::new();
        let messages = [MessageRef::new("user", &content)];
        let request = RequestShape {
            max_tokens,
            max_completion_tokens,
            n,
            ..RequestShape::new("gpt-4o", &messages)
        };
        let estimate = counter.estimate(&request, default_output);
        prop_assert_eq!(estimate.prompt_tokens as usize, counter.count_chat("gpt-4o", &messages));
        prop_assert_eq!(
            estimate.output_reservation,
            output_reservation(&request, default_output, estimate.prompt_tokens)
        );
        prop_assert_eq!(
            u64::from(estimate.total()),
            (u64::from(estimate.prompt_tokens) + u64::from(estimate.output_reservation))
                .min(u64::from(u32::MAX))
        );
        let choices = u64::from(n.unwrap_or(1).max(1));
        let expected_reservation = match (max_completion_tokens.or(max_tokens), default_output) {
            (Some(limit), _) => u64::from(limit) * choices,
            (None, DefaultOutput::Tokens(tokens)) => u64::from(tokens) * choices,
            (None, DefaultOutput::FractionOfPrompt(fraction)) => {
                let exact = f64::from(estimate.prompt_tokens) * fraction;
                // Within rounding noise of the true ceiling.
                prop_assert!((f64::from(estimate.output_reservation) - exact.ceil()).abs() <= 1.0);
                prop_assert!(f64::from(estimate.output_reservation) >= exact - 1e-6);
                u64::from(estimate.output_reservation)
            }
        };
        prop_assert_eq!(u64::from(estimate.output_reservation), expected_reservation.min(u64::from(u32::MAX)));
    }
}

proptest! {
    // Long inputs: fewer cases, each exercising the heap-based merge of pieces over 128 bytes.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn agrees_with_tiktoken_rs_on_long_runs(
        run in prop::sample::select(vec![" ", "a", "世", "!", "7", " \n", "\u{3000}", "ab1"]),
        repeat in 100_usize..3000,
        tail in tricky_text(),
        encoding in encoding(),
    ) {
        let text = run.repeat(repeat) + &tail;
        let counter = TiktokenCounter::new();
        prop_assert_eq!(counter.count_text(encoding, &text), reference_count(encoding, &text));
    }
}
