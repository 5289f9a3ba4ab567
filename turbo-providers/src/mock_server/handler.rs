//! The HTTP side: routes and the one handler of every endpoint (chat
//! completions, embeddings, completions, responses, moderations, and
//! Anthropic's messages), from admission through the capacity queue and
//! latency to the answer (and its fault). Every endpoint is charged by its
//! own token formula; `/v1/messages` is charged its input against the token
//! limit and its `max_tokens` against the output limit, settled to the
//! answer's output, and answers in Anthropic's shapes (`anthropic.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use secrecy::ExposeSecret;

use super::anthropic::{add_anthropic_headers, anthropic_error, anthropic_refusal};
use super::capacity::NoSlot;
use super::config::RateLimitStyle;
use super::conn::ConnFaults;
use super::faults::FaultKind;
use super::limiter::{Admission, LimitReports, Resource};
use super::responses::{
    ChoiceBody, CompletionBody, MessageBody, Refusal, add_limit_headers, error_response,
    json_response,
};
use super::state::{InFlight, ServerState, now};
use crate::endpoint::{ApiRequest, Endpoint};
use crate::endpoint_answer::{AnswerParts, answer};
use crate::request::ChatRequest;
use crate::response::Usage;
use crate::synth::complete;

/// Largest request body accepted (long prompts are legitimate).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most choices one request may ask for (OpenAI's limit).
const MAX_CHOICES: u32 = 128;

pub(super) fn router(state: Arc<ServerState>) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let serve = move |state: State<Arc<ServerState>>, request: axum::extract::Request| {
            handle(state, request, endpoint)
        };
        router = router
            .route(endpoint.url(), post(serve))
            .route(&format!("/openai{}", endpoint.url()), post(serve));
    }
    router
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn stats(State(state): State<Arc<ServerState>>) -> Response {
    json_response(StatusCode::OK, &state.stats())
}

async fn reset(State(state): State<Arc<ServerState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The text a prompt is known by (the mock's prompt statistics): the last
/// user message of a chat, the last text input of the other endpoints.
fn prompt_text(request: &ApiRequest) -> String {
    match request {
        ApiRequest::Chat(chat) => last_user_text(chat),
        ApiRequest::Endpoint(other) => other.last_text(),
    }
}

fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == "user")
        .map(|message| message.text().into_owned())
        .unwrap_or_default()
}

