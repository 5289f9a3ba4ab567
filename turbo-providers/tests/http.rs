//! The HTTP client against the mock server, over real loopback HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::NonZeroU64;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use turbo_providers::mock_server::{MockServer, MockServerConfig, MockStats};
use turbo_providers::turbo_tokens::{DefaultOutput, TiktokenCounter};
use turbo_providers::{
    ChatClient, ChatMessage, ChatRequest, LatencyModel, LimitWindow, OpenAiCompatClient,
    ProviderError, ProviderKind,
};
use util::{client_for, config_for, start, user_request};

fn nz(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value).unwrap()
}

#[tokio::test]
async fn success_carries_usage_and_rate_limit_headers() {
    let server = start(
        MockServerConfig::default()
            .with_rpm(nz(100))
            .with_tpm(nz(100_000)),
    )
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let request = user_request("The quick brown fox jumps").with_max_tokens(10);
    let prompt = request
        .estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(0))
        .prompt_tokens;

    let response = client.chat(&request).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), Some("echo: The quick brown fox jumps"));
    assert_eq!(response.finish_reason(), Some("length"));
    let usage = response.usage().unwrap();
    assert_eq!(usage.prompt_tokens, prompt);
    assert_eq!(usage.completion_tokens, 10);
    assert_eq!(usage.total_tokens, prompt + 10);
    assert!(response.id().unwrap().starts_with("chatcmpl-"));
    assert!(response.request_id().unwrap().starts_with("req_"));
    let limits = response.rate_limit();
    assert_eq!(limits.limit_requests, Some(100));
    assert_eq!(limits.remaining_requests, Some(99));
    assert_eq!(limits.limit_tokens, Some(100_000));
    assert_eq!(
        limits.remaining_tokens,
        Some(100_000 - u64::from(prompt) - 10)
    );
    // One request of 100/min refills in 0.6 s; the tokens in proportion.
    assert!(limits.reset_requests.unwrap() <= Duration::from_millis(600));
    assert!(limits.reset_tokens.unwrap() > Duration::ZERO);
    assert_eq!(limits.requests_window, LimitWindow::Minute);
    assert!(response.latency() > Duration::ZERO);

    let stats = server.stats();
    assert_eq!(stats.ok, 1);
    assert_eq!(stats.tokens_charged, u64::from(prompt) + 10);
    assert_eq!(stats.prompt_tokens, u64::from(prompt));
    server.shutdown().await;
}

#[tokio::test]
async fn over_the_request_limit_is_rate_limited_with_retry_after() {
    let server = start(MockServerConfig::default().with_rpm(nz(1))).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    client.chat(&user_request("first")).await.unwrap();

    let error = client.chat(&user_request("second")).await.unwrap_err();

    let ProviderError::RateLimited {
        retry_after,
        snapshot,
        body,
        request_id,
    } = &error
    else {
        panic!("expected RateLimited, got {error:?}")
    };
    let wait = retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(snapshot.remaining_requests, Some(0));
    assert_eq!(snapshot.limit_requests, Some(1));
    let body = body.as_ref().unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(request_id.is_some());
    assert!(error.is_retryable());
    assert_eq!(error.status(), Some(429));
    let stats = server.stats();
    assert_eq!((stats.ok, stats.rate_limited), (1, 1));
}

#[tokio::test]
async fn over_the_token_limit_is_rate_limited_and_oversized_requests_never_fit() {
    let server = start(MockServerConfig::default().with_tpm(nz(100))).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    client
        .chat(&user_request("hi").with_max_tokens(60))
        .await
        .unwrap();

    let refused = client
        .chat(&user_request("hi").with_max_tokens(60))
        .await
        .unwrap_err();
    assert_eq!(refused.error_body().unwrap()["error"]["type"], "tokens");
    assert!(refused.retry_after().unwrap() > Duration::ZERO);

    let too_large = client
        .chat(&user_request("hi").with_max_tokens(500))
        .await
        .unwrap_err();
    assert!(matches!(
        too_large,
        ProviderError::RateLimited {
            retry_after: None,
            ..
        }
    ));
    assert!(
        too_large
            .provider_message()
            .unwrap()
            .contains("Request too large")
    );
    // Refused requests are not charged.
    assert_eq!(
        server.stats().tokens_charged,
        60 + u64::from(
            user_request("hi")
                .estimate(&TiktokenCounter::new(), DefaultOutput::Tokens(0))
                .prompt_tokens
        )
    );
}

