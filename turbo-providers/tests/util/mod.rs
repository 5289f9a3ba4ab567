//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use turbo_providers::mock_server::{MockServer, MockServerConfig, MockServerHandle};
use turbo_providers::{ChatMessage, ChatRequest, ClientConfig, OpenAiCompatClient, ProviderKind};

/// Starts a mock server on an ephemeral loopback port.
pub async fn start(config: MockServerConfig) -> MockServerHandle {
    MockServer::start(config).await.expect("mock server starts")
}

/// A client configuration for `base_url`, with a short timeout so a hung test fails fast.
pub fn config_for(base_url: &str, provider: ProviderKind) -> ClientConfig {
    ClientConfig::new(provider, base_url)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
}

/// A client for `base_url` as `provider`.
pub fn client_for(base_url: &str, provider: ProviderKind) -> OpenAiCompatClient {
    OpenAiCompatClient::from_config(config_for(base_url, provider)).unwrap()
}

/// A one-message request.
pub fn user_request(text: &str) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user(text)])
}

/// The raw HTTP/1.1 bytes of a one-message chat request.
pub fn raw_chat_request(text: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 10,
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connects to `addr` and sends one raw chat request.
pub async fn send_raw_chat(addr: std::net::SocketAddr, text: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&raw_chat_request(text)).await.unwrap();
    stream
}

/// A raw answer split into its head and body.
pub fn split_answer(bytes: &[u8]) -> (String, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an answer head");
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        bytes[end + 4..].to_vec(),
    )
}

/// The value of header `name` in a raw head.
pub fn head_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// Guards a test against hanging for ever; not a timing assertion: the
/// bound is far beyond anything the awaited step needs.
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the step finished (hang guard)")
}
