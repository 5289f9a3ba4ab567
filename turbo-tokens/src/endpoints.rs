//! Token formulas of the OpenAI endpoints besides chat: embeddings,
//! completions, responses and moderations.
//!
//! Each formula is written over a text-counting function, so the same rule
//! serves exact counting ([`TokenCounter::count_text`] with the model's
//! encoding) and a cheap approximation (the mock server's `chars / 4`).
//!
//! | endpoint | prompt tokens | output reservation |
//! |---|---|---|
//! | `/v1/embeddings` | Σ tokens of each input (a token-id array counts its length) | 0 |
//! | `/v1/moderations` | Σ tokens of each text input (image parts are not counted) | 0 |
//! | `/v1/completions` | Σ tokens of each prompt (as embeddings) | `max_tokens` (default 16) × max(`n`, `best_of`, 1) × number of prompts |
//! | `/v1/responses` | chat formula over `instructions` (as a `system` message) and the input messages (a string input is one `user` message), each text part counted on its own; images and files are not counted | `max_output_tokens`, else the [`DefaultOutput`] |
//!
//! Embeddings, moderations and completions count their inputs without any
//! framing: that is what these endpoints report as `usage.prompt_tokens`
//! (no message overheads). The Responses API publishes no formula; the chat
//! formula is the closest documented one, and the usage the answer reports
//! settles the difference.

use crate::counter::{REPLY_PRIMING_TOKENS, RequestShape, TOKENS_PER_MESSAGE, output_reservation};
use crate::{DefaultOutput, Estimate, TokenCounter, encoding_for_model};

/// OpenAI's `max_tokens` for `/v1/completions` when a request sets none.
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// One input of an embeddings, completions or moderations request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputPiece<'a> {
    /// A text, counted with the model's encoding.
    Text(&'a str),
    /// An input already given as token ids: this many tokens.
    TokenIds(usize),
}

/// Σ of the inputs' tokens: `count` for each text, the length of each token array.
///
/// ```
/// use turbo_tokens::{InputPiece, input_tokens};
/// let pieces = [InputPiece::Text("four chars"), InputPiece::TokenIds(3)];
/// assert_eq!(input_tokens(&pieces, |text| text.len()), 13);
/// ```
pub fn input_tokens(pieces: &[InputPiece<'_>], mut count: impl FnMut(&str) -> usize) -> usize {
    pieces.iter().fold(0usize, |sum, piece| {
        sum.saturating_add(match piece {
            InputPiece::Text(text) => count(text),
            InputPiece::TokenIds(tokens) => *tokens,
        })
    })
}

/// The output reservation of a `/v1/completions` request with `prompts` prompts.
///
/// OpenAI generates `max(n, best_of)` completions of up to `max_tokens`
/// (default [`COMPLETIONS_DEFAULT_MAX_TOKENS`]) for every prompt and charges
/// them all. Saturates at `u32::MAX`.
///
/// ```
/// use turbo_tokens::completions_reservation;
/// assert_eq!(completions_reservation(None, None, None, 1), 16);
/// assert_eq!(completions_reservation(Some(50), Some(2), Some(3), 2), 300);
/// ```
#[must_use]
pub fn completions_reservation(
    max_tokens: Option<u32>,
    n: Option<u32>,
    best_of: Option<u32>,
    prompts: usize,
) -> u32 {
    let per_prompt = n.unwrap_or(1).max(best_of.unwrap_or(1)).max(1);
    let prompts = u32::try_from(prompts.max(1)).unwrap_or(u32::MAX);
    max_tokens
        .unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)
        .saturating_mul(per_prompt)
        .saturating_mul(prompts)
}

/// The output reservation of a `/v1/responses` request: `max_output_tokens`,
/// else `default_output` as for a chat request with one choice.
#[must_use]
pub fn responses_reservation(
    max_output_tokens: Option<u32>,
    default_output: DefaultOutput,
    prompt_tokens: u32,
) -> u32 {
    let shape = RequestShape {
        max_tokens: max_output_tokens,
        ..RequestShape::new("", &[])
    };
    output_reservation(&shape, default_output, prompt_tokens)
}

/// Prompt tokens of a `/v1/responses` request, by the chat formula with each
/// text part counted on its own: `3 + Σ (3 + tokens(role) + Σ tokens(text part))`.
/// The caller gives `instructions` first, as a `system` message, and a string
/// input as one `user` message.
///
/// ```
/// use turbo_tokens::responses_prompt_tokens;
/// let messages = [("system", vec!["be brief"]), ("user", vec!["ab", "cd"])];
/// let count = |text: &str| text.len();
/// assert_eq!(responses_prompt_tokens(messages.iter().map(|(r, t)| (*r, t.iter().copied())), count), 3 + 3 + 6 + 8 + 3 + 4 + 4);
/// ```
pub fn responses_prompt_tokens<'a, P>(
    messages: impl IntoIterator<Item = (&'a str, P)>,
    mut count: impl FnMut(&str) -> usize,
) -> usize
where
    P: IntoIterator<Item = &'a str>,
{
    messages
        .into_iter()
        .fold(REPLY_PRIMING_TOKENS, |sum, (role, parts)| {
            let text = parts
                .into_iter()
                .fold(0usize, |sum, part| sum.saturating_add(count(part)));
            sum.saturating_add(TOKENS_PER_MESSAGE)
                .saturating_add(count(role))
                .saturating_add(text)
        })
}

/// A text counter for `model` over `counter` (the model picks the encoding).
pub fn text_counter<'c>(counter: &'c dyn TokenCounter, model: &str) -> impl Fn(&str) -> usize + 'c {
    let encoding = encoding_for_model(model);
    move |text| counter.count_text(encoding, text)
}

/// An [`Estimate`] from a prompt count and a reservation, saturating.
#[must_use]
pub fn estimate_of(prompt_tokens: usize, output_reservation: u32) -> Estimate {
    Estimate {
        prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        output_reservation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TiktokenCounter;

    #[test]
    fn completions_reservation_takes_the_larger_of_n_and_best_of() {
        assert_eq!(completions_reservation(Some(10), Some(4), Some(2), 1), 40);
        assert_eq!(completions_reservation(Some(10), Some(0), None, 0), 10);
        assert_eq!(
            completions_reservation(Some(u32::MAX), Some(2), None, 1),
            u32::MAX
        );
    }

    #[test]
    fn responses_reservation_follows_the_default() {
        assert_eq!(
            responses_reservation(Some(7), DefaultOutput::Tokens(100), 50),
            7
        );
        assert_eq!(
            responses_reservation(None, DefaultOutput::Tokens(100), 50),
            100
        );
        assert_eq!(responses_reservation(None, DefaultOutput::GROQ, 50), 10);
    }

    #[test]
    fn text_counter_uses_the_model_encoding() {
        let counter = TiktokenCounter::new();
        // "こんにちは世界": 4 tokens in cl100k_base, 2 in o200k_base (reference data).
        assert_eq!(
            text_counter(&counter, "text-embedding-3-small")("こんにちは世界"),
            4
        );
        assert_eq!(text_counter(&counter, "gpt-4o")("こんにちは世界"), 2);
        let pieces = [InputPiece::Text("hello"), InputPiece::TokenIds(5)];
        assert_eq!(input_tokens(&pieces, text_counter(&counter, "gpt-4o")), 6);
        assert_eq!(estimate_of(usize::MAX, 3).prompt_tokens, u32::MAX);
    }
}
