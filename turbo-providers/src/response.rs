//! The chat-completions response.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::error::ProviderError;
use crate::headers::{LimitWindow, RateLimitSnapshot};

/// Token usage the provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (the Responses API's `input_tokens`).
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u32,
    /// Tokens of all completions (the Responses API's `output_tokens`).
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u32,
    /// Their sum, as the provider reports it.
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    /// Usage with `total_tokens` computed.
    pub const fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// What a response without rate-limit headers reports (the default snapshot).
static NO_RATE_LIMIT: RateLimitSnapshot = RateLimitSnapshot {
    limit_requests: None,
    limit_tokens: None,
    remaining_requests: None,
    remaining_tokens: None,
    reset_requests: None,
    reset_tokens: None,
    requests_window: LimitWindow::Minute,
    tokens_window: LimitWindow::Minute,
    limit_output_tokens: None,
    remaining_output_tokens: None,
    reset_output_tokens: None,
};

/// A successful (2xx) chat-completions answer.
///
/// The body is kept whole (batch output writes it verbatim). An answer read
/// from HTTP keeps the bytes as received and only reads `usage` from them; the
/// JSON tree behind [`Self::body`], [`Self::text`] and the other accessors is
/// built on first use, so a result that is only written out costs no tree.
/// Synthetic responses (simulations, mocks) likewise build their JSON body
/// only when asked for it.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    status: u16,
    content: Content,
    usage: Option<Usage>,
    request_id: Option<String>,
    // Boxed, and absent when it is the default: the snapshot is larger than
    // the rest of the response, which callers keep in their own enums.
    rate_limit: Option<Box<RateLimitSnapshot>>,
    retry_after: Option<Duration>,
    latency: Duration,
}

#[derive(Debug, Clone)]
enum Content {
    Json(Value),
    Raw(Box<Raw>),
    Synthetic(Box<Synthetic>),
}

/// A body kept as the provider sent it: checked to be one JSON object when
/// received, its tree built on first use.
#[derive(Clone)]
struct Raw {
    bytes: Box<[u8]>,
    body: OnceLock<Value>,
}

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raw")
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .finish_non_exhaustive()
    }
}

impl Raw {
    fn body(&self) -> &Value {
        self.body.get_or_init(|| parse_checked(&self.bytes))
    }
}

/// The tree of bytes already checked to be a JSON object. The check scans
/// numbers without converting them, so a number beyond `f64` passes it but
/// cannot become a tree: such a body reads as `null` (its bytes are still
/// what [`ChatResponse::raw_json`] returns).
fn parse_checked(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// What is read from a body on arrival: that it is a JSON object, and its
/// `usage` (read as [`ChatResponse::from_body`] reads it, later keys winning).
struct Envelope {
    usage: Option<Usage>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut usage = None;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Usage => {
                    let value: Value = map.next_value()?;
                    usage = read_usage(&value);
                }
                EnvelopeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Envelope { usage })
    }
}

enum EnvelopeKey {
    Usage,
    Other,
}

impl<'de> Deserialize<'de> for EnvelopeKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = EnvelopeKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<EnvelopeKey, E> {
                Ok(if key == "usage" {
                    EnvelopeKey::Usage
                } else {
                    EnvelopeKey::Other
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// `usage` in any endpoint's shape (`prompt_tokens`/`completion_tokens`, or
/// the Responses and Messages APIs' `input_tokens`/`output_tokens`).
///
/// Anthropic's answers split the prompt: `input_tokens` (uncached),
/// `cache_creation_input_tokens` and `cache_read_input_tokens`. The prompt
/// tokens are what counts against Anthropic's input-tokens-per-minute limit:
/// `input_tokens + cache_creation_input_tokens`; cache reads do not count
/// against it for current models (Anthropic's rate-limit docs), so they are
/// left out (they stay in the body). Anthropic sends no `total_tokens`: a
/// missing total is the sum.
fn read_usage(usage: &Value) -> Option<Usage> {
    let wire = usage
        .is_object()
        .then(|| WireUsage::deserialize(usage).ok())
        .flatten()?;
    let prompt_tokens = wire
        .prompt_tokens
        .or(wire.input_tokens)
        .unwrap_or(0)
        .saturating_add(wire.cache_creation_input_tokens.unwrap_or(0));
    let completion_tokens = wire.completion_tokens.or(wire.output_tokens).unwrap_or(0);
    // A missing total stays 0 in OpenAI's shape, as it always has.
    let input_output = wire.input_tokens.is_some() || wire.output_tokens.is_some();
    let total_tokens = wire.total_tokens.unwrap_or(if input_output {
        prompt_tokens.saturating_add(completion_tokens)
    } else {
        0
    });
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
    })
}

/// `usage` as providers send it.
#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u32>,
    input_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    output_tokens: Option<u32>,
    total_tokens: Option<u32>,
    cache_creation_input_tokens: Option<u32>,
}

