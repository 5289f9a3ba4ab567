//! The output-reservation rules and `estimate_json`'s validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use serde_json::json;
use turbo_tokens::{
    DefaultOutput, Estimate, MessageRef, RequestShape, TiktokenCounter, TokenCounter, TokenError,
    estimate_json,
};

const HI: [MessageRef<'static>; 1] = [MessageRef::new("user", "hi")];

fn estimate(request: RequestShape<'_>, default_output: DefaultOutput) -> Estimate {
    TiktokenCounter::new().estimate(&request, default_output)
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let request = RequestShape {
        max_tokens: Some(100),
        max_completion_tokens: Some(40),
        ..RequestShape::new("gpt-4o", &HI)
    };
    let estimate = estimate(request, DefaultOutput::Tokens(999));
    assert_eq!(
        estimate,
        Estimate {
            prompt_tokens: 8,
            output_reservation: 40
        }
    );
    assert_eq!(estimate.total(), 48);
}

#[test]
fn max_tokens_when_no_max_completion_tokens() {
    let request = RequestShape {
        max_tokens: Some(100),
        ..RequestShape::new("gpt-4o", &HI)
    };
    assert_eq!(
        estimate(request, DefaultOutput::GROQ).output_reservation,
        100
    );
}

#[test]
fn limits_are_multiplied_by_choices() {
    let request = RequestShape {
        max_tokens: Some(100),
        n: Some(3),
        ..RequestShape::new("gpt-4o", &HI)
    };
    assert_eq!(
        estimate(request, DefaultOutput::GROQ).output_reservation,
        300
    );
    let zero_choices = RequestShape {
        n: Some(0),
        ..request
    };
    assert_eq!(
        estimate(zero_choices, DefaultOutput::GROQ).output_reservation,
        100
    );
}

#[test]
fn default_tokens_are_per_choice() {
    let request = RequestShape {
        n: Some(4),
        ..RequestShape::new("gpt-4o", &HI)
    };
    assert_eq!(
        estimate(request, DefaultOutput::openai(256)).output_reservation,
        1024
    );
    let one = RequestShape::new("gpt-4o", &HI);
    assert_eq!(
        estimate(one, DefaultOutput::openai(256)).output_reservation,
        256
    );
}

#[test]
fn fraction_of_prompt_rounds_up_once_regardless_of_choices() {
    // "hi" as user: 8 prompt tokens; 8 × 0.2 = 1.6 → 2.
    let request = RequestShape {
        n: Some(5),
        ..RequestShape::new("llama-3.1-8b-instant", &HI)
    };
    assert_eq!(
        estimate(request, DefaultOutput::GROQ),
        Estimate {
            prompt_tokens: 8,
            output_reservation: 2
        }
    );
}

#[test]
fn fraction_of_prompt_ignores_float_noise() {
    // In binary floating point 100 × 0.07 is 7.000000000000001 and 100 × 0.55 is
    // 55.00000000000001; a plain ceil would reserve one token too many.
    let request = RequestShape::new("gpt-4", &[]);
    let reserve = |fraction, prompt| {
        turbo_tokens::output_reservation(
            &request,
            DefaultOutput::FractionOfPrompt(fraction),
            prompt,
        )
    };
    assert_eq!(reserve(0.07, 100), 7);
    assert_eq!(reserve(0.07, 300), 21);
    assert_eq!(reserve(0.55, 100), 55);
    assert_eq!(reserve(0.55, 101), 56);
}

#[test]
fn odd_fractions_do_not_panic() {
    let request = RequestShape::new("gpt-4", &[]);
    let reserve = |fraction| {
        turbo_tokens::output_reservation(&request, DefaultOutput::FractionOfPrompt(fraction), 1000)
    };
    assert_eq!(reserve(f64::NAN), 0);
    assert_eq!(reserve(-1.0), 0);
    assert_eq!(reserve(0.0), 0);
    assert_eq!(reserve(f64::INFINITY), u32::MAX);
    assert_eq!(reserve(1e300), u32::MAX);
    assert_eq!(reserve(0.0015), 2);
}

#[test]
fn huge_values_saturate() {
    let request = RequestShape {
        max_tokens: Some(u32::MAX),
        n: Some(u32::MAX),
        ..RequestShape::new("gpt-4o", &HI)
    };
    let estimate = estimate(request, DefaultOutput::GROQ);
    assert_eq!(estimate.output_reservation, u32::MAX);
    assert_eq!(estimate.total(), u32::MAX);
}

#[test]
fn json_estimate_matches_the_typed_estimate() {
    let counter = TiktokenCounter::new();
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Sum "}, {"type": "text", "text": "1+1"}]},
        ],
        "max_completion_tokens": 64,
        "n": 2,
    });
    let messages = [
        MessageRef::new("system", "You are terse."),
        MessageRef::new("user", "Sum 1+1").with_name("alice"),
    ];
    let typed = RequestShape {
        max_completion_tokens: Some(64),
        n: Some(2),
        ..RequestShape::new("gpt-4o-mini", &messages)
    };
    let from_json = estimate_json(&counter, &body, DefaultOutput::GROQ).unwrap();
    assert_eq!(from_json, counter.estimate(&typed, DefaultOutput::GROQ));
    assert_eq!(from_json.output_reservation, 128);
}

