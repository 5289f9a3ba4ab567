//! Exact agreement with the reference counts in turbo-tokens/tests/data/token_counts.json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use turbo_tokens::{
    DefaultOutput, Encoding, MessageRef, TiktokenCounter, TokenCounter, estimate_json,
};

#[test]
fn every_reference_text_in_both_encodings() {
    let counter = TiktokenCounter::new();
    let mut mismatches = Vec::new();
    let texts = util::reference_texts();
    for (text, cl100k, o200k) in &texts {
        for (encoding, expected) in [
            (Encoding::Cl100kBase, *cl100k),
            (Encoding::O200kBase, *o200k),
        ] {
            let actual = counter.count_text(encoding, text);
            if actual != expected {
                mismatches.push(format!(
                    "{encoding} {text:?}: expected {expected}, got {actual}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(
        texts.len(),
        25,
        "the reference file changed; review these tests"
    );
}

#[test]
fn every_reference_chat_through_json() {
    let counter = TiktokenCounter::new();
    for (messages, expected) in util::reference_chats() {
        // gpt-4 uses cl100k_base, the encoding the reference counts were made with.
        let body = util::body("gpt-4", messages.clone());
        let estimate = estimate_json(&counter, &body, DefaultOutput::Tokens(0)).unwrap();
        assert_eq!(estimate.prompt_tokens, expected, "{messages}");
        assert_eq!(estimate.output_reservation, 0);
    }
}

#[test]
fn reference_chats_through_message_refs() {
    let counter = TiktokenCounter::new();
    for (messages, expected) in util::reference_chats() {
        let contents: Vec<String> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|message| match &message["content"] {
                serde_json::Value::String(text) => text.clone(),
                parts => parts
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|part| part["text"].as_str().unwrap())
                    .collect(),
            })
            .collect();
        let refs: Vec<MessageRef<'_>> = messages
            .as_array()
            .unwrap()
            .iter()
            .zip(&contents)
            .map(|(message, content)| MessageRef {
                role: message["role"].as_str().unwrap(),
                content,
                name: message["name"].as_str(),
            })
            .collect();
        assert_eq!(
            counter.count_chat("gpt-3.5-turbo", &refs),
            expected as usize,
            "{messages}"
        );
    }
}

#[test]
fn chat_formula_is_the_same_for_o200k() {
    let counter = TiktokenCounter::new();
    let messages = [
        MessageRef::new("system", "Be brief."),
        MessageRef::new("user", "Tell me a joke about rust.").with_name("alice"),
    ];
    let encoding = Encoding::O200kBase;
    let count = |text| counter.count_text(encoding, text);
    let expected = 3
        + (3 + count("system") + count("Be brief."))
        + (3 + count("user") + count("Tell me a joke about rust.") + count("alice") + 1);
    assert_eq!(counter.count_chat("gpt-4o", &messages), expected);
}

#[test]
fn special_token_text_is_ordinary_text() {
    let counter = TiktokenCounter::new();
    for encoding in Encoding::ALL {
        // As a special token it would be 1; as text it is several ordinary tokens.
        assert!(counter.count_text(encoding, "<|endoftext|>") > 1);
        assert!(counter.count_text(encoding, "<|endofprompt|><|fim_prefix|>") > 2);
    }
}

#[test]
fn empty_chat_is_the_reply_priming_only() {
    assert_eq!(TiktokenCounter::new().count_chat("gpt-4o", &[]), 3);
}

#[test]
fn try_new_loads_both_vocabularies() {
    let counter = TiktokenCounter::try_new().unwrap();
    assert_eq!(counter.count_text(Encoding::O200kBase, "hello"), 1);
}