/// The parts of a synthetic answer; the JSON body is derived on first use, so a
/// simulated call that nobody serialises costs no JSON tree.
#[derive(Debug, Clone)]
struct Synthetic {
    id: String,
    model: String,
    text: String,
    finish_reason: &'static str,
    choices: u32,
    body: OnceLock<Value>,
}

impl PartialEq for ChatResponse {
    fn eq(&self, other: &Self) -> bool {
        self.status == other.status
            && self.usage == other.usage
            && self.request_id == other.request_id
            && self.rate_limit == other.rate_limit
            && self.retry_after == other.retry_after
            && self.latency == other.latency
            && self.body() == other.body()
    }
}

impl ChatResponse {
    /// A response from its status and parsed body; `usage` is read from the body.
    pub fn from_body(status: u16, body: Value) -> Self {
        let usage = body.get("usage").and_then(read_usage);
        Self {
            status,
            content: Content::Json(body),
            usage,
            request_id: None,
            rate_limit: None,
            retry_after: None,
            latency: Duration::ZERO,
        }
    }

    /// A response from the bytes of its body, kept as received: checks that
    /// they are one JSON object and reads `usage`, without building a tree.
    /// Anything else is a [`ProviderError::Decode`].
    ///
    /// ```
    /// use turbo_providers::{ChatResponse, Usage};
    ///
    /// let bytes = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
    /// let response = ChatResponse::from_json_bytes(200, bytes).unwrap();
    /// assert_eq!(response.usage(), Some(Usage::new(2, 1)));
    /// assert_eq!(response.text(), Some("hi"));
    /// assert_eq!(response.raw_json(), Some(&bytes[..]));
    /// assert!(ChatResponse::from_json_bytes(200, b"[1]").is_err());
    /// ```
    pub fn from_json_bytes(status: u16, bytes: &[u8]) -> Result<Self, ProviderError> {
        let envelope =
            serde_json::from_slice::<Envelope>(bytes).map_err(|error| ProviderError::Decode {
                status,
                message: if error.is_data() {
                    "the body is not a JSON object".to_owned()
                } else {
                    format!("the body is not JSON: {error}")
                },
            })?;
        Ok(Self {
            status,
            content: Content::Raw(Box::new(Raw {
                bytes: bytes.into(),
                body: OnceLock::new(),
            })),
            usage: envelope.usage,
            request_id: None,
            rate_limit: None,
            retry_after: None,
            latency: Duration::ZERO,
        })
    }

    /// A 200 response shaped like OpenAI's, with one choice whose message is
    /// `text`; for simulations, mocks and tests.
    ///
    /// ```
    /// use turbo_providers::{ChatResponse, Usage};
    ///
    /// let response = ChatResponse::synthetic("gpt-4o-mini", "hello", Usage::new(10, 1));
    /// assert_eq!(response.text(), Some("hello"));
    /// assert_eq!(response.usage().map(|u| u.total_tokens), Some(11));
    /// assert_eq!(response.body()["choices"][0]["message"]["content"], "hello");
    /// ```
    pub fn synthetic(model: &str, text: &str, usage: Usage) -> Self {
        Self::synthetic_parts(
            "chatcmpl-synthetic".to_owned(),
            model.to_owned(),
            text.to_owned(),
            "stop",
            1,
            usage,
        )
    }

