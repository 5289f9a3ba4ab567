//! The chat-completions request, typed where the engine needs it and
//! lossless everywhere else.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use turbo_tokens::{DefaultOutput, Estimate, MessageRef, RequestShape, TokenCounter};

use crate::error::ProviderError;

/// A chat-completions request body.
///
/// The fields the engine reads are typed; every other field (`tools`,
/// `response_format`, `temperature`, …) lives in [`extra`](Self::extra) and is
/// sent back unchanged, so a batch line round-trips without loss.
///
/// ```
/// use turbo_providers::{ChatMessage, ChatRequest};
///
/// let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],
///                "max_tokens":20,"temperature":0.2}"#;
/// let request: ChatRequest = serde_json::from_str(body).unwrap();
/// assert_eq!(request.max_tokens, Some(20));
/// assert_eq!(request.extra["temperature"], 0.2);
/// assert_eq!(request.messages[0], ChatMessage::user("Hi"));
/// ```
// Deserialize is written by hand (request_de.rs): serde's `flatten` buffers
// every field, which dominated parsing in profiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The legacy completion limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The completion limit that supersedes `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// The number of choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Streaming; this crate refuses `Some(true)` before sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `message` with `text` as its content, as the token counters see it.
fn view<'a>(message: &'a ChatMessage, text: &'a str) -> MessageRef<'a> {
    MessageRef {
        role: &message.role,
        content: text,
        name: message.name.as_deref(),
    }
}

/// Conversations up to this many messages are viewed on the stack by
/// [`ChatRequest::with_shape`].
const SHORT_CONVERSATION: usize = 4;

impl ChatRequest {
    /// A request for `model` with `messages` and nothing else.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            max_tokens: None,
            max_completion_tokens: None,
            n: None,
            stream: None,
            extra: Map::new(),
        }
    }

    /// Sets `max_tokens`.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `max_completion_tokens`.
    #[must_use]
    pub fn with_max_completion_tokens(mut self, max_completion_tokens: u32) -> Self {
        self.max_completion_tokens = Some(max_completion_tokens);
        self
    }

    /// Sets any other field (`temperature`, `tools`, …), kept verbatim.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Parses a request from a JSON value (a batch line's `body`).
    pub fn from_value(body: Value) -> Result<Self, ProviderError> {
        serde_json::from_value(body).map_err(|error| ProviderError::InvalidRequest {
            message: error.to_string(),
        })
    }

    /// The request as a JSON value, extra fields included.
    pub fn to_value(&self) -> Value {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The completion limit the provider applies: `max_completion_tokens`, else `max_tokens`.
    pub fn output_limit(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Refuses what this crate cannot send: streaming, and a request with no messages.
    pub fn check_sendable(&self) -> Result<(), ProviderError> {
        if self.stream == Some(true) {
            return Err(ProviderError::Unsupported {
                feature: "streaming responses (\"stream\": true); send the request without it"
                    .to_owned(),
            });
        }
        if self.messages.is_empty() {
            return Err(ProviderError::InvalidRequest {
                message: "\"messages\" is empty".to_owned(),
            });
        }
        Ok(())
    }

    /// Calls `f` with a [`RequestShape`] view of this request (message text
    /// parts concatenated), for token counting.
    pub fn with_shape<R>(&self, f: impl FnOnce(&RequestShape<'_>) -> R) -> R {
        let n = self.messages.len();
        // Most requests are a short conversation: their views live on the
        // stack (this runs on every push, and two Vecs were two of a node's
        // allocations); longer ones are collected.
        if n <= SHORT_CONVERSATION {
            let texts: [Cow<'_, str>; SHORT_CONVERSATION] = std::array::from_fn(|i| {
                self.messages
                    .get(i)
                    .map_or(Cow::Borrowed(""), ChatMessage::text)
            });
            let empty = MessageRef::new("", "");
            let messages: [MessageRef<'_>; SHORT_CONVERSATION] = std::array::from_fn(|i| {
                self.messages
                    .get(i)
                    .map_or(empty, |message| view(message, &texts[i]))
            });
            return f(&self.shape_of(&messages[..n]));
        }
        let texts: Vec<Cow<'_, str>> = self.messages.iter().map(ChatMessage::text).collect();
        let messages: Vec<MessageRef<'_>> = self
            .messages
            .iter()
            .zip(&texts)
            .map(|(message, text)| view(message, text))
            .collect();
        f(&self.shape_of(&messages))
    }

    fn shape_of<'a>(&'a self, messages: &'a [MessageRef<'a>]) -> RequestShape<'a> {
        RequestShape {
            model: &self.model,
            messages,
            max_tokens: self.max_tokens,
            max_completion_tokens: self.max_completion_tokens,
            n: self.n,
        }
    }

    /// A shape with this request's model and limits but no messages, for
    /// callers that counted the prompt some other way.
    pub(crate) fn with_shape_limits<R>(&self, f: impl FnOnce(&RequestShape<'_>) -> R) -> R {
        f(&self.shape_of(&[]))
    }

    /// Prompt tokens and output reservation of this request, as `counter` counts them.
    pub fn estimate(&self, counter: &dyn TokenCounter, default_output: DefaultOutput) -> Estimate {
        self.with_shape(|shape| counter.estimate(shape, default_output))
    }

    /// Calls `f` on every piece of message text (string contents and text
    /// parts), so that callers can rewrite it in place, for example to
    /// substitute `{{id}}` placeholders.
    pub fn for_each_text_mut(&mut self, mut f: impl FnMut(&mut String)) {
        for message in &mut self.messages {
            message.for_each_text_mut(&mut f);
        }
    }

    /// The text of the last `user` message, if any.
    pub fn last_user_text(&self) -> Option<Cow<'_, str>> {
        self.messages
            .iter()
            .rev()
            .find(|message| message.role == "user")
            .map(ChatMessage::text)
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, `developer`, …
    pub role: String,
    /// The content: a string, an array of parts, or null (also when absent).
    pub content: MessageContent,
    /// The optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every other field (`tool_calls`, `tool_call_id`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with a role and text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: MessageContent::Text(content.into()),
            name: None,
            extra: Map::new(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The same message with a participant name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The message's text: the string content, or its text parts concatenated;
    /// empty for null content.
    pub fn text(&self) -> Cow<'_, str> {
        self.content.text()
    }

    /// Calls `f` on every piece of this message's text.
    pub fn for_each_text_mut(&mut self, f: &mut impl FnMut(&mut String)) {
        match &mut self.content {
            MessageContent::Text(text) => f(text),
            MessageContent::Parts(parts) => {
                for part in parts {
                    if let Some(text) = part.text_mut() {
                        f(text);
                    }
                }
            }
            MessageContent::Null => {}
        }
    }
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// An array of parts (`{"type":"text","text":…}`, `{"type":"image_url",…}`, …).
    Parts(Vec<ContentPart>),
    /// `null` or absent (an assistant message with tool calls).
    #[default]
    Null,
}

