//! Shared helpers for the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use turbo_core::{
    ChatMessage, ChatRequest, NodeId, NodeOutput, TurboRun, TurboRunBuilder, WorkError, WorkNode,
};
use turbo_providers::{ProviderKind, SimulatedProvider};

/// A one-message request.
pub fn request(text: &str) -> ChatRequest {
    ChatRequest::new("llama-3.1-8b-instant", vec![ChatMessage::user(text)])
}

/// A builder with zero-latency simulated clients for both providers and no limits.
pub fn builder() -> TurboRunBuilder {
    TurboRun::builder()
        .groq(Arc::new(SimulatedProvider::instant(ProviderKind::Groq)))
        .openai(Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi)))
        .limits(turbo_core::Provider::Groq, turbo_core::Limits::unlimited())
        .limits(
            turbo_core::Provider::OpenAi,
            turbo_core::Limits::unlimited(),
        )
}

/// Records when each node's work started and ended (on the paused clock),
/// how often it ran, and the highest number running at once.
#[derive(Default)]
pub struct Recorder {
    pub origin: Mutex<Option<Instant>>,
    pub starts: Mutex<HashMap<String, Vec<Duration>>>,
    pub ends: Mutex<HashMap<String, Duration>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Mutex::new(Some(Instant::now())),
            ..Self::default()
        })
    }

    fn now(&self) -> Duration {
        self.origin.lock().unwrap().elapsed()
    }

    pub fn start(&self, name: &str) {
        let now = self.now();
        self.starts
            .lock()
            .entry(name.to_owned())
            .or_default()
            .push(now);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
    }

    pub fn end(&self, name: &str) {
        let now = self.now();
        self.ends.lock().insert(name.to_owned(), now);
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn first_start(&self, name: &str) -> Duration {
        self.starts.lock()[name][0]
    }

    pub fn end_of(&self, name: &str) -> Duration {
        self.ends.lock()[name]
    }

    pub fn runs(&self, name: &str) -> usize {
        self.starts.lock().get(name).map_or(0, Vec::len)
    }
}

/// A Groq node named `name` whose work sleeps `latency` (paused clock),
/// records itself, and answers with its name — or fails when `fail` is set.
pub fn timed_node(recorder: &Arc<Recorder>, name: &str, latency: Duration, fail: bool) -> WorkNode {
    let recorder = recorder.clone();
    let name = name.to_owned();
    WorkNode::for_groq(request(&name))
        .with_key(name.clone())
        .with_work_fn(move |_ctx| {
            let recorder = recorder.clone();
            let name = name.clone();
            async move {
                recorder.start(&name);
                tokio::time::sleep(latency).await;
                recorder.end(&name);
                if fail {
                    Err(WorkError::permanent(format!("{name} failed on purpose")))
                } else {
                    Ok(NodeOutput::text(name))
                }
            }
        })
}

/// Pushes `node` after `deps`, panicking on a push error.
pub fn push(engine: &TurboRun, node: WorkNode, deps: &[NodeId]) -> NodeId {
    engine.push_with_dependencies(node, deps).unwrap()
}