    pub(crate) fn synthetic_parts(
        id: String,
        model: String,
        text: String,
        finish_reason: &'static str,
        choices: u32,
        usage: Usage,
    ) -> Self {
        Self {
            status: 200,
            content: Content::Synthetic(Box::new(Synthetic {
                id,
                model,
                text,
                finish_reason,
                choices,
                body: OnceLock::new(),
            })),
            usage: Some(usage),
            request_id: None,
            rate_limit: None,
            retry_after: None,
            latency: Duration::ZERO,
        }
    }

    /// Sets the `x-request-id`.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the rate-limit snapshot.
    #[must_use]
    pub fn with_rate_limit(mut self, rate_limit: RateLimitSnapshot) -> Self {
        self.rate_limit = (rate_limit != NO_RATE_LIMIT).then(|| Box::new(rate_limit));
        self
    }

    /// Sets the `retry-after` the response carried.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Sets the latency.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The HTTP status code (2xx).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The whole response body, as received (built on first call for synthetic responses).
    pub fn body(&self) -> &Value {
        match &self.content {
            Content::Json(body) => body,
            Content::Raw(raw) => raw.body(),
            Content::Synthetic(synthetic) => synthetic
                .body
                .get_or_init(|| synthetic.to_body(self.usage.unwrap_or_default())),
        }
    }

    /// Takes the body out, for writing it verbatim.
    pub fn into_body(self) -> Value {
        match self.content {
            Content::Json(body) => body,
            Content::Raw(mut raw) => match raw.body.take() {
                Some(body) => body,
                None => parse_checked(&raw.bytes),
            },
            Content::Synthetic(mut synthetic) => match synthetic.body.take() {
                Some(body) => body,
                None => synthetic.to_body(self.usage.unwrap_or_default()),
            },
        }
    }

    /// The body exactly as the provider sent it, when it was kept that way
    /// (answers read over HTTP); `None` for responses built from a tree or
    /// synthetic ones. Batch output copies these bytes instead of
    /// re-serialising [`Self::body`].
    pub fn raw_json(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Raw(raw) => Some(&raw.bytes),
            Content::Json(_) | Content::Synthetic(_) => None,
        }
    }

    /// The completion's `id`.
    pub fn id(&self) -> Option<&str> {
        match &self.content {
            Content::Synthetic(synthetic) => Some(&synthetic.id),
            Content::Json(_) | Content::Raw(_) => self.body().get("id")?.as_str(),
        }
    }

    /// The `model` the provider answered with.
    pub fn model(&self) -> Option<&str> {
        match &self.content {
            Content::Synthetic(synthetic) => Some(&synthetic.model),
            Content::Json(_) | Content::Raw(_) => self.body().get("model")?.as_str(),
        }
    }

    /// The text of the first choice's message, when it is a string; for a
    /// completions answer the first choice's `text`, for a responses answer
    /// the first `output_text` part of its output, for an Anthropic message
    /// its first `text` block.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Synthetic(synthetic) => (synthetic.choices > 0).then_some(&*synthetic.text),
            Content::Json(_) | Content::Raw(_) => self
                .choice_texts()
                .next()
                .flatten()
                .or_else(|| self.choices().first()?.get("text")?.as_str())
                .or_else(|| self.output_text())
                .or_else(|| self.message_text()),
        }
    }

    /// The first `output_text` part of a Responses API answer's `output`.
    fn output_text(&self) -> Option<&str> {
        self.body()
            .get("output")?
            .as_array()?
            .iter()
            .filter_map(|item| item.get("content")?.as_array())
            .flatten()
            .find(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))?
            .get("text")?
            .as_str()
    }

    /// The first `text` block of an Anthropic message's `content`.
    fn message_text(&self) -> Option<&str> {
        self.body()
            .get("content")?
            .as_array()?
            .iter()
            .find(|block| block.get("type").and_then(Value::as_str) == Some("text"))?
            .get("text")?
            .as_str()
    }

    /// The message text of every choice, in order (`None` for a choice whose
    /// content is null, e.g. a tool call).
    pub fn choice_texts(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.choices()
            .iter()
            .map(|choice| choice.get("message")?.get("content")?.as_str())
    }

    /// The first choice's `finish_reason` (an Anthropic message's `stop_reason`).
    pub fn finish_reason(&self) -> Option<&str> {
        match &self.content {
            Content::Synthetic(synthetic) => {
                (synthetic.choices > 0).then_some(synthetic.finish_reason)
            }
            Content::Json(_) | Content::Raw(_) => self
                .choices()
                .first()
                .and_then(|choice| choice.get("finish_reason")?.as_str())
                .or_else(|| self.body().get("stop_reason")?.as_str()),
        }
    }

    /// The `choices` array (empty if absent).
    pub fn choices(&self) -> &[Value] {
        self.body()
            .get("choices")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The reported token usage.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The `x-request-id` header.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The `x-ratelimit-*` headers.
    pub fn rate_limit(&self) -> &RateLimitSnapshot {
        self.rate_limit.as_deref().unwrap_or(&NO_RATE_LIMIT)
    }

    /// A `retry-after`/`retry-after-ms` the response carried (rare on success).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Time from sending the request to having the whole body.
    pub fn latency(&self) -> Duration {
        self.latency
    }
}

