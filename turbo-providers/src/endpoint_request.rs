//! Requests to the endpoints besides chat (embeddings, completions, responses,
//! moderations, Anthropic's messages): the body is kept as the caller wrote
//! it, checked once for what the endpoint requires, and read where the engine
//! needs it (Anthropic's messages in `messages.rs`).

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use turbo_tokens::{
    DefaultOutput, Estimate, InputPiece, TokenCounter, completions_reservation, estimate_of,
    input_tokens, responses_prompt_tokens, responses_reservation, text_counter,
};

use crate::endpoint::Endpoint;
use crate::error::ProviderError;
use crate::messages;

/// The model `/v1/moderations` uses when a request names none.
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

/// Content-part types of the Responses API whose `text` is counted and filled.
const RESPONSES_TEXT_PARTS: &[&str] = &["input_text", "output_text", "text"];

/// A request to `/v1/embeddings`, `/v1/completions`, `/v1/responses`,
/// `/v1/moderations` or Anthropic's `/v1/messages`. The body passes through untouched, unknown fields
/// included; [`EndpointRequest::new`] checks what the endpoint requires.
///
/// ```
/// use serde_json::json;
/// use turbo_providers::{Endpoint, EndpointRequest};
/// use turbo_tokens::{DefaultOutput, TiktokenCounter};
///
/// let request = EndpointRequest::new(
///     Endpoint::Completions,
///     json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hello", "n": 2, "suffix": "!"}),
/// )
/// .unwrap();
/// let estimate = request.estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(0));
/// // "hello" is one token; 16 tokens (the default max_tokens) for each of 2 choices.
/// assert_eq!((estimate.prompt_tokens, estimate.output_reservation), (1, 32));
///
/// let wrong = EndpointRequest::new(
///     Endpoint::Embeddings,
///     json!({"model": "text-embedding-3-small", "messages": []}),
/// )
/// .unwrap_err();
/// assert!(wrong.to_string().contains("\"messages\" is for /v1/chat/completions"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRequest {
    endpoint: Endpoint,
    body: Map<String, Value>,
}

impl EndpointRequest {
    /// Checks `body` against what `endpoint` requires; every problem found is
    /// named in the [`ProviderError::InvalidRequest`] message, `; `-separated.
    /// Chat bodies are [`ChatRequest`](crate::ChatRequest)s, not this.
    pub fn new(endpoint: Endpoint, body: Value) -> Result<Self, ProviderError> {
        let problems = Self::problems(endpoint, &body);
        match body {
            Value::Object(body) if problems.is_empty() => Ok(Self { endpoint, body }),
            _ => Err(ProviderError::InvalidRequest {
                message: problems.join("; "),
            }),
        }
    }

