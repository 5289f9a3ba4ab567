//! Estimating an OpenAI chat-completions request body given as JSON.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::{DefaultOutput, Estimate, MessageRef, RequestShape, TokenCounter, TokenError};

/// Estimates an OpenAI chat-completions request body.
///
/// Reads `model` (required), `messages` (required; each with a string `role`, a `content`
/// that is a string, an array of parts, `null` or absent, and an optional string `name`),
/// `max_tokens`, `max_completion_tokens` and `n`. Of content parts, only `{"type": "text",
/// "text": ...}` ones are counted, concatenated; images, audio and files are not estimated.
/// Other fields (tools, response formats, ...) are ignored.
///
/// # Errors
/// A [`TokenError`] naming the first field that is missing or malformed, e.g.
/// `messages[2].content: expected string or array of parts`.
///
/// ```
/// use turbo_tokens::{estimate_json, DefaultOutput, TiktokenCounter};
/// let body = serde_json::json!({
///     "model": "gpt-4o-mini",
///     "messages": [{"role": "user", "content": "hi"}],
///     "max_tokens": 200,
/// });
/// let estimate = estimate_json(&TiktokenCounter::new(), &body, DefaultOutput::Tokens(1000))?;
/// assert_eq!((estimate.prompt_tokens, estimate.output_reservation), (8, 200));
/// # Ok::<(), turbo_tokens::TokenError>(())
/// ```
pub fn estimate_json(
    counter: &dyn TokenCounter,
    body: &Value,
    default_output: DefaultOutput,
) -> Result<Estimate, TokenError> {
    let body = body.as_object().ok_or(TokenError::NotAnObject)?;
    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(missing("model".to_owned())),
        Some(Value::String(model)) => model.as_str(),
        Some(_) => return Err(invalid("model".to_owned(), "string")),
    };
    let raw_messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages".to_owned())),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(invalid("messages".to_owned(), "array of messages")),
    };
    let parsed = raw_messages
        .iter()
        .enumerate()
        .map(|(index, message)| parse_message(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    let messages: Vec<MessageRef<'_>> = parsed
        .iter()
        .map(|message| MessageRef {
            role: message.role,
            content: &message.content,
            name: message.name,
        })
        .collect();
    let request = RequestShape {
        model,
        messages: &messages,
        max_tokens: optional_u32(body, "max_tokens", 0)?,
        max_completion_tokens: optional_u32(body, "max_completion_tokens", 0)?,
        n: optional_u32(body, "n", 1)?,
    };
    Ok(counter.estimate(&request, default_output))
}

struct ParsedMessage<'a> {
    role: &'a str,
    content: Cow<'a, str>,
    name: Option<&'a str>,
}

fn parse_message(index: usize, message: &Value) -> Result<ParsedMessage<'_>, TokenError> {
    let path = || format!("messages[{index}]");
    let message = message
        .as_object()
        .ok_or_else(|| invalid(path(), "object"))?;
    let role = match message.get("role") {
        None | Some(Value::Null) => return Err(missing(format!("{}.role", path()))),
        Some(Value::String(role)) => role.as_str(),
        Some(_) => return Err(invalid(format!("{}.role", path()), "string")),
    };
    let content = match message.get("content") {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(content)) => Cow::Borrowed(content.as_str()),
        Some(Value::Array(parts)) => concat_text_parts(index, parts)?,
        Some(_) => {
            return Err(invalid(
                format!("{}.content", path()),
                "string or array of parts",
            ));
        }
    };
    let name = match message.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.as_str()),
        Some(_) => return Err(invalid(format!("{}.name", path()), "string")),
    };
    Ok(ParsedMessage {
        role,
        content,
        name,
    })
}

fn concat_text_parts(index: usize, parts: &[Value]) -> Result<Cow<'_, str>, TokenError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (part_index, part) in parts.iter().enumerate() {
        let path = || format!("messages[{index}].content[{part_index}]");
        let part = part.as_object().ok_or_else(|| invalid(path(), "object"))?;
        let kind = match part.get("type") {
            None | Some(Value::Null) => return Err(missing(format!("{}.type", path()))),
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(invalid(format!("{}.type", path()), "string")),
        };
        if kind != "text" {
            continue;
        }
        match part.get("text") {
            None | Some(Value::Null) => return Err(missing(format!("{}.text", path()))),
            Some(Value::String(text)) => texts.push(text.as_str()),
            Some(_) => return Err(invalid(format!("{}.text", path()), "string")),
        }
    }
    Ok(match texts.as_slice() {
        [] => Cow::Borrowed(""),
        [only] => Cow::Borrowed(only),
        _ => Cow::Owned(texts.concat()),
    })
}

/// An optional non-negative integer field that must fit a `u32` and be at least `min`.
fn optional_u32(
    body: &Map<String, Value>,
    field: &str,
    min: u32,
) -> Result<Option<u32>, TokenError> {
    let expected = if min == 0 {
        "integer from 0 to 4294967295"
    } else {
        "integer from 1 to 4294967295"
    };
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|value| u32::try_from(value).ok())
            .filter(|value| *value >= min)
            .map(Some)
            .ok_or_else(|| invalid(field.to_owned(), expected)),
    }
}

fn missing(path: String) -> TokenError {
    TokenError::MissingField { path }
}

fn invalid(path: String, expected: &'static str) -> TokenError {
    TokenError::InvalidField { path, expected }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::MockTokenCounter;

    #[test]
    fn passes_the_parsed_shape_to_the_counter() {
        let mut counter = MockTokenCounter::new();
        counter
            .expect_estimate()
            .withf(|request, default_output| {
                request.model == "gpt-4o"
                    && request.messages
                        == [
                            MessageRef::new("system", "sys"),
                            MessageRef::new("user", "ab").with_name("bob"),
                            MessageRef::new("assistant", ""),
                        ]
                    && request.max_tokens == Some(10)
                    && request.max_completion_tokens == Some(20)
                    && request.n == Some(3)
                    && *default_output == DefaultOutput::GROQ
            })
            .times(1)
            .returning(|_, _| Estimate {
                prompt_tokens: 7,
                output_reservation: 60,
            });
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "name": "bob", "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                    {"type": "text", "text": "b"},
                ]},
                {"role": "assistant", "content": null, "tool_calls": []},
            ],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "n": 3,
            "temperature": 0.5,
        });
        let estimate = estimate_json(&counter, &body, DefaultOutput::GROQ).unwrap();
        assert_eq!(estimate.total(), 67);
    }
}
