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