#[test]
fn json_nulls_mean_absent() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi", "name": null}],
        "max_tokens": null, "max_completion_tokens": null, "n": null,
    });
    let estimate = estimate_json(&TiktokenCounter::new(), &body, DefaultOutput::Tokens(5)).unwrap();
    assert_eq!(
        estimate,
        Estimate {
            prompt_tokens: 8,
            output_reservation: 5
        }
    );
}

fn error_of(body: serde_json::Value) -> TokenError {
    estimate_json(&TiktokenCounter::new(), &body, DefaultOutput::GROQ).unwrap_err()
}

#[test]
fn json_errors_name_the_field() {
    let user = json!({"role": "user", "content": "hi"});
    let cases = [
        (json!([1, 2]), "request body: expected a JSON object"),
        (json!({"messages": [user]}), "model: missing"),
        (
            json!({"model": 4, "messages": [user]}),
            "model: expected string",
        ),
        (json!({"model": "gpt-4o"}), "messages: missing"),
        (
            json!({"model": "gpt-4o", "messages": "hi"}),
            "messages: expected array of messages",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user, "hi"]}),
            "messages[1]: expected object",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"content": "x"}]}),
            "messages[0].role: missing",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": 1}]}),
            "messages[0].role: expected string",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user, user, {"role": "user", "content": 42}]}),
            "messages[2].content: expected string or array of parts",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": ["x"]}]}),
            "messages[0].content[0]: expected object",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages[0].content[0].type: missing",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text: missing",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
            "messages[0].content[0].text: expected string",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x", "name": 3}]}),
            "messages[0].name: expected string",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "max_tokens": -1}),
            "max_tokens: expected integer from 0 to 4294967295",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "max_tokens": 1.5}),
            "max_tokens: expected integer from 0 to 4294967295",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "max_completion_tokens": 4_294_967_296_u64}),
            "max_completion_tokens: expected integer from 0 to 4294967295",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "n": 0}),
            "n: expected integer from 1 to 4294967295",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "n": "2"}),
            "n: expected integer from 1 to 4294967295",
        ),
    ];
    for (body, message) in cases {
        assert_eq!(error_of(body.clone()).to_string(), message, "{body}");
    }
}

#[test]
fn json_errors_are_typed() {
    let error = error_of(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": 42}]}));
    assert!(
        matches!(
            &error,
            TokenError::InvalidField { path, expected: "string or array of parts" }
                if path == "messages[0].content"
        ),
        "{error:?}"
    );
    assert_eq!(error.path(), Some("messages[0].content"));
    let missing = error_of(json!({"messages": []}));
    assert!(
        matches!(&missing, TokenError::MissingField { path } if path == "model"),
        "{missing:?}"
    );
    assert_eq!(error_of(json!(null)).path(), None);
}

#[test]
fn empty_messages_are_allowed() {
    let estimate = estimate_json(
        &TiktokenCounter::new(),
        &util::body("gpt-4o", json!([])),
        DefaultOutput::Tokens(1),
    )
    .unwrap();
    assert_eq!(
        estimate,
        Estimate {
            prompt_tokens: 3,
            output_reservation: 1
        }
    );
}
