//! Hand-written deserialisation of requests and messages: typed fields go to
//! their slots, every other key straight into `extra`, with no intermediate
//! buffering (which is what `#[serde(flatten)]` would cost on every field).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::request::{ChatMessage, ChatRequest, ContentPart, MessageContent};

/// A map key: one of the known names (by index) or another, owned key.
enum Key {
    Known(usize),
    Other(String),
}

struct KeyVisitor(&'static [&'static str]);

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match self.0.iter().position(|known| *known == key) {
            Some(index) => Key::Known(index),
            None => Key::Other(key.to_owned()),
        })
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Key, E> {
        Ok(match self.0.iter().position(|known| *known == key) {
            Some(index) => Key::Known(index),
            None => Key::Other(key),
        })
    }
}

struct KeySeed(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor(self.0))
    }
}

/// Sets `slot` once; a second occurrence is an error, as with derived impls.
fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

const REQUEST_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
];

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = ChatRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat-completions request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
        let mut model: Option<String> = None;
        let mut messages: Option<Vec<ChatMessage>> = None;
        // Outer Option: seen or not (duplicates); inner: the JSON value may be null.
        let mut max_tokens: Option<Option<u32>> = None;
        let mut max_completion_tokens: Option<Option<u32>> = None;
        let mut n: Option<Option<u32>> = None;
        let mut stream: Option<Option<bool>> = None;
        let mut extra = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(REQUEST_FIELDS))? {
            match key {
                Key::Known(0) => set_once(&mut model, map.next_value()?, "model")?,
                Key::Known(1) => set_once(&mut messages, map.next_value()?, "messages")?,
                Key::Known(2) => set_once(&mut max_tokens, map.next_value()?, "max_tokens")?,
                Key::Known(3) => set_once(
                    &mut max_completion_tokens,
                    map.next_value()?,
                    "max_completion_tokens",
                )?,
                Key::Known(4) => set_once(&mut n, map.next_value()?, "n")?,
                Key::Known(5) => set_once(&mut stream, map.next_value()?, "stream")?,
                Key::Known(_) => {
                    map.next_value::<de::IgnoredAny>()?;
                }
                Key::Other(name) => {
                    let value: Value = map.next_value()?;
                    extra.insert(name, value);
                }
            }
        }
        Ok(ChatRequest {
            model: model.ok_or_else(|| de::Error::missing_field("model"))?,
            messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
            max_tokens: max_tokens.flatten(),
            max_completion_tokens: max_completion_tokens.flatten(),
            n: n.flatten(),
            stream: stream.flatten(),
            extra,
        })
    }
}

const MESSAGE_FIELDS: &[&str] = &["role", "content", "name"];

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = ChatMessage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatMessage, A::Error> {
        let mut role: Option<String> = None;
        let mut content: Option<MessageContent> = None;
        let mut name: Option<Option<String>> = None;
        let mut extra = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(MESSAGE_FIELDS))? {
            match key {
                Key::Known(0) => set_once(&mut role, map.next_value()?, "role")?,
                Key::Known(1) => set_once(&mut content, map.next_value()?, "content")?,
                Key::Known(2) => set_once(&mut name, map.next_value()?, "name")?,
                Key::Known(_) => {
                    map.next_value::<de::IgnoredAny>()?;
                }
                Key::Other(key) => {
                    let value: Value = map.next_value()?;
                    extra.insert(key, value);
                }
            }
        }
        Ok(ChatMessage {
            role: role.ok_or_else(|| de::Error::missing_field("role"))?,
            content: content.unwrap_or_default(),
            name: name.flatten(),
            extra,
        })
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = MessageContent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of content parts, or null")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<MessageContent, E> {
        Ok(MessageContent::Text(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<MessageContent, E> {
        Ok(MessageContent::Text(text))
    }

    fn visit_unit<E: de::Error>(self) -> Result<MessageContent, E> {
        Ok(MessageContent::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<MessageContent, E> {
        Ok(MessageContent::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<MessageContent, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageContent, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(part) = seq.next_element::<ContentPart>()? {
            parts.push(part);
        }
        Ok(MessageContent::Parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_fields_and_extras_land_in_their_slots() {
        let request: ChatRequest = serde_json::from_value(json!({
            "temperature": 0.1,
            "model": "m",
            "max_tokens": null,
            "n": 2,
            "messages": [{"role": "user", "content": "x", "weight": 1, "name": null}],
        }))
        .unwrap();
        assert_eq!(request.model, "m");
        assert_eq!(request.max_tokens, None);
        assert_eq!(request.n, Some(2));
        assert_eq!(request.extra["temperature"], 0.1);
        assert_eq!(request.messages[0].extra["weight"], 1);
        assert_eq!(request.messages[0].name, None);
    }

    #[test]
    fn escaped_keys_are_recognised() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"mod\u0065l":"m","messages":[{"role":"user","content":"hi"}],"x\"y":1}"#,
        )
        .unwrap();
        assert_eq!(request.model, "m");
        assert_eq!(request.extra["x\"y"], 1);
    }

    #[test]
    fn errors_name_the_problem() {
        let missing = serde_json::from_str::<ChatRequest>(r#"{"messages":[]}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `model`"),
            "{missing}"
        );
        let duplicate =
            serde_json::from_str::<ChatRequest>(r#"{"model":"a","model":"b","messages":[]}"#)
                .unwrap_err();
        assert!(
            duplicate.to_string().contains("duplicate field `model`"),
            "{duplicate}"
        );
        let wrong_type = serde_json::from_str::<ChatRequest>(
            r#"{"model":"a","messages":[{"role":"user","content":5}]}"#,
        )
        .unwrap_err();
        assert!(
            wrong_type.to_string().contains("content parts"),
            "{wrong_type}"
        );
        let negative =
            serde_json::from_str::<ChatRequest>(r#"{"model":"a","messages":[],"max_tokens":-1}"#);
        assert!(negative.is_err());
        assert!(serde_json::from_str::<ChatRequest>("[1]").is_err());
        let no_role = serde_json::from_str::<ChatMessage>(r#"{"content":"x"}"#).unwrap_err();
        assert!(no_role.to_string().contains("role"), "{no_role}");
    }

    #[test]
    fn missing_content_is_null() {
        let message: ChatMessage =
            serde_json::from_str(r#"{"role":"assistant","tool_calls":[]}"#).unwrap();
        assert_eq!(message.content, MessageContent::Null);
        assert_eq!(message.extra["tool_calls"], json!([]));
    }
}