#[tokio::test]
async fn exactly_the_limit_is_admitted_under_concurrency() {
    // A daily limit barely refills during the test, so the count is exact.
    let server = start(MockServerConfig::default().with_rpd(nz(50))).await;
    let client = client_for(&server.base_url(), ProviderKind::Groq);
    let calls = (0..200).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.chat(&user_request(&format!("n{i}"))).await })
    });
    let mut ok = 0;
    let mut limited = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ProviderError::RateLimited { .. }) => limited += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, limited), (50, 150));
    let stats = server.stats();
    assert_eq!(stats.requests, 200);
    assert_eq!(stats.timeline.iter().map(|s| s.requests).sum::<u64>(), 50);
    assert_eq!(
        stats.timeline.iter().map(|s| s.rate_limited).sum::<u64>(),
        150
    );
    assert!(stats.max_in_flight >= 1);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn injected_server_errors_are_retryable() {
    let server = start(MockServerConfig {
        fail_first: 2,
        failure_statuses: vec![503],
        ..MockServerConfig::default()
    })
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    for _ in 0..2 {
        let error = client.chat(&user_request("x")).await.unwrap_err();
        assert!(
            matches!(error, ProviderError::Server { status: 503, .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
        assert_eq!(error.error_body().unwrap()["error"]["type"], "server_error");
    }
    assert!(client.chat(&user_request("x")).await.is_ok());
    let stats = server.stats();
    assert_eq!((stats.injected_failures, stats.ok), (2, 1));
}

#[tokio::test]
async fn failure_rate_one_gives_500s() {
    let server = start(MockServerConfig {
        failure_rate: 1.0,
        failure_statuses: vec![500],
        seed: Some(3),
        ..MockServerConfig::default()
    })
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let error = client.chat(&user_request("x")).await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(error.is_retryable());
}

#[tokio::test]
async fn provider_rejections_are_bad_requests_and_final() {
    let server = start(MockServerConfig::default()).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let mut request = user_request("x");
    request.n = Some(0);
    let error = client.chat(&request).await.unwrap_err();
    let ProviderError::BadRequest {
        status, message, ..
    } = &error
    else {
        panic!("expected BadRequest, got {error:?}")
    };
    assert_eq!(*status, 400);
    assert!(message.contains("'n'"), "{message}");
    assert!(!error.is_retryable());
    assert_eq!(error.provider_message(), Some(message.as_str()));

    // A body that is not JSON at all, sent by hand.
    let raw = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_slice(&raw.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(server.stats().bad_requests, 2);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let server = start(
        MockServerConfig::default().with_latency(LatencyModel::Fixed(Duration::from_secs(30))),
    )
    .await;
    let config = config_for(&server.base_url(), ProviderKind::OpenAi)
        .with_timeout(Duration::from_millis(100));
    let client = OpenAiCompatClient::from_config(config).unwrap();
    let error = client.chat(&user_request("x")).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Timeout {
            timeout: Some(Duration::from_millis(100))
        }
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn dropping_the_server_answers_sleeping_requests_at_once() {
    let server = start(
        MockServerConfig::default().with_latency(LatencyModel::Fixed(Duration::from_secs(600))),
    )
    .await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let pending = tokio::spawn(async move { client.chat(&user_request("x")).await });
    // Wait until the request is inside the server, sleeping.
    while server.stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    drop(server);
    // The client's own timeout is 10 s: an answer means the server cancelled the sleep.
    let error = pending.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ProviderError::Server { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stopped_server_refuses_new_connections() {
    let server = start(MockServerConfig::default()).await;
    let base_url = server.base_url();
    server.shutdown().await;
    let client = client_for(&base_url, ProviderKind::OpenAi);
    let error = client.chat(&user_request("x")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Connection { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn refused_connections_are_connection_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client_for(&format!("http://{addr}/v1"), ProviderKind::Custom);
    let error = client.chat(&user_request("x")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Connection { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn unknown_fields_reach_the_server_unchanged() {
    let server = start(MockServerConfig::default()).await;
    let config = config_for(&server.base_url(), ProviderKind::OpenAi)
        .with_header("x-mock-echo", "true")
        .unwrap();
    let client = OpenAiCompatClient::from_config(config).unwrap();
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}], "name": "ann"},
            {"role": "assistant", "content": null,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ],
        "temperature": 0.25,
        "seed": 7,
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_object"},
        "max_completion_tokens": 12
    });
    let request = ChatRequest::from_value(body.clone()).unwrap();
    let response = client.chat(&request).await.unwrap();
    assert_eq!(response.body()["mock_echo"], body);
    assert_eq!(response.text(), Some("echo: Weather?"));
}

#[tokio::test]
async fn groq_layout_and_daily_request_window() {
    let server = start(
        MockServerConfig::default()
            .with_rpd(nz(1000))
            .with_tpm(nz(6000)),
    )
    .await;
    let client = client_for(&server.groq_base_url(), ProviderKind::Groq);
    let response = client.chat(&user_request("hola")).await.unwrap();
    let limits = response.rate_limit();
    assert_eq!(limits.requests_window, LimitWindow::Day);
    assert_eq!(limits.tokens_window, LimitWindow::Minute);
    assert_eq!(limits.remaining_requests, Some(999));
    // One request of 1000/day refills in 86.4 s.
    assert_eq!(limits.reset_requests, Some(Duration::from_millis(86_400)));
    assert_eq!(client.provider(), ProviderKind::Groq);
    assert_eq!(server.stats().ok, 1);
}

#[tokio::test]
async fn keys_are_sent_checked_and_never_shown() {
    let server = start(MockServerConfig {
        api_key: Some("sk-right-key".into()),
        ..MockServerConfig::default()
    })
    .await;
    let wrong = OpenAiCompatClient::from_config(
        config_for(&server.base_url(), ProviderKind::OpenAi).with_api_key("sk-wrong-key"),
    )
    .unwrap();
    let error = wrong.chat(&user_request("x")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Auth { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let shown = format!("{error} {error:?} {wrong:?} {:?}", wrong.config());
    assert!(!shown.contains("sk-wrong-key"), "{shown}");
    assert!(!shown.contains("sk-right-key"), "{shown}");

    let right = OpenAiCompatClient::from_config(
        config_for(&server.base_url(), ProviderKind::OpenAi).with_api_key("sk-right-key"),
    )
    .unwrap();
    assert!(right.chat(&user_request("x")).await.is_ok());
    assert_eq!(server.stats().unauthorized, 1);
}

#[tokio::test]
async fn several_choices_share_the_limit() {
    let server = start(MockServerConfig::default().with_tpm(nz(10_000))).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    let mut request = user_request("pick one").with_max_completion_tokens(8);
    request.n = Some(3);
    let response = client.chat(&request).await.unwrap();
    assert_eq!(response.choices().len(), 3);
    assert_eq!(response.usage().unwrap().completion_tokens, 24);
    let prompt = u64::from(response.usage().unwrap().prompt_tokens);
    assert_eq!(server.stats().tokens_charged, prompt + 24);
}

#[tokio::test]
async fn stats_and_reset_over_http() {
    let server = start(MockServerConfig::default().with_rpm(nz(2))).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    client.chat(&user_request("a")).await.unwrap();
    client.chat(&user_request("b")).await.unwrap();
    assert!(client.chat(&user_request("c")).await.is_err());

    let http = reqwest::Client::new();
    let root = format!("http://{}", server.addr());
    let bytes = http
        .get(format!("{root}/stats"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: MockStats = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((stats.requests, stats.ok, stats.rate_limited), (3, 2, 1));
    let reset = http.post(format!("{root}/reset")).send().await.unwrap();
    assert_eq!(reset.status().as_u16(), 204);
    assert_eq!(server.stats().requests, 0);
    // The bucket is full again.
    assert!(client.chat(&user_request("d")).await.is_ok());
}

#[tokio::test]
async fn serve_until_stops_on_its_signal_and_reports() {
    let server = MockServer::bind(MockServerConfig::default()).await.unwrap();
    let base_url = server.base_url();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_until(async {
        let _ = stopped.await;
    }));
    let client = client_for(&base_url, ProviderKind::Custom);
    let request = ChatRequest::new("m", vec![ChatMessage::user("bye")]);
    client.chat(&request).await.unwrap();
    stop.send(()).unwrap();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.ok, 1);
}

#[tokio::test]
async fn graceful_shutdown_returns_final_stats() {
    let server = start(MockServerConfig::default()).await;
    let client = client_for(&server.base_url(), ProviderKind::OpenAi);
    client.chat(&user_request("x")).await.unwrap();
    let stats = server.shutdown().await;
    assert_eq!(stats.ok, 1);
}

#[tokio::test]
async fn binding_a_taken_port_is_an_io_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = MockServerConfig {
        bind: taken.local_addr().unwrap(),
        ..MockServerConfig::default()
    };
    let error = MockServer::start(config).await.unwrap_err();
    assert!(matches!(error, ProviderError::Io { .. }), "{error:?}");
}

#[tokio::test]
async fn configured_latency_delays_answers() {
    let server = start(MockServerConfig {
        latency: LatencyModel::Uniform {
            min: Duration::from_millis(20),
            max: Duration::from_millis(30),
        },
        seed: Some(9),
        ..MockServerConfig::default()
    })
    .await;
    let client: std::sync::Arc<dyn ChatClient> =
        std::sync::Arc::new(client_for(&server.base_url(), ProviderKind::OpenAi));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = std::sync::Arc::clone(&client);
            tokio::spawn(async move { client.chat(&user_request("wait")).await })
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert!(
            response.latency() >= Duration::from_millis(20),
            "{:?}",
            response.latency()
        );
    }
    assert_eq!(server.stats().ok, 4);
}
