//! `EndpointRequest::estimate` on the reference endpoint cases of
//! turbo-tokens (`turbo-tokens/tests/data/token_counts.json`, compiled in):
//! the whole path from a batch body to prompt tokens and reservation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use turbo_providers::{Endpoint, EndpointRequest};
use turbo_tokens::{DefaultOutput, TiktokenCounter};

const REFERENCE_JSON: &str = include_str!("../../turbo-tokens/tests/data/token_counts.json");

#[test]
fn bodies_estimate_as_the_reference_says() {
    let data: Value = serde_json::from_str(REFERENCE_JSON).unwrap();
    let counter = TiktokenCounter::new();
    let cases = data["endpoints"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let endpoint = Endpoint::from_url(case["endpoint"].as_str().unwrap()).unwrap();
        let request = EndpointRequest::new(endpoint, case["body"].clone()).unwrap();
        let estimate = request.estimate(&counter, DefaultOutput::Tokens(0));
        assert_eq!(
            u64::from(estimate.prompt_tokens),
            case["prompt_tokens"].as_u64().unwrap(),
            "{case}"
        );
        assert_eq!(
            u64::from(estimate.output_reservation),
            case["output_reservation"].as_u64().unwrap(),
            "{case}"
        );
        // The body passes through untouched.
        assert_eq!(request.to_value(), case["body"]);
    }
}