impl Synthetic {
    fn to_body(&self, usage: Usage) -> Value {
        completion_body(
            &self.id,
            &self.model,
            &self.text,
            self.finish_reason,
            self.choices,
            usage,
        )
    }
}

/// An OpenAI-shaped completion body with `choices` identical choices.
pub(crate) fn completion_body(
    id: &str,
    model: &str,
    text: &str,
    finish_reason: &str,
    choices: u32,
    usage: Usage,
) -> Value {
    let choices: Vec<Value> = (0..choices)
        .map(|index| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_reads_the_body() {
        let body = json!({
            "id": "chatcmpl-1",
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "one"}, "finish_reason": "length"},
                {"index": 1, "message": {"role": "assistant", "content": null}, "finish_reason": "tool_calls"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        });
        let response = ChatResponse::from_body(200, body.clone()).with_request_id("req_9");
        assert_eq!(response.id(), Some("chatcmpl-1"));
        assert_eq!(response.model(), Some("gpt-4o"));
        assert_eq!(response.text(), Some("one"));
        assert_eq!(response.finish_reason(), Some("length"));
        assert_eq!(
            response.choice_texts().collect::<Vec<_>>(),
            vec![Some("one"), None]
        );
        assert_eq!(response.usage(), Some(Usage::new(5, 2)));
        assert_eq!(response.request_id(), Some("req_9"));
        assert_eq!(response.into_body(), body);
    }

    #[test]
    fn synthetic_bodies_match_the_typed_view() {
        let response = ChatResponse::synthetic_parts(
            "chatcmpl-7".into(),
            "m".into(),
            "hi".into(),
            "length",
            2,
            Usage::new(3, 4),
        );
        assert_eq!(response.id(), Some("chatcmpl-7"));
        assert_eq!(response.finish_reason(), Some("length"));
        assert_eq!(
            response.choice_texts().collect::<Vec<_>>(),
            vec![Some("hi"), Some("hi")]
        );
        let rebuilt = ChatResponse::from_body(200, response.body().clone());
        assert_eq!(rebuilt, response);
        assert_eq!(rebuilt.text(), response.text());
        assert_eq!(rebuilt.model(), Some("m"));
        assert_eq!(response.clone().into_body()["usage"]["total_tokens"], 7);
    }

    #[test]
    fn raw_bodies_read_like_parsed_ones() {
        let text = r#"{"id":"chatcmpl-2","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"raw \"one\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        let raw = ChatResponse::from_json_bytes(200, text.as_bytes()).unwrap();
        let parsed = ChatResponse::from_body(200, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(raw.raw_json(), Some(text.as_bytes()));
        assert_eq!(parsed.raw_json(), None);
        assert_eq!(raw.usage(), Some(Usage::new(4, 3)));
        assert_eq!(raw.text(), Some("raw \"one\""));
        assert_eq!(raw.id(), Some("chatcmpl-2"));
        assert_eq!(raw.model(), Some("m"));
        assert_eq!(raw.finish_reason(), Some("stop"));
        assert_eq!(raw, parsed);
        assert_eq!(raw.clone().into_body(), parsed.into_body());
    }

    #[test]
    fn raw_bodies_read_usage_as_parsed_ones_do() {
        let cases = [
            (r#"{}"#, None),
            (r#"{"usage":null}"#, None),
            (r#"{"usage":"lots"}"#, None),
            (r#"{"usage":{"prompt_tokens":-1}}"#, None),
            (r#"{"usage":{}}"#, Some(Usage::default())),
            (
                r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
                Some(Usage {
                    prompt_tokens: 2,
                    ..Usage::default()
                }),
            ),
            (
                r#"{"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7,"input_tokens_details":{"cached_tokens":0}}}"#,
                Some(Usage::new(3, 4)),
            ),
            (
                r#"{"u\u0073age":{"completion_tokens":5}}"#,
                Some(Usage {
                    completion_tokens: 5,
                    ..Usage::default()
                }),
            ),
        ];
        for (text, usage) in cases {
            let raw = ChatResponse::from_json_bytes(200, text.as_bytes()).unwrap();
            let parsed = ChatResponse::from_body(200, serde_json::from_str::<Value>(text).unwrap());
            assert_eq!(raw.usage(), usage, "{text}");
            assert_eq!(parsed.usage(), usage, "{text}");
        }
    }

    #[test]
    fn raw_bodies_must_be_one_json_object() {
        for bad in [
            "",
            "[]",
            "null",
            "\"x\"",
            "{",
            "{} {}",
            "<html>",
            r#"{"a":1,}"#,
        ] {
            let error = ChatResponse::from_json_bytes(201, bad.as_bytes()).unwrap_err();
            assert!(
                matches!(error, ProviderError::Decode { status: 201, .. }),
                "{bad:?}: {error:?}"
            );
        }
        let spaced = ChatResponse::from_json_bytes(200, b" {\"a\": [1, 2]}\n").unwrap();
        assert_eq!(spaced.body()["a"][1], 2);
    }

    #[test]
    fn tolerates_missing_parts() {
        let response = ChatResponse::from_body(200, json!({"usage": null}));
        assert_eq!(response.text(), None);
        assert_eq!(response.usage(), None);
        assert!(response.choices().is_empty());
        assert!(response.rate_limit().is_empty());
        assert_eq!(response.rate_limit(), &RateLimitSnapshot::default());
        let day = RateLimitSnapshot {
            requests_window: LimitWindow::Day,
            ..RateLimitSnapshot::default()
        };
        let groq = response.with_rate_limit(day.clone());
        assert_eq!(groq.rate_limit(), &day);
    }

    #[test]
    fn anthropic_messages_read_their_text_usage_and_stop_reason() {
        let bytes = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"thinking","thinking":"..."},{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":3}}"#;
        let response = ChatResponse::from_json_bytes(200, bytes).unwrap();
        assert_eq!(response.text(), Some("hi"));
        assert_eq!(response.finish_reason(), Some("end_turn"));
        // Cache reads do not count against the input limit; creation does.
        assert_eq!(response.usage(), Some(Usage::new(15, 3)));
        let plain = ChatResponse::from_body(
            200,
            json!({"usage": {"input_tokens": 4, "output_tokens": 2, "cache_creation_input_tokens": null}}),
        );
        assert_eq!(plain.usage(), Some(Usage::new(4, 2)));
    }
}
