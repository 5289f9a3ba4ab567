//! The mock server's hostile modes over real loopback HTTP: gateway 429s,
//! missing headers, a drained start, connection faults seen from raw TCP,
//! the capacity queue, and the counters that report them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use turbo_providers::mock_server::{
    CapacityModel, FaultMix, MockServerConfig, MockStats, TrickleShape,
};
use turbo_providers::{LatencyModel, TokenCounting};
use util::{head_value, send_raw_chat, split_answer, start, within};

fn nz(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value).unwrap()
}

fn faults(text: &str) -> FaultMix {
    text.parse().unwrap()
}

async fn post_chat(client: &reqwest::Client, base: &str, text: &str) -> reqwest::Response {
    client
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 10,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap()
}

/// Reads until the peer closes or resets: the bytes, and whether it was a reset.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => return (bytes, false),
            Ok(read) => bytes.extend_from_slice(&buffer[..read]),
            Err(_) => return (bytes, true),
        }
    }
}

#[tokio::test]
async fn a_gateway_refuses_without_retry_headers_and_answers_without_resets() {
    let server = start(
        MockServerConfig::default()
            .gateway()
            .with_rpm(nz(1))
            .with_tpm(nz(100_000)),
    )
    .await;
    let http = reqwest::Client::new();
    // Three requests in a row: whatever minute boundary falls between them,
    // two share a calendar minute, so at least one is refused.
    let mut answers = Vec::new();
    for text in ["a", "b", "c"] {
        answers.push(post_chat(&http, &server.base_url(), text).await);
    }
    let (ok, refused): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .partition(|answer| answer.status().as_u16() == 200);
    assert!(!ok.is_empty() && !refused.is_empty());

    let headers = ok[0].headers();
    assert_eq!(headers["x-ratelimit-limit-requests"], "1");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "100000");
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
    for absent in [
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-request-id",
    ] {
        assert!(!headers.contains_key(absent), "{absent}");
    }

    let refusal = refused.into_iter().next().unwrap();
    assert_eq!(refusal.status().as_u16(), 429);
    let headers = refusal.headers().clone();
    assert_eq!(headers["llm_provider-retry-after"], "60");
    for (name, _) in &headers {
        let name = name.as_str();
        assert!(
            name != "retry-after" && name != "retry-after-ms" && !name.starts_with("x-ratelimit"),
            "{name}"
        );
    }
    let body: serde_json::Value = serde_json::from_slice(&refusal.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "throttling_error");
    assert_eq!(body["error"]["code"], "429");
    assert!(body["error"]["param"].is_null());
    assert!(body["error"]["message"].as_str().unwrap().contains("rpm"));
    let stats = server.stats();
    assert_eq!(stats.rate_limited + stats.ok, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_headers_can_be_left_out() {
    let server = start(MockServerConfig {
        rate_limit_headers: false,
        ..MockServerConfig::default().with_rpm(nz(100))
    })
    .await;
    let answer = post_chat(&reqwest::Client::new(), &server.base_url(), "hi").await;
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        answer
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("x-ratelimit"))
    );
    assert!(answer.headers().contains_key("x-request-id"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_drained_key_refuses_at_once_and_charges_refusals_when_asked() {
    // One request a minute, nothing left: the first request waits a minute.
    let server = start(MockServerConfig {
        initial_fill: 0.0,
        charge_refused: true,
        ..MockServerConfig::default().with_rpm(nz(1))
    })
    .await;
    let answer = post_chat(&reqwest::Client::new(), &server.base_url(), "hi").await;
    assert_eq!(answer.status().as_u16(), 429);
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let stats = server.stats();
    assert_eq!((stats.rate_limited, stats.requests_charged), (1, 1));
    assert_eq!(stats.timeline[0].received, 1);
    assert_eq!(stats.timeline[0].requests_remaining, Some(0));
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_counts_tokens_its_own_way() {
    let exact = start(MockServerConfig::default()).await;
    let scaled = start(MockServerConfig {
        token_factor: 1.5,
        token_counting: TokenCounting::Approximate,
        ..MockServerConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let text = "The quick brown fox jumps over the lazy dog, again and again.";
    post_chat(&http, &exact.base_url(), text).await;
    post_chat(&http, &scaled.base_url(), text).await;
    let exact_charge = exact.stats().tokens_charged;
    let scaled_charge = scaled.stats().tokens_charged;
    // chars/4 and tiktoken differ, and the factor scales the whole charge.
    assert_ne!(scaled_charge, exact_charge);
    assert!(
        scaled_charge as f64 > exact_charge as f64 * 1.2,
        "{scaled_charge} vs {exact_charge}"
    );
    exact.shutdown().await;
    scaled.shutdown().await;
}

#[tokio::test]
async fn a_reset_sends_no_byte_and_is_counted() {
    let server = start(MockServerConfig::default().with_faults(faults("reset=1"))).await;
    let mut stream = send_raw_chat(server.addr(), "reset me").await;
    let (bytes, reset) = within(read_to_close(&mut stream)).await;
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    assert!(reset, "an RST, not a clean close");
    let stats = server.stats();
    assert_eq!(stats.faults.reset, 1);
    assert_eq!((stats.ok, stats.requests_charged), (0, 1));
    assert_eq!(stats.timeline[0].faults, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_truncated_body_promises_more_than_it_sends() {
    let server = start(MockServerConfig::default().with_faults(faults("truncate=1"))).await;
    let mut stream = send_raw_chat(server.addr(), "cut me short").await;
    let (bytes, _) = within(read_to_close(&mut stream)).await;
    let (head, body) = split_answer(&bytes);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let promised: usize = head_value(&head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), promised / 2);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    let stats = server.stats();
    assert_eq!((stats.faults.truncate, stats.ok), (1, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn a_hang_holds_the_connection_until_the_client_goes_away() {
    let server = start(MockServerConfig::default().with_faults(faults("hang=1"))).await;
    let stream = send_raw_chat(server.addr(), "wait for me").await;
    within(server.wait_for_held_connections(1)).await;
    let stats = server.stats();
    assert_eq!(
        (stats.faults.hang, stats.faults_active, stats.ok),
        (1, 1, 0)
    );
    drop(stream);
    within(server.wait_for_held_connections(0)).await;
    assert_eq!(server.stats().faults_active, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn held_connections_are_reset_when_the_server_stops() {
    let server = start(MockServerConfig::default().with_faults(faults("hang=0.5,stall=0.5"))).await;
    let mut first = send_raw_chat(server.addr(), "one").await;
    let mut second = send_raw_chat(server.addr(), "two").await;
    within(server.wait_for_held_connections(2)).await;
    let stats = within(server.shutdown()).await;
    assert_eq!(stats.faults.hang + stats.faults.stall, 2);
    assert_eq!(stats.faults_active, 0);
    for stream in [&mut first, &mut second] {
        let (bytes, _) = within(read_to_close(stream)).await;
        // Nothing (hang) or a head and half a body (stall), never a whole answer.
        if !bytes.is_empty() {
            let (head, body) = split_answer(&bytes);
            let promised: usize = head_value(&head, "content-length")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), promised / 2);
        }
    }
}

#[tokio::test]
async fn a_stall_sends_half_the_body_then_holds() {
    let server = start(MockServerConfig::default().with_faults(faults("stall=1"))).await;
    let mut stream = send_raw_chat(server.addr(), "half of it").await;
    within(server.wait_for_held_connections(1)).await;
    // Read exactly the head and half the body the stall lets through.
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head, expected) = loop {
        let read = within(stream.read(&mut buffer)).await.unwrap();
        assert!(read > 0, "the connection stays open");
        bytes.extend_from_slice(&buffer[..read]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let promised: usize = head_value(&head, "content-length")
                .unwrap()
                .parse()
                .unwrap();
            if bytes.len() - end - 4 >= promised / 2 {
                break (head, end + 4 + promised / 2);
            }
        }
    };
    assert!(head.starts_with("HTTP/1.1 200"));
    assert_eq!(bytes.len(), expected);
    assert_eq!(server.stats().faults.stall, 1);
    drop(stream);
    within(server.wait_for_held_connections(0)).await;
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_trickle_sends_the_body_in_small_pieces_and_completes() {
    let server = start(MockServerConfig {
        trickle: TrickleShape {
            chunk_bytes: NonZeroUsize::new(16).unwrap(),
            gap: Duration::from_secs(2),
        },
        ..MockServerConfig::default().with_faults(faults("trickle=1"))
    })
    .await;
    let mut stream = send_raw_chat(server.addr(), "slowly please").await;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut reads = 0;
    let total = loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0);
        reads += 1;
        bytes.extend_from_slice(&buffer[..read]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let promised: usize = head_value(&head, "content-length")
                .unwrap()
                .parse()
                .unwrap();
            if bytes.len() >= end + 4 + promised {
                break promised;
            }
        }
    };
    let (_, body) = split_answer(&bytes);
    assert_eq!(body.len(), total);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: slowly please"
    );
    // At most 16 body bytes per write, each write after a gap.
    assert!(reads > total / 16, "{reads} reads for {total} bytes");
    let stats = server.stats();
    assert_eq!((stats.faults.trickle, stats.ok), (1, 1));
    server.wait_for_held_connections(0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_stats_show_the_load() {
    let server = start(MockServerConfig {
        // Nothing finishes during the test: the load stays put.
        latency: LatencyModel::Fixed(Duration::from_secs(3600)),
        shutdown_grace: Duration::ZERO,
        ..MockServerConfig::default().with_capacity(CapacityModel {
            queue_limit: Some(1),
            ..CapacityModel::new(NonZeroUsize::MIN)
        })
    })
    .await;
    let http = reqwest::Client::new();
    let base = server.base_url();
    let waiting: Vec<_> = (0..2)
        .map(|index| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move { post_chat(&http, &base, &format!("w{index}")).await })
        })
        .collect();
    // Once one is in service and one queued, a third overflows.
    within(async {
        while server.stats().capacity.map(|c| (c.in_service, c.queued)) != Some((1, 1)) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let answer = post_chat(&http, &base, "overflow").await;
    assert_eq!(answer.status().as_u16(), 503);
    let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    let stats: MockStats = server.stats();
    let capacity = stats.capacity.unwrap();
    assert_eq!(
        (capacity.slots, capacity.in_service, capacity.queued),
        (1, 1, 1)
    );
    assert_eq!(stats.overloaded, 1);
    let stats = within(server.shutdown()).await;
    for task in waiting {
        assert_eq!(within(task).await.unwrap().status().as_u16(), 503);
    }
    assert_eq!(stats.ok, 0);
}

#[tokio::test(start_paused = true)]
async fn latency_grows_with_the_batch_and_shows_in_percentiles() {
    let server = start(MockServerConfig {
        latency: LatencyModel::Fixed(Duration::from_millis(200)),
        ..MockServerConfig::default()
            .with_capacity(CapacityModel::new(NonZeroUsize::new(4).unwrap()))
    })
    .await;
    let http = reqwest::Client::new();
    // One at a time: each alone in service, 200 ms × (1 + 1/4).
    for text in ["a", "b", "c"] {
        assert_eq!(
            post_chat(&http, &server.base_url(), text).await.status(),
            200
        );
    }
    let latency = server.stats().latency;
    assert_eq!(latency.count, 3);
    assert!(
        latency.p50_us.abs_diff(250_000) <= 250_000 / 25,
        "{latency:?}"
    );
    assert!(latency.max_us >= 250_000);
    server.shutdown().await;
}

#[tokio::test]
async fn answers_are_counted_per_prompt() {
    let server = start(MockServerConfig {
        count_by_prompt: true,
        ..MockServerConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    for text in ["same", "same", "other", "same"] {
        post_chat(&http, &server.base_url(), text).await;
    }
    let prompts = server.stats().prompts.unwrap();
    assert_eq!(prompts.distinct, 2);
    assert_eq!(prompts.duplicate_ok, 2);
    assert_eq!(prompts.duplicate_charged, 2);
    assert_eq!(prompts.max_ok, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn stats_count_connections_opened_and_open() {
    let server = start(MockServerConfig::default()).await;
    // One pooled client reuses one connection for requests made in turn.
    let http = reqwest::Client::new();
    for text in ["a", "b", "c"] {
        assert_eq!(
            post_chat(&http, &server.base_url(), text).await.status(),
            200
        );
    }
    let stats = server.stats();
    assert_eq!(stats.connections_opened, 1, "{stats:?}");
    assert_eq!(stats.max_open_connections, 1);
    // Three raw connections held open at once.
    let mut held = Vec::new();
    for text in ["x", "y", "z"] {
        let mut stream = send_raw_chat(server.addr(), text).await;
        let mut buffer = [0u8; 4096];
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "an answer on connection {text}");
        held.push(stream);
    }
    let stats = server.stats();
    assert_eq!(stats.connections_opened, 4);
    assert_eq!(stats.connections_open, 4);
    assert_eq!(stats.max_open_connections, 4);
    drop(held);
    drop(http);
    within(async {
        while server.stats().connections_open > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let stats = server.stats();
    assert_eq!(
        (stats.connections_opened, stats.max_open_connections),
        (4, 4)
    );
    server.shutdown().await;
}

/// One raw request on a fresh connection: the answer's head.
async fn raw_head(addr: std::net::SocketAddr, text: &str) -> String {
    let mut stream = send_raw_chat(addr, text).await;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the server closed before its head");
        bytes.extend_from_slice(&buffer[..read]);
    }
    split_answer(&bytes).0
}

#[tokio::test(start_paused = true)]
async fn limits_change_at_their_time_over_http() {
    let server = start(MockServerConfig {
        // Far enough that no timer the runtime may jump to reaches it first.
        limit_changes: vec!["1h:rpm=120,tpm=5000".parse().unwrap()],
        ..MockServerConfig::default().with_rpm(nz(60))
    })
    .await;
    let head = raw_head(server.addr(), "before").await;
    assert_eq!(
        head_value(&head, "x-ratelimit-limit-requests").as_deref(),
        Some("60")
    );
    assert_eq!(head_value(&head, "x-ratelimit-limit-tokens"), None);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let head = raw_head(server.addr(), "after").await;
    assert_eq!(
        head_value(&head, "x-ratelimit-limit-requests").as_deref(),
        Some("120")
    );
    assert_eq!(
        head_value(&head, "x-ratelimit-limit-tokens").as_deref(),
        Some("5000")
    );
    // The hour refilled the bucket, so the upgrade gives the whole new limit.
    assert_eq!(
        head_value(&head, "x-ratelimit-remaining-requests").as_deref(),
        Some("119")
    );
    server.shutdown().await;
}
