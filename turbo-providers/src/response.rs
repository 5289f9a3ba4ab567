//! The chat-completions response.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::headers::RateLimitSnapshot;

/// Token usage the provider reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens of all completions.
    #[serde(default)]
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

/// A successful (2xx) chat-completions answer.
///
/// The body is kept whole as JSON (batch output writes it verbatim); typed
/// accessors read from it without parsing the bytes a second time. Synthetic
/// responses (simulations, mocks) build their JSON body only when asked for it.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    status: u16,
    content: Content,
    usage: Option<Usage>,
    request_id: Option<String>,
    rate_limit: RateLimitSnapshot,
    retry_after: Option<Duration>,
    latency: Duration,
}

#[derive(Debug, Clone)]
enum Content {
    Json(Value),
    Synthetic(Box<Synthetic>),
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
        let usage = body
            .get("usage")
            .filter(|usage| usage.is_object())
            .and_then(|usage| Usage::deserialize(usage).ok());
        Self {
            status,
            content: Content::Json(body),
            usage,
            request_id: None,
            rate_limit: RateLimitSnapshot::default(),
            retry_after: None,
            latency: Duration::ZERO,
        }
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
            rate_limit: RateLimitSnapshot::default(),
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
        self.rate_limit = rate_limit;
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
            Content::Synthetic(synthetic) => synthetic
                .body
                .get_or_init(|| synthetic.to_body(self.usage.unwrap_or_default())),
        }
    }

    /// Takes the body out, for writing it verbatim.
    pub fn into_body(self) -> Value {
        match self.content {
            Content::Json(body) => body,
            Content::Synthetic(mut synthetic) => match synthetic.body.take() {
                Some(body) => body,
                None => synthetic.to_body(self.usage.unwrap_or_default()),
            },
        }
    }

    /// The completion's `id`.
    pub fn id(&self) -> Option<&str> {
        match &self.content {
            Content::Json(body) => body.get("id")?.as_str(),
            Content::Synthetic(synthetic) => Some(&synthetic.id),
        }
    }

    /// The `model` the provider answered with.
    pub fn model(&self) -> Option<&str> {
        match &self.content {
            Content::Json(body) => body.get("model")?.as_str(),
            Content::Synthetic(synthetic) => Some(&synthetic.model),
        }
    }

    /// The text of the first choice's message, when it is a string.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Json(_) => self.choice_texts().next().flatten(),
            Content::Synthetic(synthetic) => (synthetic.choices > 0).then_some(&*synthetic.text),
        }
    }

    /// The message text of every choice, in order (`None` for a choice whose
    /// content is null, e.g. a tool call).
    pub fn choice_texts(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.choices()
            .iter()
            .map(|choice| choice.get("message")?.get("content")?.as_str())
    }

    /// The first choice's `finish_reason`.
    pub fn finish_reason(&self) -> Option<&str> {
        match &self.content {
            Content::Json(_) => self.choices().first()?.get("finish_reason")?.as_str(),
            Content::Synthetic(synthetic) => {
                (synthetic.choices > 0).then_some(synthetic.finish_reason)
            }
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
        &self.rate_limit
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
    fn tolerates_missing_parts() {
        let response = ChatResponse::from_body(200, json!({"usage": null}));
        assert_eq!(response.text(), None);
        assert_eq!(response.usage(), None);
        assert!(response.choices().is_empty());
        assert!(response.rate_limit().is_empty());
    }
}
