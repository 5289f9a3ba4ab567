//! Anthropic's `/v1/messages` request body, read where the engine needs it:
//! what the API requires of it, the texts it counts and fills placeholders
//! in, and its estimate (`turbo_tokens::messages_prompt_tokens`, an
//! approximation: there is no public Claude tokenizer).
//!
//! The body itself passes through untouched, as every
//! [`EndpointRequest`](crate::EndpointRequest)'s does.

use serde_json::{Map, Value};
use turbo_tokens::{Estimate, estimate_of, messages_prompt_tokens};

/// The roles a message may have (`system` is a top-level field, not a role).
const ROLES: [&str; 2] = ["user", "assistant"];

/// Every problem of `body` as a `/v1/messages` request, each naming its field.
pub(crate) fn problems(body: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    match body.get("model") {
        None | Some(Value::Null) => problems.push("body.model is missing".to_owned()),
        Some(Value::String(model)) if !model.trim().is_empty() => {}
        Some(_) => problems.push("body.model must be a non-empty string".to_owned()),
    }
    match body.get("max_tokens") {
        None | Some(Value::Null) => problems.push(
            "body.max_tokens is missing: a messages request must set it (a positive integer)"
                .to_owned(),
        ),
        Some(value) if max_tokens_of(value).is_some() => {}
        Some(value) => problems.push(format!(
            "body.max_tokens must be a positive integer, found {value}"
        )),
    }
    if body.get("stream") == Some(&Value::Bool(true)) {
        problems.push(
            "body.stream is true: batch requests cannot stream; remove \"stream\"".to_owned(),
        );
    }
    match body.get("messages") {
        None | Some(Value::Null) => problems.push(if body.contains_key("input") {
            "body.messages is missing: a messages request takes \"messages\", not \"input\""
                .to_owned()
        } else {
            "body.messages is missing: a messages request needs it".to_owned()
        }),
        Some(Value::Array(messages)) if messages.is_empty() => {
            problems.push("body.messages is an empty array".to_owned());
        }
        Some(Value::Array(messages)) => {
            for (index, message) in messages.iter().enumerate() {
                if let Err(problem) = check_message(message) {
                    problems.push(format!("body.messages[{index}]{problem}"));
                }
            }
        }
        Some(_) => problems.push("body.messages must be an array of messages".to_owned()),
    }
    match body.get("system") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(blocks)) if blocks.iter().all(is_text_block) => {}
        Some(_) => problems.push(
            "body.system must be a string or an array of text blocks ({\"type\": \"text\", \"text\": …})"
                .to_owned(),
        ),
    }
    problems
}

/// Checks one message; the error completes "body.messages[i]…".
fn check_message(message: &Value) -> Result<(), String> {
    let Some(message) = message.as_object() else {
        return Err(" must be an object with \"role\" and \"content\"".to_owned());
    };
    match message.get("role").and_then(Value::as_str) {
        Some(role) if ROLES.contains(&role) => {}
        Some("system") => {
            return Err(
                ".role \"system\" is not a message role: put the system prompt in body.system"
                    .to_owned(),
            );
        }
        _ => return Err(".role must be \"user\" or \"assistant\"".to_owned()),
    }
    match message.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks))
            if blocks
                .iter()
                .all(|block| block.get("type").is_some_and(Value::is_string)) =>
        {
            Ok(())
        }
        _ => Err(
            ".content must be a string or an array of content blocks (objects with a \"type\")"
                .to_owned(),
        ),
    }
}

fn is_text_block(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("text")
        && block.get("text").is_some_and(Value::is_string)
}

fn max_tokens_of(value: &Value) -> Option<u32> {
    value
        .as_u64()
        .and_then(|number| u32::try_from(number).ok())
        .filter(|tokens| *tokens > 0)
}

/// `max_tokens` (validated to be positive when the request was made).
pub(crate) fn max_tokens(body: &Map<String, Value>) -> u32 {
    body.get("max_tokens").and_then(max_tokens_of).unwrap_or(0)
}

/// Prompt tokens by the documented approximation, output reservation =
/// `max_tokens`.
pub(crate) fn estimate(body: &Map<String, Value>, count: impl FnMut(&str) -> usize) -> Estimate {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let system = usize::from(matches!(
        body.get("system"),
        Some(Value::String(_) | Value::Array(_))
    ));
    // Tool inputs and definitions are counted as their JSON text.
    let tool_json: Vec<String> = tool_values(body).map(Value::to_string).collect();
    let texts = texts(body).chain(tool_json.iter().map(String::as_str));
    estimate_of(
        messages_prompt_tokens(texts, messages + system, count),
        max_tokens(body),
    )
}

/// The system prompt's texts, then each message's (string content, `text`
/// blocks, and the texts of `tool_result` blocks).
fn texts(body: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let system: Vec<&str> = match body.get("system") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(blocks)) => blocks.iter().filter_map(block_text).collect(),
        _ => Vec::new(),
    };
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|message| content_texts(message.get("content")));
    system.into_iter().chain(messages)
}

