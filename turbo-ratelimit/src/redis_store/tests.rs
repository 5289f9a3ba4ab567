//! Unit tests of the Redis store that need no server.

use super::store::*;
use super::wire::*;
use super::*;

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn keys_are_prefixed_and_unambiguous() {
    let plain = LaneKey::new("openai", None).unwrap();
    let model = LaneKey::new("groq", Some("meta-llama/llama-4")).unwrap();
    let slash = LaneKey::new("a/b", None).unwrap();
    let split = LaneKey::new("a", Some("b")).unwrap();
    assert_eq!(lane_key("turbo:", &plain), "turbo:openai");
    assert_eq!(lane_key("turbo:", &model), "turbo:groq/meta-llama/llama-4");
    assert_ne!(lane_key("t:", &slash), lane_key("t:", &split));
    assert_eq!(lane_key("t:", &slash), "t:a%2Fb");
}

#[test]
fn replies_parse_into_outcomes_and_states() {
    assert_eq!(
        parse_acquire(&strings(&["R", "1700000000000001", "3", "120"])).unwrap(),
        AcquireOutcome::Reserved(Grant {
            at: Duration::from_micros(1_700_000_000_000_001),
            requests_total: 3,
            tokens_total: 120,
        })
    );
    assert_eq!(
        parse_acquire(&strings(&["W", "1500", "-1"])).unwrap(),
        AcquireOutcome::Wait {
            wait: Duration::from_micros(1500),
            paused: None
        }
    );
    assert_eq!(
        parse_acquire(&strings(&["N", "2", "101", "100"])).unwrap(),
        AcquireOutcome::NeverFits {
            axis: Axis::TokensPerMinute,
            requested: 101,
            capacity: 100
        }
    );
    assert!(parse_acquire(&strings(&["N", "5", "1", "1"])).is_err());
    assert!(parse_acquire(&strings(&["X"])).is_err());

    let mut reply = strings(&[
        "250000", "7", "700", "10", "-3", "18000000", "2", "1", "1000000", "1",
    ]);
    reply.extend(strings(&["0"; 21]));
    let state = parse_state(&reply).unwrap();
    assert_eq!(state.limits.get(Axis::RequestsPerMinute), Some(10));
    assert_eq!(state.limits.get(Axis::TokensPerMinute), None);
    assert_eq!(state.paused_for, Some(Duration::from_millis(250)));
    assert_eq!(
        state.buckets,
        vec![BucketSnapshot {
            axis: Axis::RequestsPerMinute,
            limit: 10,
            level: -3,
            full_in: Duration::from_secs(18),
            foreign: 2,
            opening: true,
            charge_ratio_ppm: 1_000_000,
            ratio_known: true,
        }]
    );
    assert!(state.opening);
    assert!(parse_state(&reply[..10]).is_err());
    reply[1] = "NaN".to_owned();
    assert!(parse_state(&reply).is_err());
}

#[test]
fn a_share_keeps_every_axis_at_least_one_unit() {
    let limits = Limits::try_per_minute(10, 1_000).unwrap();
    let share = share_of(&limits, 0.25);
    assert_eq!(share.get(Axis::RequestsPerMinute), Some(2));
    assert_eq!(share.get(Axis::TokensPerMinute), Some(250));
    assert_eq!(
        share_of(&limits, 0.01).get(Axis::RequestsPerMinute),
        Some(1)
    );
    assert_eq!(share_of(&limits, 1.0), limits);
}

#[test]
fn observations_travel_as_fixed_fields() {
    let mut args = Vec::new();
    push_observation(&mut args, None);
    push_observation(
        &mut args,
        Some(
            WindowObservation::new(Window::Day)
                .limit(0)
                .remaining(5)
                .reset(Duration::from_nanos(1_001)),
        ),
    );
    assert_eq!(
        args,
        strings(&["0", "m", "-1", "-1", "-1", "1", "d", "-1", "5", "2"])
    );
}

#[test]
fn builder_validates_without_io_and_never_shows_the_url() {
    let err = RedisBackend::builder("redis://:hunter2@127.0.0.1:1")
        .fallback_share(1.5)
        .build()
        .unwrap_err();
    assert_eq!(err, InvalidConfig::FallbackShare);
    assert!(
        RedisBackend::builder("redis://h")
            .fallback_share(f64::NAN)
            .build()
            .is_err()
    );
    let err = RedisBackend::builder("http://nope").build().unwrap_err();
    assert!(matches!(err, InvalidConfig::StoreAddress { .. }));
    let builder = RedisBackend::builder("redis://:hunter2@127.0.0.1:1");
    assert!(!format!("{builder:?}").contains("hunter2"));
    let backend = builder.prefix("p:").build().unwrap();
    let shown = format!("{backend:?}");
    assert!(!shown.contains("hunter2"));
    assert!(shown.contains("127.0.0.1:1"));
    assert_eq!(backend.prefix(), "p:");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_after_the_retries() {
    // Port 1 on loopback: nothing listens there.
    let backend = RedisBackend::builder("redis://127.0.0.1:1")
        .retry(
            RetryConfig::new(
                2,
                Duration::from_millis(1),
                Duration::from_millis(2),
                2.0,
                Jitter::None,
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let store = backend.open(
        &LaneKey::new("p", None).unwrap(),
        &Limits::try_per_minute(10, 100).unwrap(),
    );
    let err = store.try_acquire(AcquireRequest::one(1)).await.unwrap_err();
    let StoreError::Unavailable(source) = &err else {
        panic!("expected Unavailable, got {err:?}")
    };
    let unavailable = source.downcast_ref::<RedisUnavailable>().unwrap();
    assert_eq!(unavailable.attempts(), 3);
    // The client's own error stays the cause, typed.
    let cause = std::error::Error::source(unavailable).unwrap();
    assert!(cause.downcast_ref::<RedisError>().is_some(), "{cause:?}");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("3 attempt(s)"), "{message}");
}
