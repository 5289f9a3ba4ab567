//! What the server said about its own limits.
//!
//! The caller (the engine) parses whatever the provider sends (for OpenAI
//! and Groq the `x-ratelimit-*` headers) into these plain values; this crate
//! never sees a header name.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Window;

/// The server's view of one limit, as reported with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowObservation {
    /// The window the server's numbers refer to. Groq reports requests per
    /// day and tokens per minute; OpenAI both per minute.
    pub window: Window,
    /// The limit the server enforces on this window.
    pub limit: Option<u64>,
    /// Units left at the moment the server handled the request.
    pub remaining: Option<u64>,
    /// Time until the server's bucket is full again.
    pub reset: Option<Duration>,
}

impl WindowObservation {
    /// An observation of `window` with nothing filled in yet.
    pub const fn new(window: Window) -> Self {
        Self {
            window,
            limit: None,
            remaining: None,
            reset: None,
        }
    }

    /// With the server's limit.
    #[must_use]
    pub const fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// With the server's remaining count.
    #[must_use]
    pub const fn remaining(mut self, remaining: u64) -> Self {
        self.remaining = Some(remaining);
        self
    }

    /// With the server's time until full.
    #[must_use]
    pub const fn reset(mut self, reset: Duration) -> Self {
        self.reset = Some(reset);
        self
    }

    /// True when the observation carries no number at all.
    pub const fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// Feedback from one response: what the server reported for requests and tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The request limit's state.
    pub requests: Option<WindowObservation>,
    /// The token limit's state.
    pub tokens: Option<WindowObservation>,
}

impl Feedback {
    /// True when there is nothing to absorb.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none_or(|o| o.is_empty()) && self.tokens.is_none_or(|o| o.is_empty())
    }
}