fn stopping(request_id: Option<HeaderValue>) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "The mock server is shutting down.",
        "server_error",
        None,
        request_id,
    )
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
    endpoint: Endpoint,
) -> Response {
    // Taking the parts by value avoids the header-map clone of the
    // `HeaderMap` extractor, which showed up in profiles.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let conn = parts
        .extensions
        .get::<ConnectInfo<ConnFaults>>()
        .map(|info| info.0.clone());
    let counters = &state.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight::enter(counters);
    let style = state.config.rate_limit_style;
    // A gateway sends no request id.
    let request_id = (style == RateLimitStyle::OpenAi).then(|| state.request_id());

    let messages = endpoint == Endpoint::Messages;
    if messages {
        counters.messages.requests.fetch_add(1, Ordering::Relaxed);
    }
    if let (true, Some(key)) = (messages, &state.config.api_key) {
        let given = headers
            .get("x-api-key")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if given != key.expose_secret().as_bytes() {
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            return anthropic_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
                request_id,
            );
        }
    } else if let Some(expected) = &state.expected_authorization {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if given != expected.expose_secret().as_bytes() {
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
                request_id,
            );
        }
    }

    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {error}"),
                "invalid_request_error",
                None,
                request_id,
            );
        }
    };
    let request = match parse_request(endpoint, &body) {
        Ok(request) => request,
        Err(message) if messages => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return anthropic_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &message,
                request_id,
            );
        }
        Err(message) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error_response(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                None,
                request_id,
            );
        }
    };

    let estimate = state
        .config
        .token_counting
        .estimate_api(&request, state.config.default_output);
    // Messages: input against the token limit, max_tokens against the output limit.
    let (cost, output) = if messages {
        (
            state.config.charge(u64::from(estimate.prompt_tokens)),
            u64::from(estimate.output_reservation),
        )
    } else {
        (state.config.charge(u64::from(estimate.total())), 0)
    };
    let admitted_at = now();
    let admission = state
        .limiter
        .lock()
        .admit_with_output(cost, output, admitted_at);
    let reports = match admission {
        Admission::Admitted(reports) => reports,
        Admission::Refused {
            reports,
            over,
            retry_after,
            charged,
        } => {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            if charged {
                counters.requests_charged.fetch_add(1, Ordering::Relaxed);
                counters.tokens_charged.fetch_add(cost, Ordering::Relaxed);
            }
            state.count_prompt(|| prompt_text(&request), charged, false);
            let refusal = Refusal {
                model: request.model(),
                cost: if over == Resource::OutputTokens {
                    output
                } else {
                    cost
                },
                reports,
                over,
                retry_after,
                request_window: state.config.request_window,
            };
            if messages {
                counters.messages.refused.fetch_add(1, Ordering::Relaxed);
                return anthropic_refusal(&refusal, request_id, state.config.rate_limit_headers);
            }
            return match (style, request_id) {
                (RateLimitStyle::OpenAi, Some(request_id)) => {
                    refusal.openai(request_id, state.config.rate_limit_headers)
                }
                _ => refusal.gateway(),
            };
        }
    };
    counters.requests_charged.fetch_add(1, Ordering::Relaxed);
    counters.tokens_charged.fetch_add(cost, Ordering::Relaxed);
    let admitted = counters.admitted.fetch_add(1, Ordering::Relaxed);
    let draw = state.draw(admitted);
    let limit_headers = state.config.rate_limit_headers;
    if messages {
        counters.messages.accepted.fetch_add(1, Ordering::Relaxed);
        counters
            .messages
            .output_tokens_reserved
            .fetch_add(output, Ordering::Relaxed);
    }
    // A messages answer settles its output reservation to what it delivered
    // (0 for a failure). The headers report the levels at admission, or with
    // `levels_at_answer` those after the settlement and everything admitted
    // meanwhile.
    let at_answer = state.config.levels_at_answer;
    let finish = |mut response: Response, delivered_output: u64| {
        let settled: Option<LimitReports> = if messages {
            Some(
                state
                    .limiter
                    .lock()
                    .settle_output(output, delivered_output, now()),
            )
        } else if at_answer {
            Some(state.limiter.lock().reports_at(now()))
        } else {
            None
        };
        let levels = match (&settled, at_answer) {
            (Some(settled), true) => settled,
            _ => &reports,
        };
        if limit_headers {
            if messages {
                add_anthropic_headers(response.headers_mut(), levels);
            } else {
                add_limit_headers(response.headers_mut(), levels, style);
            }
        }
        response
    };

    let mut latency = draw.latency;
    let slot = match &state.capacity {
        None => None,
        Some(capacity) => match capacity.enter(&state.cancel).await {
            Ok((slot, start)) => {
                if let Some(model) = &state.config.capacity {
                    latency = model.latency(latency, start);
                }
                Some(slot)
            }
            Err(NoSlot::Overloaded) => {
                counters.overloaded.fetch_add(1, Ordering::Relaxed);
                state.limiter.lock().record_fault(now());
                state.count_prompt(|| prompt_text(&request), true, false);
                return finish(
                    error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The server is overloaded: too many requests are waiting. Please retry later.",
                        "server_error",
                        Some("overloaded"),
                        request_id,
                    ),
                    0,
                );
            }
            Err(NoSlot::Stopping) => return finish(stopping(request_id), 0),
        },
    };
    if !latency.is_zero() {
        let mut cancel = state.cancel.subscribe();
        // `matches!` drops the watch guard at once: it must not outlive this statement.
        let cancelled = matches!(
            tokio::time::timeout(latency, cancel.wait_for(|stop| *stop)).await,
            Ok(Ok(_))
        );
        if cancelled {
            return finish(stopping(request_id), 0);
        }
    }
    drop(slot);

    let (response, delivered_output) = if messages && draw.overloaded {
        counters.messages.overloaded.fetch_add(1, Ordering::Relaxed);
        state.limiter.lock().record_fault(now());
        state.count_prompt(|| prompt_text(&request), true, false);
        let status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let response = anthropic_error(status, "overloaded_error", "Overloaded", request_id);
        (response, 0)
    } else if let Some(status) = draw.failure {
        counters.injected_failures.fetch_add(1, Ordering::Relaxed);
        state.limiter.lock().record_fault(now());
        state.count_prompt(|| prompt_text(&request), true, false);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = "The server had an error while processing your request (failure injected by the mock server).";
        let response = if messages {
            let kind = if status.as_u16() == 529 {
                "overloaded_error"
            } else {
                "api_error"
            };
            anthropic_error(status, kind, message, request_id)
        } else {
            error_response(status, message, "server_error", None, request_id)
        };
        (response, 0)
    } else {
        let fault = draw.fault.filter(|_| conn.is_some());
        let echo = headers
            .get("x-mock-echo")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"))
            .then(|| request.to_value());
        let id = request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("mock");
        let (mut response, usage) = match &request {
            ApiRequest::Chat(chat) => chat_answer(chat, id, &estimate, &draw, &state, echo),
            ApiRequest::Endpoint(other) => {
                let mut answer = answer(
                    other,
                    &AnswerParts {
                        id,
                        created: unix_seconds(),
                        prompt_tokens: estimate.prompt_tokens,
                        wanted_tokens: draw.completion_tokens,
                        echo_words: state.config.echo_words,
                    },
                );
                if let (Some(echo), Some(body)) = (echo, answer.body.as_object_mut()) {
                    body.insert("mock_echo".to_owned(), echo);
                }
                (json_response(StatusCode::OK, &answer.body), answer.usage)
            }
        };
        // A trickled answer arrives whole in the end; the others do not.
        let delivered = matches!(fault, None | Some(FaultKind::Trickle));
        if let (Some(kind), Some(conn)) = (fault, &conn) {
            conn.request(kind);
            state.faults.add(kind);
            state.limiter.lock().record_fault(now());
        }
        if delivered {
            counters.ok.fetch_add(1, Ordering::Relaxed);
            counters
                .prompt_tokens
                .fetch_add(u64::from(usage.prompt_tokens), Ordering::Relaxed);
            counters
                .completion_tokens
                .fetch_add(u64::from(usage.completion_tokens), Ordering::Relaxed);
        }
        state.count_prompt(|| prompt_text(&request), true, delivered);
        if let Some(request_id) = request_id {
            let name = if messages {
                "request-id"
            } else {
                "x-request-id"
            };
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), request_id);
        }
        let delivered_output = if delivered {
            u64::from(usage.completion_tokens)
        } else {
            0
        };
        if messages {
            counters
                .messages
                .output_tokens
                .fetch_add(delivered_output, Ordering::Relaxed);
        }
        (response, delivered_output)
    };
    state
        .latency
        .record(now().saturating_duration_since(admitted_at));
    finish(response, delivered_output)
}

