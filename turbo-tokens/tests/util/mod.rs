//! Shared helpers for turbo-tokens' integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use serde_json::Value;

/// The reference counts, compiled into the test binary from `tests/data/`, so the tests
/// read nothing outside the repository at run time.
const REFERENCE_JSON: &str = include_str!("../data/token_counts.json");

/// `tests/data/token_counts.json`, parsed.
pub fn reference_data() -> Value {
    serde_json::from_str(REFERENCE_JSON)
        .unwrap_or_else(|error| panic!("tests/data/token_counts.json is not valid JSON: {error}"))
}

/// The reference texts as `(text, cl100k_base count, o200k_base count)`.
pub fn reference_texts() -> Vec<(String, usize, usize)> {
    let data = reference_data();
    let texts = data["texts"].as_array().expect("`texts` is an array");
    assert!(!texts.is_empty(), "`texts` is empty");
    texts
        .iter()
        .map(|entry| {
            let count = |key: &str| {
                usize::try_from(
                    entry[key]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{key} in {entry}")),
                )
                .unwrap()
            };
            (
                entry["text"]
                    .as_str()
                    .expect("`text` is a string")
                    .to_owned(),
                count("cl100k_base"),
                count("o200k_base"),
            )
        })
        .collect()
}

/// The reference chats as `(messages array, cl100k_base prompt tokens)`.
pub fn reference_chats() -> Vec<(Value, u32)> {
    let data = reference_data();
    let chats = data["chats"].as_array().expect("`chats` is an array");
    assert!(!chats.is_empty(), "`chats` is empty");
    chats
        .iter()
        .map(|chat| {
            let tokens = chat["cl100k_base_prompt_tokens"]
                .as_u64()
                .expect("prompt tokens");
            (chat["messages"].clone(), u32::try_from(tokens).unwrap())
        })
        .collect()
}

/// A chat request body for `model` around `messages`.
pub fn body(model: &str, messages: Value) -> Value {
    serde_json::json!({ "model": model, "messages": messages })
}

/// The reference endpoint cases: `(endpoint, body, prompt tokens, output reservation)`.
pub fn reference_endpoints() -> Vec<(String, Value, u32, u32)> {
    let data = reference_data();
    let cases = data["endpoints"]
        .as_array()
        .expect("`endpoints` is an array");
    assert!(!cases.is_empty(), "`endpoints` is empty");
    cases
        .iter()
        .map(|case| {
            let number = |key: &str| u32::try_from(case[key].as_u64().expect(key)).unwrap();
            (
                case["endpoint"].as_str().expect("endpoint").to_owned(),
                case["body"].clone(),
                number("prompt_tokens"),
                number("output_reservation"),
            )
        })
        .collect()
}
