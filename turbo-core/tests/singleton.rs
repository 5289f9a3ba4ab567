//! The original's singleton API. Its own test binary: the global is per process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use turbo_core::{ChatMessage, ChatRequest, NotInitialized, TurboRun, WorkNode};
use turbo_providers::{ProviderKind, SimulatedProvider};

#[tokio::test(start_paused = true)]
async fn init_once_then_the_same_engine_everywhere() {
    assert_eq!(TurboRun::global().err(), Some(NotInitialized));
    let groq = Arc::new(SimulatedProvider::instant(ProviderKind::Groq));
    let openai = Arc::new(SimulatedProvider::instant(ProviderKind::OpenAi));
    let first = TurboRun::init(groq.clone(), openai.clone()).unwrap();
    let second = TurboRun::init(groq, openai).unwrap();
    assert_eq!(first.instance_id(), second.instance_id());
    let global = TurboRun::global().unwrap();
    assert_eq!(global.instance_id(), first.instance_id());
    assert!(TurboRun::install_global(TurboRun::builder().build().unwrap()).is_err());

    // Work pushed through one handle is visible through the other.
    let request = ChatRequest::new("llama-3.1-8b-instant", vec![ChatMessage::user("hi")]);
    let id = first.push(WorkNode::for_groq(request)).unwrap();
    assert!(global.wait_for(id).await.is_ok());
    assert_eq!(instance_len(&global), 6);
}

fn instance_len(engine: &TurboRun) -> usize {
    engine.instance_id().len()
}
