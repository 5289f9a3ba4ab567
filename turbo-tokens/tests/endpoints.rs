//! The endpoint formulas against the reference cases in
//! `tests/data/token_counts.json` (`endpoints`): each case's count is a sum
//! of tiktoken counts from the file's `texts`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use serde_json::Value;
use turbo_tokens::{
    DefaultOutput, InputPiece, TiktokenCounter, completions_reservation, input_tokens,
    responses_prompt_tokens, responses_reservation, text_counter,
};

/// The inputs of an embeddings, completions or moderations body, as pieces.
fn pieces(value: &Value) -> Vec<InputPiece<'_>> {
    match value {
        Value::String(text) => vec![InputPiece::Text(text)],
        Value::Array(items) if items.first().is_some_and(Value::is_number) => {
            vec![InputPiece::TokenIds(items.len())]
        }
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(InputPiece::Text(text)),
                Value::Array(ids) => Some(InputPiece::TokenIds(ids.len())),
                part if part["type"] == "text" => part["text"].as_str().map(InputPiece::Text),
                _ => None,
            })
            .collect(),
        _ => panic!("not an input: {value}"),
    }
}

/// A responses body's messages as (role, text parts).
fn messages(body: &Value) -> Vec<(&str, Vec<&str>)> {
    let mut messages = Vec::new();
    if let Some(instructions) = body["instructions"].as_str() {
        messages.push(("system", vec![instructions]));
    }
    match &body["input"] {
        Value::String(text) => messages.push(("user", vec![text.as_str()])),
        Value::Array(items) => {
            for item in items {
                let texts = match &item["content"] {
                    Value::String(text) => vec![text.as_str()],
                    Value::Array(parts) => parts
                        .iter()
                        .filter(|part| {
                            ["input_text", "output_text", "text"]
                                .contains(&part["type"].as_str().unwrap_or(""))
                        })
                        .filter_map(|part| part["text"].as_str())
                        .collect(),
                    _ => Vec::new(),
                };
                messages.push((item["role"].as_str().unwrap(), texts));
            }
        }
        other => panic!("not a responses input: {other}"),
    }
    messages
}

fn limit(body: &Value, name: &str) -> Option<u32> {
    body[name]
        .as_u64()
        .map(|value| u32::try_from(value).unwrap())
}

#[test]
fn every_reference_endpoint_case() {
    let counter = TiktokenCounter::new();
    let cases = util::reference_endpoints();
    for (endpoint, body, prompt, output) in &cases {
        let model = body["model"].as_str().unwrap_or("omni-moderation-latest");
        let count = text_counter(&counter, model);
        let (actual_prompt, actual_output) = match endpoint.as_str() {
            "/v1/embeddings" | "/v1/moderations" => {
                (input_tokens(&pieces(&body["input"]), count), 0)
            }
            "/v1/completions" => {
                let pieces = pieces(&body["prompt"]);
                (
                    input_tokens(&pieces, count),
                    completions_reservation(
                        limit(body, "max_tokens"),
                        limit(body, "n"),
                        limit(body, "best_of"),
                        pieces.len(),
                    ),
                )
            }
            "/v1/responses" => {
                let prompt = responses_prompt_tokens(messages(body), count);
                (
                    prompt,
                    responses_reservation(
                        limit(body, "max_output_tokens"),
                        DefaultOutput::Tokens(0),
                        u32::try_from(prompt).unwrap(),
                    ),
                )
            }
            other => panic!("unknown endpoint {other}"),
        };
        assert_eq!(actual_prompt, *prompt as usize, "{endpoint} {body}");
        assert_eq!(actual_output, *output, "{endpoint} {body}");
    }
    assert_eq!(
        cases.len(),
        12,
        "the reference file changed; review these tests"
    );
}
