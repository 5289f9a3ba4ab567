//! `{{key}}` placeholders in message text, filled from dependencies' answers.

use std::borrow::Cow;

use turbo_providers::{ApiRequest, ChatRequest, EndpointRequest};

/// Replaces every `{{key}}` in `text` for which `lookup(key)` gives an answer;
/// unknown keys are left as they are. Whitespace inside the braces is ignored
/// (`{{ key }}` works too).
///
/// ```
/// use turbo_core::fill_text;
///
/// let filled = fill_text("A: {{a}}, B: {{ b }}, C: {{c}}", |key| match key {
///     "a" => Some("one"),
///     "b" => Some("two"),
///     _ => None,
/// });
/// assert_eq!(filled, "A: one, B: two, C: {{c}}");
/// ```
pub fn fill_text<'t, 'a>(text: &'t str, lookup: impl Fn(&str) -> Option<&'a str>) -> Cow<'t, str> {
    if !text.contains("{{") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(open) = rest.find("{{") {
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            break;
        };
        let key = after_open[..close].trim();
        out.push_str(&rest[..open]);
        match lookup(key) {
            Some(answer) => {
                out.push_str(answer);
                changed = true;
            }
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after_open[close + 2..];
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A request whose texts may hold `{{key}}` placeholders: a chat request's
/// message texts, the other endpoints' input texts (see
/// [`EndpointRequest::for_each_text_mut`]).
pub trait PlaceholderTexts {
    /// Calls `f` on every text placeholders may appear in.
    fn each_text_mut(&mut self, f: &mut dyn FnMut(&mut String));
}

impl PlaceholderTexts for ChatRequest {
    fn each_text_mut(&mut self, f: &mut dyn FnMut(&mut String)) {
        self.for_each_text_mut(f);
    }
}

impl PlaceholderTexts for EndpointRequest {
    fn each_text_mut(&mut self, f: &mut dyn FnMut(&mut String)) {
        self.for_each_text_mut(f);
    }
}

impl PlaceholderTexts for ApiRequest {
    fn each_text_mut(&mut self, f: &mut dyn FnMut(&mut String)) {
        self.for_each_text_mut(f);
    }
}

/// Fills `{{key}}` placeholders in every text of `request`.
/// Returns whether anything changed.
pub fn fill_placeholders<'a, R: PlaceholderTexts + ?Sized>(
    request: &mut R,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    let mut changed = false;
    request.each_text_mut(&mut |text| {
        if let Cow::Owned(filled) = fill_text(text, &lookup) {
            *text = filled;
            changed = true;
        }
    });
    changed
}

/// The keys of every `{{key}}` placeholder in `text`, in order.
///
/// ```
/// assert_eq!(turbo_core::placeholder_keys("{{a}} and {{ b }}"), vec!["a", "b"]);
/// ```
pub fn placeholder_keys(text: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            break;
        };
        keys.push(after_open[..close].trim());
        rest = &after_open[close + 2..];
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use turbo_providers::ChatMessage;

    #[test]
    fn fills_request_texts() {
        let mut request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::system("no placeholders"),
                ChatMessage::user("Summarise {{chunk-1}} and {{chunk-2}}"),
            ],
        );
        let changed = fill_placeholders(&mut request, |key| match key {
            "chunk-1" => Some("first"),
            "chunk-2" => Some("second"),
            _ => None,
        });
        assert!(changed);
        assert_eq!(request.messages[1].text(), "Summarise first and second");
        assert!(!fill_placeholders(&mut request, |_| Some("x")));
    }

    #[test]
    fn unclosed_and_unknown_placeholders_stay() {
        assert_eq!(fill_text("{{open", |_| Some("x")), "{{open");
        assert_eq!(fill_text("{{a}} {{b", |_| Some("x")), "x {{b");
        assert_eq!(fill_text("{{a}}", |_| None), "{{a}}");
    }

    proptest! {
        #[test]
        fn text_without_braces_is_untouched(text in "[^{}]*") {
            prop_assert!(matches!(fill_text(&text, |_| Some("x")), Cow::Borrowed(_)));
        }

        #[test]
        fn every_key_is_replaced(keys in proptest::collection::vec("[a-z0-9-]{1,8}", 0..6), filler in "[^{}]{0,5}") {
            let text: String = keys.iter().map(|k| format!("{filler}{{{{{k}}}}}")).collect();
            let filled = fill_text(&text, |k| keys.iter().find(|key| key.as_str() == k).map(String::as_str));
            let expected: String = keys.iter().map(|k| format!("{filler}{k}")).collect();
            prop_assert_eq!(filled.as_ref(), expected.as_str());
            prop_assert_eq!(placeholder_keys(&text), keys.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
