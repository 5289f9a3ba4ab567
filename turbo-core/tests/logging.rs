//! The log file: whole lines, each carrying the engine's instance id. Its own
//! test binary, because it installs the process-wide subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use turbo_core::logging::init_file_logging;
use turbo_core::{ChatMessage, ChatRequest, TurboRun, WorkNode};
use turbo_providers::{ProviderKind, SimulatedProvider};

#[tokio::test(start_paused = true)]
async fn engine_lines_carry_the_instance_id() {
    let dir = std::env::temp_dir().join(format!("turbo-logging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("turbo_run.log");
    init_file_logging(&path).unwrap();
    assert!(
        init_file_logging(&path).is_err(),
        "a second subscriber is refused"
    );

    let engine = TurboRun::builder()
        .groq(Arc::new(SimulatedProvider::instant(ProviderKind::Groq)))
        .build()
        .unwrap();
    let request = ChatRequest::new("llama-3.1-8b-instant", vec![ChatMessage::user("hi")]);
    let id = engine.push(WorkNode::for_groq(request)).unwrap();
    engine.wait_for(id).await.unwrap();
    engine.shutdown().await;

    let text = std::fs::read_to_string(&path).unwrap();
    let engine_lines: Vec<&str> = text.lines().filter(|l| l.contains("turbo_run{")).collect();
    assert!(
        engine_lines.len() >= 2,
        "started and shutting-down lines expected:\n{text}"
    );
    for line in &engine_lines {
        assert!(
            line.contains(&format!("instance={}", engine.instance_id())),
            "line without the instance id: {line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