    /// Every problem of `body` as a request to `endpoint`, each naming its
    /// field (`body.input …`); empty when the body is valid.
    pub fn problems(endpoint: Endpoint, body: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let Value::Object(body) = body else {
            problems.push("body must be a JSON object".to_owned());
            return problems;
        };
        if endpoint == Endpoint::ChatCompletions {
            problems.push("a chat-completions body is a ChatRequest".to_owned());
            return problems;
        }
        if endpoint == Endpoint::Messages {
            return messages::problems(body);
        }
        match body.get("model") {
            None | Some(Value::Null) if endpoint == Endpoint::Moderations => {}
            None | Some(Value::Null) => problems.push("body.model is missing".to_owned()),
            Some(Value::String(model)) if !model.trim().is_empty() => {}
            Some(_) => problems.push("body.model must be a non-empty string".to_owned()),
        }
        if body.get("stream") == Some(&Value::Bool(true)) {
            problems.push(
                "body.stream is true: batch requests cannot stream; remove \"stream\"".to_owned(),
            );
        }
        let input_field = input_field(endpoint);
        match body.get(input_field) {
            None | Some(Value::Null) => problems.push(missing_input(endpoint, body)),
            Some(value) => {
                if let Err(problem) = check_input(endpoint, value) {
                    problems.push(format!("body.{input_field} {problem}"));
                }
            }
        }
        let integers: &[&str] = match endpoint {
            Endpoint::Completions => &["max_tokens", "n", "best_of"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Embeddings => &["dimensions"],
            Endpoint::ChatCompletions | Endpoint::Moderations | Endpoint::Messages => &[],
        };
        for name in integers {
            if let Some(value) = body.get(*name)
                && !value.is_null()
                && as_u32(value).is_none()
            {
                problems.push(format!(
                    "body.{name} must be a non-negative integer, found {value}"
                ));
            }
        }
        if endpoint == Endpoint::Responses
            && !matches!(
                body.get("instructions"),
                None | Some(Value::Null | Value::String(_))
            )
        {
            problems.push("body.instructions must be a string".to_owned());
        }
        problems
    }

    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The model; for a moderations request without one, [`DEFAULT_MODERATION_MODEL`].
    pub fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_MODERATION_MODEL)
    }

    /// The body, as given.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The body as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.body.clone())
    }

    /// Refuses streaming (checked at construction too; the body is public
    /// only for reading, so this holds for every value of this type).
    pub fn check_sendable(&self) -> Result<(), ProviderError> {
        if self.body.get("stream") == Some(&Value::Bool(true)) {
            return Err(ProviderError::Unsupported {
                feature: "streaming responses (\"stream\": true); send the request without it"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// An integer field, when set.
    fn limit(&self, name: &str) -> Option<u32> {
        self.body.get(name).and_then(as_u32)
    }

    /// Prompt tokens and output reservation, with `counter` and the model's encoding.
    pub fn estimate(&self, counter: &dyn TokenCounter, default_output: DefaultOutput) -> Estimate {
        self.estimate_with(text_counter(counter, self.model()), default_output)
    }

    /// [`Self::estimate`] over any text counter (the mock server's approximation).
    pub(crate) fn estimate_with(
        &self,
        mut count: impl FnMut(&str) -> usize,
        default_output: DefaultOutput,
    ) -> Estimate {
        match self.endpoint {
            Endpoint::Messages => messages::estimate(&self.body, count),
            Endpoint::Responses => {
                let prompt = responses_prompt_tokens(self.responses_messages(), &mut count);
                let prompt_u32 = u32::try_from(prompt).unwrap_or(u32::MAX);
                estimate_of(
                    prompt,
                    responses_reservation(
                        self.limit("max_output_tokens"),
                        default_output,
                        prompt_u32,
                    ),
                )
            }
            Endpoint::Completions => {
                let pieces = self.input_pieces();
                estimate_of(
                    input_tokens(&pieces, count),
                    completions_reservation(
                        self.limit("max_tokens"),
                        self.limit("n"),
                        self.limit("best_of"),
                        pieces.len(),
                    ),
                )
            }
            Endpoint::Embeddings | Endpoint::Moderations | Endpoint::ChatCompletions => {
                estimate_of(input_tokens(&self.input_pieces(), count), 0)
            }
        }
    }

    /// The inputs of an embeddings, completions or moderations request.
    pub(crate) fn input_pieces(&self) -> Vec<InputPiece<'_>> {
        let Some(value) = self.body.get(input_field(self.endpoint)) else {
            return Vec::new();
        };
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
                    Value::Object(part) => part_text(part, &["text"]).map(InputPiece::Text),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The messages of a responses request as (role, text parts):
    /// `instructions` first as `system`, a string input as one `user` message.
    /// Items other than messages (tool calls and their outputs) are not counted.
    fn responses_messages(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        let instructions = self
            .body
            .get("instructions")
            .and_then(Value::as_str)
            .map(|text| ("system", vec![text]));
        let input: Vec<(&str, Vec<&str>)> = match self.body.get("input") {
            Some(Value::String(text)) => vec![("user", vec![text.as_str()])],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_object)
                .filter_map(|item| {
                    let role = item.get("role")?.as_str()?;
                    let texts = match item.get("content")? {
                        Value::String(text) => vec![text.as_str()],
                        Value::Array(parts) => parts
                            .iter()
                            .filter_map(Value::as_object)
                            .filter_map(|part| part_text(part, RESPONSES_TEXT_PARTS))
                            .collect(),
                        _ => Vec::new(),
                    };
                    Some((role, texts))
                })
                .collect(),
            _ => Vec::new(),
        };
        instructions.into_iter().chain(input)
    }

    /// Calls `f` on every text placeholders may appear in: the inputs or
    /// prompts given as strings, text parts, and a responses request's
    /// `instructions` and message texts.
    pub fn for_each_text_mut(&mut self, mut f: impl FnMut(&mut String)) {
        if self.endpoint == Endpoint::Messages {
            return messages::for_each_text_mut(&mut self.body, f);
        }
        let field = input_field(self.endpoint);
        if self.endpoint == Endpoint::Responses
            && let Some(Value::String(instructions)) = self.body.get_mut("instructions")
        {
            f(instructions);
        }
        let Some(value) = self.body.get_mut(field) else {
            return;
        };
        match value {
            Value::String(text) => f(text),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(text) => f(text),
                        Value::Object(object) if self.endpoint == Endpoint::Responses => {
                            match object.get_mut("content") {
                                Some(Value::String(text)) => f(text),
                                Some(Value::Array(parts)) => {
                                    for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                                        if let Some(text) =
                                            part_text_mut(part, RESPONSES_TEXT_PARTS)
                                        {
                                            f(text);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        Value::Object(part) => {
                            if let Some(text) = part_text_mut(part, &["text"]) {
                                f(text);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// The last text of the request (for the simulated answers' echo).
    pub(crate) fn last_text(&self) -> String {
        match self.endpoint {
            Endpoint::Messages => messages::last_user_text(&self.body),
            Endpoint::Responses => self
                .responses_messages()
                .filter(|(role, _)| *role == "user")
                .last()
                .map(|(_, texts)| texts.concat())
                .unwrap_or_default(),
            _ => self
                .input_pieces()
                .into_iter()
                .rev()
                .find_map(|piece| match piece {
                    InputPiece::Text(text) => Some(text.to_owned()),
                    InputPiece::TokenIds(_) => None,
                })
                .unwrap_or_default(),
        }
    }
}

impl Serialize for EndpointRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.body.serialize(serializer)
    }
}

/// The field holding the request's input.
fn input_field(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completions => "prompt",
        Endpoint::ChatCompletions | Endpoint::Messages => "messages",
        Endpoint::Embeddings | Endpoint::Responses | Endpoint::Moderations => "input",
    }
}

fn missing_input(endpoint: Endpoint, body: &Map<String, Value>) -> String {
    let field = input_field(endpoint);
    let kind = match endpoint {
        Endpoint::Embeddings => "an embeddings",
        Endpoint::Completions => "a completions",
        Endpoint::Responses => "a responses",
        Endpoint::Moderations => "a moderations",
        Endpoint::ChatCompletions => "a chat",
        Endpoint::Messages => "a messages",
    };
    let misplaced = ["messages", "input", "prompt"]
        .into_iter()
        .find(|other| *other != field && body.contains_key(*other));
    match misplaced {
        Some("messages") => format!(
            "body.{field} is missing: {kind} request takes \"{field}\" (\"messages\" is for /v1/chat/completions)"
        ),
        Some(other) => {
            format!("body.{field} is missing: {kind} request takes \"{field}\", not \"{other}\"")
        }
        None => format!("body.{field} is missing: {kind} request needs it"),
    }
}

/// Checks an input or prompt; the error completes "body.input …".
fn check_input(endpoint: Endpoint, value: &Value) -> Result<(), String> {
    let shapes = match endpoint {
        Endpoint::Responses => "must be a string or an array of input items",
        Endpoint::Moderations => "must be a string, an array of strings, or an array of parts",
        _ => {
            "must be a string, an array of strings, an array of token ids or an array of token-id arrays"
        }
    };
    let items = match value {
        Value::String(_) => return Ok(()),
        Value::Array(items) if items.is_empty() => return Err("is an empty array".to_owned()),
        Value::Array(items) => items,
        other => return Err(format!("{shapes}, found {}", kind_of(other))),
    };
    let all = |check: fn(&Value) -> bool| items.iter().all(check);
    let ok = match endpoint {
        Endpoint::Responses => return check_response_items(items),
        Endpoint::Moderations => {
            all(Value::is_string) || all(|item| item.get("type").is_some_and(Value::is_string))
        }
        _ => {
            all(Value::is_string)
                || all(|item| as_u32(item).is_some())
                || all(|item| {
                    item.as_array()
                        .is_some_and(|ids| ids.iter().all(|id| as_u32(id).is_some()))
                })
        }
    };
    if ok { Ok(()) } else { Err(shapes.to_owned()) }
}

fn check_response_items(items: &[Value]) -> Result<(), String> {
    for (index, item) in items.iter().enumerate() {
        let Some(item) = item.as_object() else {
            return Err(format!(
                "[{index}] must be an object, found {}",
                kind_of(&items[index])
            ));
        };
        if !item.contains_key("role") {
            // Tool calls and their outputs are items too; they pass through.
            if item.get("type").is_some_and(Value::is_string) {
                continue;
            }
            return Err(format!("[{index}] needs a \"role\" or a \"type\""));
        }
        if !item.get("role").is_some_and(Value::is_string) {
            return Err(format!("[{index}].role must be a string"));
        }
        match item.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) if parts.iter().all(Value::is_object) => {}
            _ => {
                return Err(format!(
                    "[{index}].content must be a string or an array of content parts"
                ));
            }
        }
    }
    Ok(())
}

fn part_text<'a>(part: &'a Map<String, Value>, types: &[&str]) -> Option<&'a str> {
    let kind = part.get("type")?.as_str()?;
    types
        .contains(&kind)
        .then(|| part.get("text")?.as_str())
        .flatten()
}

fn part_text_mut<'a>(part: &'a mut Map<String, Value>, types: &[&str]) -> Option<&'a mut String> {
    let kind = part.get("type")?.as_str()?;
    if !types.contains(&kind) {
        return None;
    }
    match part.get_mut("text")? {
        Value::String(text) => Some(text),
        _ => None,
    }
}

fn as_u32(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|number| u32::try_from(number).ok())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use turbo_tokens::TiktokenCounter;

    fn request(endpoint: Endpoint, body: Value) -> EndpointRequest {
        EndpointRequest::new(endpoint, body).unwrap()
    }

    fn problems(endpoint: Endpoint, body: Value) -> String {
        EndpointRequest::problems(endpoint, &body).join("; ")
    }

    #[test]
    fn every_input_shape_is_accepted_and_counted() {
        let counter = TiktokenCounter::new();
        let embed = |input: Value| {
            request(
                Endpoint::Embeddings,
                json!({"model": "text-embedding-3-small", "input": input}),
            )
            .estimate(&counter, DefaultOutput::Tokens(99))
        };
        // "hello" 1 token, "Hello, world!" 4 (cl100k_base).
        assert_eq!(embed(json!("hello")).prompt_tokens, 1);
        assert_eq!(embed(json!(["hello", "Hello, world!"])).prompt_tokens, 5);
        assert_eq!(embed(json!([1, 2, 3])).prompt_tokens, 3);
        assert_eq!(embed(json!([[1], [2, 3], []])).prompt_tokens, 3);
        assert_eq!(embed(json!("hello")).output_reservation, 0);
    }

    #[test]
    fn wrong_bodies_say_what_is_wrong() {
        let chat_like = problems(
            Endpoint::Embeddings,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        );
        assert!(
            chat_like.contains("body.input is missing")
                && chat_like.contains("\"messages\" is for /v1/chat/completions"),
            "{chat_like}"
        );
        let prompt = problems(Endpoint::Responses, json!({"model": "m", "prompt": "x"}));
        assert!(prompt.contains("not \"prompt\""), "{prompt}");
        let mixed = problems(
            Endpoint::Completions,
            json!({"model": "m", "prompt": ["a", 1]}),
        );
        assert!(mixed.contains("body.prompt must be a string"), "{mixed}");
        let empty = problems(Endpoint::Moderations, json!({"input": []}));
        assert!(empty.contains("empty array"), "{empty}");
        let limits = problems(
            Endpoint::Completions,
            json!({"model": "m", "prompt": "x", "max_tokens": -1, "n": "2"}),
        );
        assert!(
            limits.contains("body.max_tokens") && limits.contains("body.n"),
            "{limits}"
        );
        let no_model = problems(Endpoint::Embeddings, json!({"input": "x", "stream": true}));
        assert!(no_model.contains("body.model is missing") && no_model.contains("stream"));
        let items = problems(
            Endpoint::Responses,
            json!({"model": "m", "input": [{"role": "user", "content": 3}]}),
        );
        assert!(items.contains("body.input [0].content"), "{items}");
        assert!(problems(Endpoint::Moderations, json!({"input": "fine"})).is_empty());
        assert!(EndpointRequest::new(Endpoint::Embeddings, json!([1])).is_err());
    }

    #[test]
    fn placeholders_reach_every_text() {
        let mut responses = request(
            Endpoint::Responses,
            json!({"model": "gpt-4o", "instructions": "{{a}}", "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "{{a}}"}, {"type": "input_image", "image_url": "{{a}}"}]},
                {"role": "user", "content": "{{a}}"},
                {"type": "function_call_output", "call_id": "c", "output": "{{a}}"}
            ]}),
        );
        let mut seen = 0;
        responses.for_each_text_mut(|text| {
            seen += 1;
            *text = text.replace("{{a}}", "A");
        });
        assert_eq!(seen, 3);
        let body = responses.to_value();
        assert_eq!(body["instructions"], "A");
        assert_eq!(body["input"][0]["content"][1]["image_url"], "{{a}}");
        assert_eq!(body["input"][2]["output"], "{{a}}");
        assert_eq!(responses.last_text(), "A");

        let mut moderation = request(
            Endpoint::Moderations,
            json!({"input": [{"type": "text", "text": "{{a}}"}, {"type": "image_url", "image_url": {"url": "x"}}]}),
        );
        moderation.for_each_text_mut(|text| *text = "B".to_owned());
        assert_eq!(moderation.to_value()["input"][0]["text"], "B");
        assert_eq!(moderation.model(), DEFAULT_MODERATION_MODEL);
    }

    proptest::proptest! {
        #[test]
        fn any_valid_input_round_trips_and_counts_as_its_parts(
            texts in proptest::collection::vec("\\PC{0,24}", 1..5),
            extra in proptest::collection::btree_map("[a-z_]{1,10}", any_json(), 0..4),
            endpoint in proptest::sample::select(vec![Endpoint::Embeddings, Endpoint::Completions, Endpoint::Moderations]),
        ) {
            let field = input_field(endpoint);
            let mut body = serde_json::Map::new();
            for (key, value) in extra {
                if !["model", "stream", "input", "prompt", "max_tokens", "n", "best_of", "dimensions"].contains(&key.as_str()) {
                    body.insert(key, value);
                }
            }
            body.insert("model".into(), json!("text-embedding-3-small"));
            body.insert(field.into(), json!(texts));
            let body = Value::Object(body);
            let request = EndpointRequest::new(endpoint, body.clone()).unwrap();
            proptest::prop_assert_eq!(request.to_value(), body);
            let counter = TiktokenCounter::new();
            let expected: u32 = texts
                .iter()
                .map(|text| counter.count_text(turbo_tokens::Encoding::Cl100kBase, text) as u32)
                .sum();
            let estimate = request.estimate(&counter, DefaultOutput::Tokens(0));
            proptest::prop_assert_eq!(estimate.prompt_tokens, expected);
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    #[test]
    fn unknown_fields_pass_through() {
        let body = json!({"model": "m", "input": "x", "user": "u-1", "encoding_format": "float", "dimensions": 8});
        let request = request(Endpoint::Embeddings, body.clone());
        assert_eq!(request.to_value(), body);
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
        assert!(request.check_sendable().is_ok());
    }
}
