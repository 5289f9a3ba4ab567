//! Synthetic answers to the endpoints besides chat, in OpenAI's shapes (and
//! Anthropic's for `/v1/messages`): what the simulated provider and the mock
//! server both send.

use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::endpoint_request::EndpointRequest;
use crate::response::Usage;
use crate::synth::echo_text;

/// Length of a mock embedding vector when the request sets no `dimensions`
/// (real models return 1,536 or more floats; a mock needs few).
const DEFAULT_MOCK_DIMENSIONS: u32 = 8;
/// Longest mock embedding vector, whatever `dimensions` asks.
const MAX_MOCK_DIMENSIONS: u32 = 4096;

/// One synthetic answer: its body and the usage it reports (moderations
/// answers carry no `usage`; `usage` still says what was counted).
pub(crate) struct Answer {
    pub body: Value,
    #[cfg_attr(not(feature = "mock-server"), allow(dead_code))]
    pub usage: Usage,
}

/// What the answer is made from.
pub(crate) struct AnswerParts<'a> {
    /// Suffix of the answer's id (`embd-…`, `cmpl-…`, …).
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// Prompt tokens, as counted by the caller's rule.
    pub prompt_tokens: u32,
    /// Tokens a generated text would have before the request's limit.
    pub wanted_tokens: u32,
    /// Words of the input the echo repeats.
    pub echo_words: usize,
}

/// The answer to `request`.
pub(crate) fn answer(request: &EndpointRequest, parts: &AnswerParts<'_>) -> Answer {
    let model = request.model();
    let prompt = parts.prompt_tokens;
    match request.endpoint() {
        Endpoint::Embeddings => {
            let dimensions = request
                .body()
                .get("dimensions")
                .and_then(Value::as_u64)
                .and_then(|value| u32::try_from(value).ok())
                .unwrap_or(DEFAULT_MOCK_DIMENSIONS)
                .min(MAX_MOCK_DIMENSIONS);
            let data: Vec<Value> = (0..request.input_pieces().len())
                .map(|index| {
                    let vector: Vec<f64> = (0..dimensions)
                        .map(|d| f64::from((index as u32 + d) % 7) / 7.0 - 0.5)
                        .collect();
                    json!({"object": "embedding", "index": index, "embedding": vector})
                })
                .collect();
            Answer {
                body: json!({
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
                }),
                usage: Usage::new(prompt, 0),
            }
        }
        Endpoint::Moderations => {
            // One result per string input; parts make up one multimodal input.
            let multimodal = request
                .body()
                .get("input")
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(Value::is_object));
            let inputs = if multimodal {
                1
            } else {
                request.input_pieces().len().max(1)
            };
            let results: Vec<Value> = (0..inputs)
                .map(|_| {
                    json!({
                        "flagged": false,
                        "categories": {"harassment": false, "hate": false, "self-harm": false, "sexual": false, "violence": false},
                        "category_scores": {"harassment": 0.0001, "hate": 0.0001, "self-harm": 0.0001, "sexual": 0.0001, "violence": 0.0001},
                    })
                })
                .collect();
            Answer {
                body: json!({"id": format!("modr-{}", parts.id), "model": model, "results": results}),
                usage: Usage::new(prompt, 0),
            }
        }
        Endpoint::Completions => completions(request, parts),
        Endpoint::Messages => messages(request, parts),
        Endpoint::Responses | Endpoint::ChatCompletions => responses(request, parts),
    }
}

fn limit(request: &EndpointRequest, name: &str) -> Option<u32> {
    request
        .body()
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|value| u32::try_from(value).ok())
}

fn capped(wanted: u32, limit: u32) -> (u32, &'static str) {
    if limit < wanted {
        (limit, "length")
    } else {
        (wanted, "stop")
    }
}