/// A chat answer in OpenAI's shape, and its usage (serialised straight from
/// typed parts: this is the benchmarks' hot path).
fn chat_answer(
    request: &ChatRequest,
    id: &str,
    estimate: &turbo_tokens::Estimate,
    draw: &super::state::Draw,
    state: &ServerState,
    echo: Option<serde_json::Value>,
) -> (Response, Usage) {
    let completion = complete(request, draw.completion_tokens, state.config.echo_words);
    let usage = Usage::new(estimate.prompt_tokens, completion.completion_tokens());
    let body = CompletionBody {
        id: format!("chatcmpl-{id}"),
        object: "chat.completion",
        created: unix_seconds(),
        model: &request.model,
        choices: (0..completion.choices)
            .map(|index| ChoiceBody {
                index,
                message: MessageBody {
                    role: "assistant",
                    content: &completion.text,
                },
                logprobs: None,
                finish_reason: completion.finish_reason,
            })
            .collect(),
        usage,
        system_fingerprint: "fp_turbo_mock",
        mock_echo: echo,
    };
    (json_response(StatusCode::OK, &body), usage)
}

fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, String> {
    if endpoint != Endpoint::ChatCompletions {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
            format!("We could not parse the JSON body of your request: {error}")
        })?;
        return ApiRequest::from_value(endpoint, value).map_err(|error| error.to_string());
    }
    parse_chat(body).map(ApiRequest::Chat)
}

fn parse_chat(body: &[u8]) -> Result<ChatRequest, String> {
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|error| format!("We could not parse the JSON body of your request: {error}"))?;
    if request.model.is_empty() {
        return Err("you must provide a model parameter".to_owned());
    }
    if request.messages.is_empty() {
        return Err("'messages' must contain at least one message".to_owned());
    }
    if request.stream == Some(true) {
        return Err("the mock server does not stream; remove \"stream\": true".to_owned());
    }
    match request.n {
        Some(0) => Err("'n' must be at least 1".to_owned()),
        Some(n) if n > MAX_CHOICES => Err(format!("'n' must be at most {MAX_CHOICES}")),
        _ => Ok(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_are_described() {
        assert!(parse_chat(b"{").unwrap_err().contains("parse"));
        assert!(parse_chat(br#"{"model":"m","messages":[]}"#).is_err());
        assert!(parse_chat(br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#).is_err());
        assert!(
            parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#)
                .is_err()
        );
        assert!(
            parse_chat(
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#
            )
            .is_err()
        );
        assert!(parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).is_ok());
    }

    #[test]
    fn the_prompt_key_is_the_last_user_message() {
        let request = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"system","content":"d"}]}"#,
        )
        .unwrap();
        assert_eq!(last_user_text(&request), "c");
    }
}