impl MessageContent {
    /// The text: the string itself, or the text parts concatenated (no separator,
    /// as the API joins them); empty for null.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Parts(parts) => {
                let mut texts = parts.iter().filter_map(ContentPart::text);
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut joined = String::from(first);
                        joined.push_str(second);
                        texts.for_each(|text| joined.push_str(text));
                        Cow::Owned(joined)
                    }
                }
            }
            Self::Null => Cow::Borrowed(""),
        }
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// One part of an array content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part's `type` (`text`, `image_url`, `input_audio`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Every other field (`image_url`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContentPart {
    /// A `text` part.
    pub fn text_part(text: impl Into<String>) -> Self {
        Self {
            kind: "text".to_owned(),
            text: Some(text.into()),
            extra: Map::new(),
        }
    }

    /// The text of a `text` part; `None` for other parts.
    pub fn text(&self) -> Option<&str> {
        if self.kind == "text" {
            self.text.as_deref()
        } else {
            None
        }
    }

    fn text_mut(&mut self) -> Option<&mut String> {
        if self.kind == "text" {
            self.text.as_mut()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use turbo_tokens::TiktokenCounter;

    fn extra_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::Null),
            proptest::collection::vec(any::<u16>(), 0..3).prop_map(|v| json!(v)),
        ]
    }

    proptest! {
        #[test]
        fn any_request_round_trips(
            model in "[a-z0-9.-]{1,16}",
            texts in proptest::collection::vec("\\PC{0,24}", 1..4),
            message_extra in proptest::collection::btree_map("[a-z_]{1,10}", extra_value(), 0..3),
            extra in proptest::collection::btree_map("[a-z_]{1,10}", extra_value(), 0..5),
            max_tokens in proptest::option::of(any::<u32>()),
            n in proptest::option::of(1u32..8),
        ) {
            let mut body = serde_json::Map::new();
            for (key, value) in extra {
                if !["model", "messages", "max_tokens", "max_completion_tokens", "n", "stream"].contains(&key.as_str()) {
                    body.insert(key, value);
                }
            }
            let messages: Vec<Value> = texts
                .iter()
                .map(|text| {
                    let mut message = serde_json::Map::new();
                    for (key, value) in &message_extra {
                        if !["role", "content", "name"].contains(&key.as_str()) {
                            message.insert(key.clone(), value.clone());
                        }
                    }
                    message.insert("role".into(), json!("user"));
                    message.insert("content".into(), json!(text));
                    Value::Object(message)
                })
                .collect();
            body.insert("model".into(), json!(model));
            body.insert("messages".into(), Value::Array(messages));
            if let Some(max_tokens) = max_tokens {
                body.insert("max_tokens".into(), json!(max_tokens));
            }
            if let Some(n) = n {
                body.insert("n".into(), json!(n));
            }
            let body = Value::Object(body);
            let text = serde_json::to_string(&body).unwrap();
            let request: ChatRequest = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(request.max_tokens, max_tokens);
            prop_assert_eq!(&request.messages[0].text(), &texts[0]);
            prop_assert_eq!(request.to_value(), body);
        }
    }

    #[test]
    fn unknown_fields_round_trip() {
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "image_url", "image_url": {"url": "data:x"}},
                    {"type": "text", "text": "this?"}
                ], "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"}
            ],
            "max_completion_tokens": 30,
            "n": 2,
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"}
        });
        let request = ChatRequest::from_value(body.clone()).unwrap();
        assert_eq!(request.messages[1].text(), "What is this?");
        assert_eq!(request.messages[2].content, MessageContent::Null);
        assert_eq!(request.output_limit(), Some(30));
        assert_eq!(request.to_value(), body);
    }

    #[test]
    fn placeholders_can_be_rewritten_in_every_text() {
        let mut request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::user("Summarise {{a}}"),
                ChatMessage {
                    role: "user".into(),
                    content: MessageContent::Parts(vec![
                        ContentPart::text_part("and {{a}}"),
                        ContentPart {
                            kind: "image_url".into(),
                            text: Some("{{a}}".into()),
                            extra: Map::new(),
                        },
                    ]),
                    name: None,
                    extra: Map::new(),
                },
            ],
        );
        request.for_each_text_mut(|text| *text = text.replace("{{a}}", "X"));
        assert_eq!(request.messages[0].text(), "Summarise X");
        assert_eq!(request.messages[1].text(), "and X");
        // Non-text parts are not text, even if they carry a "text" field.
        let MessageContent::Parts(parts) = &request.messages[1].content else {
            panic!("parts expected")
        };
        assert_eq!(parts[1].text.as_deref(), Some("{{a}}"));
    }

    #[test]
    fn refuses_streaming_and_empty_conversations() {
        let mut request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        assert!(request.check_sendable().is_ok());
        request.stream = Some(true);
        assert!(matches!(
            request.check_sendable(),
            Err(ProviderError::Unsupported { .. })
        ));
        let empty = ChatRequest::new("m", vec![]);
        assert!(matches!(
            empty.check_sendable(),
            Err(ProviderError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn estimates_with_the_counter() {
        let request =
            ChatRequest::new("gpt-4o", vec![ChatMessage::user("hello world")]).with_max_tokens(50);
        let estimate = request.estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(7));
        // 3 priming + 3 per message + "user" (1) + "hello world" (2).
        assert_eq!(estimate.prompt_tokens, 9);
        assert_eq!(estimate.output_reservation, 50);
        let shape_model = request.with_shape(|shape| shape.messages[0].content.to_owned());
        assert_eq!(shape_model, "hello world");
    }

    /// Short conversations are viewed on the stack, longer ones collected:
    /// both views hold every message, in order, with its role, text and
    /// name, and nothing else.
    #[test]
    fn the_shape_holds_every_message_of_short_and_long_conversations() {
        for n in [0, 1, SHORT_CONVERSATION, SHORT_CONVERSATION + 1, 9] {
            let messages: Vec<ChatMessage> = (0..n)
                .map(|i| {
                    let message = ChatMessage::user(format!("message {i}"));
                    if i % 2 == 1 {
                        message.with_name(format!("n{i}"))
                    } else {
                        message
                    }
                })
                .collect();
            let request = ChatRequest::new("gpt-4o", messages.clone());
            let seen: Vec<(String, String, Option<String>)> = request.with_shape(|shape| {
                assert_eq!(shape.model, "gpt-4o");
                shape
                    .messages
                    .iter()
                    .map(|m| {
                        (
                            m.role.to_owned(),
                            m.content.to_owned(),
                            m.name.map(str::to_owned),
                        )
                    })
                    .collect()
            });
            let expected: Vec<(String, String, Option<String>)> = messages
                .iter()
                .map(|m| (m.role.clone(), m.text().into_owned(), m.name.clone()))
                .collect();
            assert_eq!(seen, expected, "{n} messages");
        }
    }

    #[test]
    fn constructors_and_last_user_text() {
        let request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::system("s"),
                ChatMessage::user("first"),
                ChatMessage::assistant("a").with_name("bot"),
                ChatMessage::user("second"),
            ],
        )
        .with_extra("seed", json!(3));
        assert_eq!(request.last_user_text().as_deref(), Some("second"));
        assert_eq!(request.to_value()["seed"], 3);
        assert_eq!(request.to_value()["messages"][2]["name"], "bot");
        assert!(request.to_value().get("max_tokens").is_none());
    }
}