fn completions(request: &EndpointRequest, parts: &AnswerParts<'_>) -> Answer {
    let (tokens, finish_reason) = capped(
        parts.wanted_tokens,
        limit(request, "max_tokens").unwrap_or(turbo_tokens::COMPLETIONS_DEFAULT_MAX_TOKENS),
    );
    let n = limit(request, "n").unwrap_or(1).max(1);
    let generated = n.max(limit(request, "best_of").unwrap_or(1));
    let prompts = u32::try_from(request.input_pieces().len().max(1)).unwrap_or(u32::MAX);
    let text = echo_text(&request.last_text(), parts.echo_words);
    let choices: Vec<Value> = (0..prompts.saturating_mul(n))
        .map(|index| {
            json!({"text": text, "index": index, "logprobs": null, "finish_reason": finish_reason})
        })
        .collect();
    // best_of completions are generated and charged, n of them returned.
    let usage = Usage::new(
        parts.prompt_tokens,
        tokens.saturating_mul(generated).saturating_mul(prompts),
    );
    Answer {
        body: json!({
            "id": format!("cmpl-{}", parts.id),
            "object": "text_completion",
            "created": parts.created,
            "model": request.model(),
            "choices": choices,
            "usage": usage,
        }),
        usage,
    }
}

/// Anthropic's message answer; `stop_reason` is `max_tokens` when the
/// request's limit cut the text.
fn messages(request: &EndpointRequest, parts: &AnswerParts<'_>) -> Answer {
    let (tokens, finish) = capped(
        parts.wanted_tokens,
        limit(request, "max_tokens").unwrap_or(u32::MAX),
    );
    let text = echo_text(&request.last_text(), parts.echo_words);
    let usage = Usage::new(parts.prompt_tokens, tokens);
    Answer {
        body: json!({
            "id": format!("msg_{}", parts.id),
            "type": "message",
            "role": "assistant",
            "model": request.model(),
            "content": [{"type": "text", "text": text}],
            "stop_reason": if finish == "length" { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        }),
        usage,
    }
}

fn responses(request: &EndpointRequest, parts: &AnswerParts<'_>) -> Answer {
    let (tokens, _) = capped(
        parts.wanted_tokens,
        limit(request, "max_output_tokens").unwrap_or(u32::MAX),
    );
    let text = echo_text(&request.last_text(), parts.echo_words);
    let usage = Usage::new(parts.prompt_tokens, tokens);
    Answer {
        body: json!({
            "id": format!("resp_{}", parts.id),
            "object": "response",
            "created_at": parts.created,
            "status": "completed",
            "model": request.model(),
            "output": [{
                "type": "message",
                "id": format!("msg_{}", parts.id),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }],
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }),
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::ChatResponse;

    fn parts() -> AnswerParts<'static> {
        AnswerParts {
            id: "t",
            created: 1,
            prompt_tokens: 7,
            wanted_tokens: 20,
            echo_words: 3,
        }
    }

    fn answer_to(endpoint: Endpoint, body: Value) -> ChatResponse {
        let request = EndpointRequest::new(endpoint, body).unwrap();
        ChatResponse::from_body(200, answer(&request, &parts()).body)
    }

    #[test]
    fn each_shape_reads_back_its_usage_and_text() {
        let embeddings = answer_to(
            Endpoint::Embeddings,
            json!({"model": "e", "input": ["a", "b"], "dimensions": 3}),
        );
        assert_eq!(embeddings.usage(), Some(Usage::new(7, 0)));
        assert_eq!(
            embeddings.body()["data"][1]["embedding"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );

        let completions = answer_to(
            Endpoint::Completions,
            json!({"model": "c", "prompt": ["x", "one two three four"], "max_tokens": 5, "n": 2, "best_of": 3}),
        );
        assert_eq!(completions.choices().len(), 4);
        assert_eq!(completions.text(), Some("echo: one two three"));
        assert_eq!(completions.usage(), Some(Usage::new(7, 5 * 3 * 2)));

        let responses = answer_to(
            Endpoint::Responses,
            json!({"model": "r", "input": "hello there", "max_output_tokens": 50}),
        );
        assert_eq!(responses.text(), Some("echo: hello there"));
        assert_eq!(responses.usage(), Some(Usage::new(7, 20)));

        let messages = answer_to(
            Endpoint::Messages,
            json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]}),
        );
        assert_eq!(messages.body()["type"], "message");
        assert_eq!(messages.body()["stop_reason"], "max_tokens");
        assert_eq!(messages.text(), Some("echo: hello there"));
        assert_eq!(messages.usage(), Some(Usage::new(7, 5)));

        let moderations = answer_to(Endpoint::Moderations, json!({"input": ["a", "b"]}));
        assert_eq!(moderations.usage(), None);
        assert_eq!(
            moderations.body()["results"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
