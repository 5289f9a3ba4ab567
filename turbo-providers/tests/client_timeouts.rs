//! The client notices a server that stops sending mid-body, and reads the
//! retry hints of a gateway's 429. Raw TCP servers on loopback; no wall-clock
//! assertion (the only timing is the stall the server never ends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use turbo_providers::{
    ChatClient, ChatMessage, ChatRequest, ClientConfig, OpenAiCompatClient, ProviderError,
    ProviderKind,
};

/// Serves one connection: reads the request head, writes `answer`, then keeps
/// the connection open without sending anything more until the client leaves.
async fn serve_once(answer: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        // Read until the end of the headers and the body they announce.
        loop {
            let n = socket.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket.write_all(&answer).await.unwrap();
        socket.flush().await.unwrap();
        // Stall: keep the socket open until the client closes it.
        let _ = socket.read(&mut buffer).await;
    });
    format!("http://{address}/v1")
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hello")])
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_retryable_stall() {
    let base = serve_once(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"id\":\"x\","
            .to_vec(),
    )
    .await;
    let config = ClientConfig::new(ProviderKind::Custom, &base)
        .unwrap()
        .with_idle_timeout(Duration::from_millis(300));
    let client = OpenAiCompatClient::from_config(config).unwrap();
    let error = client.chat(&request()).await.unwrap_err();
    match &error {
        ProviderError::Stalled { idle, received } => {
            assert_eq!(*idle, Duration::from_millis(300));
            assert!(*received <= 10, "{received} bytes");
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    assert!(error.is_retryable());
    assert_eq!(error.code(), "timeout");
}

#[tokio::test]
async fn a_gateway_429_with_only_a_vendor_hint_carries_it() {
    let body =
        r#"{"error":{"message":"rpm limit","type":"throttling_error","param":null,"code":"429"}}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         llm_provider-retry-after: 60\r\nx-ratelimit-limit-requests: 120\r\n\
         x-ratelimit-remaining-requests: 0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let base = serve_once(answer.into_bytes()).await;
    let client =
        OpenAiCompatClient::from_config(ClientConfig::new(ProviderKind::Custom, &base).unwrap())
            .unwrap();
    let error = client.chat(&request()).await.unwrap_err();
    assert_eq!(error.status(), Some(429));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    let snapshot = error.rate_limit_snapshot().unwrap();
    assert_eq!(snapshot.limit_requests, Some(120));
    assert_eq!(snapshot.remaining_requests, Some(0));
    assert_eq!(snapshot.reset_requests, None);
}
