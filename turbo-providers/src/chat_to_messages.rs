//! A chat-completions request as an Anthropic `/v1/messages` body, so that a
//! [`ChatRequest`] built for OpenAI runs on Anthropic too.
//!
//! - `system` (and `developer`) messages become the top-level `system`
//!   prompt, their texts joined by a blank line; `user` and `assistant`
//!   messages stay messages, in order, with string content or text blocks.
//! - `max_tokens` is `max_completion_tokens`, else `max_tokens`, else
//!   [`DEFAULT_CHAT_MAX_TOKENS`] (Anthropic requires one; OpenAI does not).
//! - `temperature`, `top_p` and `stop` (as `stop_sequences`) carry over;
//!   `user` becomes `metadata.user_id`.
//!
//! What has no faithful translation is refused with
//! [`ProviderError::Unsupported`] rather than dropped: other roles (`tool`),
//! parts other than text (images), `n` > 1, and any other field (`seed`,
//! `response_format`, `tools`, …): send such requests as `/v1/messages`
//! bodies instead.

use serde_json::{Map, Value, json};

use crate::error::ProviderError;
use crate::request::{ChatRequest, MessageContent};

/// `max_tokens` of a converted chat request that sets no limit.
pub const DEFAULT_CHAT_MAX_TOKENS: u32 = 4096;

/// Fields copied as they are.
const COPIED: [&str; 2] = ["temperature", "top_p"];

fn unsupported(what: String) -> ProviderError {
    ProviderError::Unsupported {
        feature: format!("{what} in a chat request sent to Anthropic; send a /v1/messages body"),
    }
}

/// The `/v1/messages` body of `request`.
pub(crate) fn messages_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(unsupported("\"n\" above 1".to_owned()));
    }
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => system.push(message.text().into_owned()),
            role @ ("user" | "assistant") => {
                let content = match &message.content {
                    MessageContent::Text(text) => Value::String(text.clone()),
                    MessageContent::Parts(parts) => {
                        let blocks = parts
                            .iter()
                            .map(|part| match part.text() {
                                Some(text) => Ok(json!({"type": "text", "text": text})),
                                None => Err(unsupported(format!(
                                    "a {:?} part (messages[{index}])",
                                    part.kind
                                ))),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        Value::Array(blocks)
                    }
                    MessageContent::Null => {
                        return Err(unsupported(format!(
                            "a message without content (messages[{index}])"
                        )));
                    }
                };
                messages.push(json!({"role": role, "content": content}));
            }
            other => {
                return Err(unsupported(format!(
                    "the role {other:?} (messages[{index}])"
                )));
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::String(request.model.clone()));
    body.insert(
        "max_tokens".to_owned(),
        Value::from(request.output_limit().unwrap_or(DEFAULT_CHAT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".to_owned(), Value::String(system.join("\n\n")));
    }
    body.insert("messages".to_owned(), Value::Array(messages));
    for (key, value) in &request.extra {
        match key.as_str() {
            copied if COPIED.contains(&copied) => {
                body.insert(key.clone(), value.clone());
            }
            "stop" => {
                let sequences = match value {
                    Value::String(stop) => json!([stop]),
                    Value::Null => continue,
                    other => other.clone(),
                };
                body.insert("stop_sequences".to_owned(), sequences);
            }
            "user" => {
                body.insert("metadata".to_owned(), json!({"user_id": value}));
            }
            other => return Err(unsupported(format!("the field {other:?}"))),
        }
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::endpoint_request::EndpointRequest;
    use crate::request::{ChatMessage, ContentPart};

    #[test]
    fn a_chat_becomes_a_valid_messages_body() {
        let request = ChatRequest::new(
            "claude-haiku-4-5",
            vec![
                ChatMessage::system("Be brief."),
                ChatMessage::new("developer", "Use French."),
                ChatMessage::user("Hi"),
                ChatMessage::assistant("Bonjour"),
                ChatMessage {
                    content: MessageContent::Parts(vec![ContentPart::text_part("Again")]),
                    ..ChatMessage::user("")
                },
            ],
        )
        .with_max_completion_tokens(50)
        .with_extra("temperature", json!(0.5))
        .with_extra("stop", json!("END"))
        .with_extra("user", json!("u-1"));
        let body = messages_body(&request).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 50,
                "system": "Be brief.\n\nUse French.",
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Bonjour"},
                    {"role": "user", "content": [{"type": "text", "text": "Again"}]}
                ],
                "temperature": 0.5,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"}
            })
        );
        assert!(EndpointRequest::new(Endpoint::Messages, body).is_ok());
        let bare = ChatRequest::new("m", vec![ChatMessage::user("x")]);
        assert_eq!(
            messages_body(&bare).unwrap()["max_tokens"],
            DEFAULT_CHAT_MAX_TOKENS
        );
    }

    #[test]
    fn what_cannot_be_translated_is_refused() {
        let user = || ChatRequest::new("m", vec![ChatMessage::user("x")]);
        let mut two = user();
        two.n = Some(2);
        let tool = ChatRequest::new("m", vec![ChatMessage::new("tool", "42")]);
        let image = ChatRequest::new(
            "m",
            vec![ChatMessage {
                content: MessageContent::Parts(vec![ContentPart {
                    kind: "image_url".to_owned(),
                    text: None,
                    extra: Map::new(),
                }]),
                ..ChatMessage::user("")
            }],
        );
        let seeded = user().with_extra("seed", json!(1));
        for (request, names) in [
            (two, "\"n\""),
            (tool, "\"tool\""),
            (image, "\"image_url\""),
            (seeded, "\"seed\""),
        ] {
            let error = messages_body(&request).unwrap_err();
            assert!(matches!(error, ProviderError::Unsupported { .. }));
            assert!(error.to_string().contains(names), "{error}");
        }
    }
}
