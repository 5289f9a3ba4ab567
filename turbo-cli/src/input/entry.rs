//! One batch line: parsed, and every problem with it named.

use serde::Deserialize;
use serde_json::{Map, Value};
use turbo_core::{ApiRequest, ChatRequest, Endpoint, EndpointRequest, Provider, placeholder_keys};

use crate::registry::Registry;

/// The endpoints a batch line may target, for messages.
fn supported_urls() -> String {
    Endpoint::ALL
        .iter()
        .map(|endpoint| format!("\"{}\"", endpoint.url()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One batch line, parsed and checked.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its `custom_id`.
    pub custom_id: String,
    /// Its `provider`, if it names one.
    pub provider: Option<Provider>,
    /// Its `depends_on`, as written.
    pub depends_on: Vec<String>,
    /// Its `body`, for the endpoint its `url` names.
    pub request: ApiRequest,
}

/// Parses one line. Every problem of the line is returned, not just the first.
pub fn parse_entry(text: &str) -> Result<Entry, Vec<String>> {
    parse_checked(text, None)
}

/// [`parse_entry`], also checking the line's provider (or `default` when it
/// names none) against `registry`: known, and serving the line's endpoint.
pub fn parse_checked(
    text: &str,
    providers: Option<(&Registry, Provider)>,
) -> Result<Entry, Vec<String>> {
    let value: Value = serde_json::from_str(text).map_err(|error| vec![json_error(&error)])?;
    let Value::Object(mut object) = value else {
        return Err(vec!["not a JSON object".to_owned()]);
    };
    let mut problems = Vec::new();

    let custom_id = match object.remove("custom_id") {
        None => {
            problems.push("missing \"custom_id\"".to_owned());
            None
        }
        Some(Value::String(id)) if !id.is_empty() => Some(id),
        Some(_) => {
            problems.push("\"custom_id\" must be a non-empty string".to_owned());
            None
        }
    };
    match object.get("method") {
        None => problems.push("missing \"method\" (must be \"POST\")".to_owned()),
        Some(Value::String(method)) if method == "POST" => {}
        Some(other) => problems.push(format!(
            "\"method\" is {}; only \"POST\" is supported",
            short(other)
        )),
    }
    let endpoint = match object.get("url") {
        None => {
            problems.push(format!("missing \"url\" (one of {})", supported_urls()));
            None
        }
        Some(Value::String(url)) if Endpoint::from_url(url).is_some() => Endpoint::from_url(url),
        Some(other) => {
            problems.push(format!(
                "\"url\" is {}; supported: {}",
                short(other),
                supported_urls()
            ));
            None
        }
    };
    let provider = match object.get("provider") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match name.parse::<Provider>() {
            Ok(provider) => Some(provider),
            Err(error) => {
                problems.push(error.to_string());
                None
            }
        },
        Some(other) => {
            problems.push(format!(
                "\"provider\" is {}; expected a provider's name (\"openai\", \"groq\", \"anthropic\" or one the configuration declares)",
                short(other)
            ));
            None
        }
    };
    if let Some((registry, default)) = providers
        && let Some(problem) = registry.problem(provider.unwrap_or(default), endpoint)
    {
        problems.push(problem);
    }
    let depends_on = match object.remove("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(id) if !id.is_empty() => ids.push(id),
                    other => problems.push(format!(
                        "\"depends_on\" must list custom_id strings, found {}",
                        short(&other)
                    )),
                }
            }
            ids
        }
        Some(other) => {
            problems.push(format!(
                "\"depends_on\" must be an array of custom_id strings, found {}",
                short(&other)
            ));
            Vec::new()
        }
    };
    // The run reads it again with the body; here it is only checked.
    if let Some(value) = object.get("priority")
        && !value.is_null()
        && value.as_i64().and_then(|p| i32::try_from(p).ok()).is_none()
    {
        problems.push(format!(
            "\"priority\" must be an integer between {} and {}, found {}",
            i32::MIN,
            i32::MAX,
            short(value)
        ));
    }
    let request = match object.remove("body") {
        None => {
            problems.push("missing \"body\"".to_owned());
            None
        }
        // A line with an unknown url still has its body checked (as chat).
        Some(body @ Value::Object(_)) => check_body(
            endpoint.unwrap_or(Endpoint::ChatCompletions),
            body,
            &depends_on,
            &mut problems,
        ),
        Some(other) => {
            problems.push(format!(
                "\"body\" must be an object, found {}",
                short(&other)
            ));
            None
        }
    };
    match (custom_id, request) {
        (Some(custom_id), Some(request)) if problems.is_empty() => Ok(Entry {
            custom_id,
            provider,
            depends_on,
            request,
        }),
        (Some(custom_id), _) => Err(problems
            .into_iter()
            .map(|problem| format!("{problem} (custom_id {custom_id:?})"))
            .collect()),
        (None, _) => Err(problems),
    }
}

fn check_body(
    endpoint: Endpoint,
    body: Value,
    depends_on: &[String],
    problems: &mut Vec<String>,
) -> Option<ApiRequest> {
    let mut request = if endpoint == Endpoint::ChatCompletions {
        ApiRequest::Chat(check_chat_body(body, problems)?)
    } else {
        let found = EndpointRequest::problems(endpoint, &body);
        if !found.is_empty() {
            problems.extend(found);
            return None;
        }
        match EndpointRequest::new(endpoint, body) {
            Ok(request) => ApiRequest::Endpoint(request),
            Err(error) => {
                problems.push(format!("body: {error}"));
                return None;
            }
        }
    };
    let before = problems.len();
    let mut unknown: Vec<String> = Vec::new();
    request.for_each_text_mut(|text| {
        for key in placeholder_keys(text) {
            if !depends_on.iter().any(|dep| dep == key) && !unknown.iter().any(|k| k == key) {
                unknown.push(key.to_owned());
            }
        }
    });
    for key in unknown {
        problems.push(format!(
            "placeholder {{{{{key}}}}} names {key:?}, which is not in \"depends_on\""
        ));
    }
    (problems.len() == before).then_some(request)
}

/// A chat body's own checks (placeholders are checked by the caller).
fn check_chat_body(body: Value, problems: &mut Vec<String>) -> Option<ChatRequest> {
    if let Value::Object(object) = &body {
        check_body_types(object, problems);
    }
    let request = match ChatRequest::deserialize(&body) {
        Ok(request) => request,
        Err(error) => {
            problems.push(format!("body: {error}"));
            return None;
        }
    };
    let before = problems.len();
    if request.model.trim().is_empty() {
        problems.push("body.model is empty".to_owned());
    }
    if request.messages.is_empty() {
        problems.push("body.messages is empty".to_owned());
    }
    if request.stream == Some(true) {
        problems.push(
            "body.stream is true: batch requests cannot stream; remove \"stream\"".to_owned(),
        );
    }
    (problems.len() == before).then_some(request)
}

/// Catches wrong types serde would report less clearly.
fn check_body_types(object: &Map<String, Value>, problems: &mut Vec<String>) {
    match object.get("messages") {
        Some(Value::Array(_)) | None => {}
        Some(other) => problems.push(format!(
            "body.messages must be an array, found {}",
            short(other)
        )),
    }
}

/// A serde error without its misleading "line 1" (the line is ours to give).
fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    format!("not valid JSON: {text} (at column {})", error.column())
}

/// A value for an error message, cut short.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(37).collect();
        format!("{cut}...")
    } else {
        text
    }
}