fn content_texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .flat_map(|block| match block.get("type").and_then(Value::as_str) {
                Some("text") => block_text(block).into_iter().collect(),
                Some("tool_result") => content_texts(block.get("content")),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn block_text(block: &Value) -> Option<&str> {
    (block.get("type")?.as_str()? == "text")
        .then(|| block.get("text")?.as_str())
        .flatten()
}

/// `tool_use` inputs of the messages, and the `tools` definitions.
fn tool_values(body: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    let inputs = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content")?.as_array())
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
        .filter_map(|block| block.get("input"));
    inputs.chain(body.get("tools"))
}

/// The text of the last user message (the simulated answers' echo, the
/// mock's prompt key).
pub(crate) fn last_user_text(body: &Map<String, Value>) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .map(|message| content_texts(message.get("content")).concat())
        .unwrap_or_default()
}

/// Calls `f` on every text placeholders may appear in: the system prompt
/// (string or text blocks) and each message's string content or text blocks.
pub(crate) fn for_each_text_mut(body: &mut Map<String, Value>, mut f: impl FnMut(&mut String)) {
    if let Some(system) = body.get_mut("system") {
        each_text_mut(system, &mut f);
    }
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        for content in messages.iter_mut().filter_map(|m| m.get_mut("content")) {
            each_text_mut(content, &mut f);
        }
    }
}

fn each_text_mut(content: &mut Value, f: &mut impl FnMut(&mut String)) {
    match content {
        Value::String(text) => f(text),
        Value::Array(blocks) => {
            for block in blocks.iter_mut().filter_map(Value::as_object_mut) {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    continue;
                }
                if let Some(Value::String(text)) = block.get_mut("text") {
                    f(text);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use turbo_tokens::{Encoding, TiktokenCounter, TokenCounter};

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    fn problems_of(value: Value) -> String {
        problems(&object(value)).join("; ")
    }

    #[test]
    fn a_valid_body_has_no_problems() {
        let body = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                {"role": "user", "content": [{"type": "image", "source": {}}]}
            ],
            "temperature": 0.2
        });
        assert_eq!(problems_of(body), "");
    }

    #[test]
    fn each_problem_names_its_field() {
        let none = problems_of(json!({}));
        for field in ["body.model", "body.max_tokens", "body.messages"] {
            assert!(none.contains(field), "{none}");
        }
        let cases = [
            (
                json!({"max_tokens": 0}),
                "body.max_tokens must be a positive integer",
            ),
            (
                json!({"max_tokens": "5"}),
                "body.max_tokens must be a positive integer",
            ),
            (
                json!({"max_tokens": -3}),
                "body.max_tokens must be a positive integer",
            ),
            (json!({"model": 3}), "body.model must be a non-empty string"),
            (json!({"messages": []}), "body.messages is an empty array"),
            (json!({"messages": {}}), "body.messages must be an array"),
            (json!({"input": "x"}), "not \"input\""),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "body.messages[0].role \"system\"",
            ),
            (
                json!({"messages": [{"role": "bot", "content": "x"}]}),
                "body.messages[0].role must be",
            ),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "body.messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "body.messages[0].content",
            ),
            (
                json!({"messages": [1]}),
                "body.messages[0] must be an object",
            ),
            (json!({"system": 5}), "body.system must be"),
            (
                json!({"system": [{"type": "image"}]}),
                "body.system must be",
            ),
            (json!({"stream": true}), "body.stream"),
        ];
        for (body, expected) in cases {
            let found = problems_of(body.clone());
            assert!(found.contains(expected), "{body}: {found}");
        }
    }

    #[test]
    fn the_estimate_counts_every_text_and_reserves_max_tokens() {
        let counter = TiktokenCounter::new();
        let count = |text: &str| counter.count_text(Encoding::Cl100kBase, text);
        let body = object(json!({
            "model": "claude-haiku-4-5", "max_tokens": 300,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Hello, world!"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi."}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "42"}]}]}
            ]
        }));
        let texts = ["Be brief.", "Hello, world!", "Hi.", "42", "{\"a\":1}"];
        let counted: usize = texts.iter().map(|text| count(text)).sum();
        let expected = (counted * 6).div_ceil(5) + 3 * 4 + 3;
        let estimate = estimate(&body, count);
        assert_eq!(estimate.prompt_tokens as usize, expected);
        assert_eq!(estimate.output_reservation, 300);
        assert_eq!(last_user_text(&body), "42");
    }

    #[test]
    fn placeholders_reach_system_and_message_texts_only() {
        let mut body = object(json!({
            "system": [{"type": "text", "text": "{{a}}"}],
            "messages": [
                {"role": "user", "content": "{{a}}"},
                {"role": "user", "content": [{"type": "text", "text": "{{a}}"}, {"type": "image", "source": {"data": "{{a}}"}}]}
            ]
        }));
        let mut seen = 0;
        for_each_text_mut(&mut body, |text| {
            seen += 1;
            *text = text.replace("{{a}}", "A");
        });
        assert_eq!(seen, 3);
        assert_eq!(body["system"][0]["text"], "A");
        assert_eq!(body["messages"][1]["content"][1]["source"]["data"], "{{a}}");
    }
}
