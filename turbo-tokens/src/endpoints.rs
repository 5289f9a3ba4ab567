//! Token formulas of the OpenAI endpoints besides chat (embeddings,
//! completions, responses and moderations) and of Anthropic's Messages API.
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
//! | `/v1/messages` (Anthropic) | ⌈Σ cl100k tokens of every text × 6/5⌉ + 3 per message (`system`, when present, is one) + 3 | `max_tokens` (required by the API) |
//!
//! Embeddings, moderations and completions count their inputs without any
//! framing: that is what these endpoints report as `usage.prompt_tokens`
//! (no message overheads). The Responses API publishes no formula; the chat
//! formula is the closest documented one, and the usage the answer reports
//! settles the difference.
//!
//! Anthropic publishes no tokenizer for its current models (its token-counting
//! endpoint is an API call), so the Messages formula is an approximation:
//! Anthropic's own rule of thumb is about 3.5 characters per token of English,
//! where cl100k averages about 4, so Claude counts roughly 1.15× cl100k's
//! tokens, and Anthropic says its newer tokenizer yields up to 1.35× more
//! than its older one. We scale cl100k by 6/5 (rounded up), erring high: a
//! limiter that reserves a little too much refunds it from the answer's usage
//! and the `anthropic-ratelimit-input-tokens-*` headers, while one that
//! reserves too little earns 429s. The per-message overhead (role markers)
//! is not published either; we take OpenAI's chat overheads (3 per message, 3
//! to prime the answer). The texts are the `system` prompt (a string or its
//! text blocks), each message's string content or its `text` blocks, the
//! text of `tool_result` blocks, and the JSON of `tool_use` inputs and of the
//! `tools` definitions; images and documents are not counted. The output
//! reservation is `max_tokens`, which Anthropic charges against the
//! output-tokens-per-minute limit when the request starts and corrects to the
//! real output when it ends.

use crate::counter::{REPLY_PRIMING_TOKENS, RequestShape, TOKENS_PER_MESSAGE, output_reservation};
use crate::{DefaultOutput, Estimate, TokenCounter, encoding_for_model};

/// OpenAI's `max_tokens` for `/v1/completions` when a request sets none.
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// Overhead tokens per message (and per `system` prompt) of a `/v1/messages`
/// request; see the module docs.
pub const MESSAGES_TOKENS_PER_MESSAGE: usize = 3;
/// Overhead tokens of every `/v1/messages` request (priming the answer).
pub const MESSAGES_REPLY_PRIMING_TOKENS: usize = 3;

/// Prompt tokens of an Anthropic `/v1/messages` request:
/// `⌈Σ count(text) × 6/5⌉ + 3 × messages + 3`, where `messages` counts the
/// `system` prompt as one when present and `count` is a cl100k count (or the
/// mock server's approximation).
///
/// ```
/// use turbo_tokens::messages_prompt_tokens;
/// // 10 counted tokens scale to 12; two messages and the priming add 9.
/// assert_eq!(messages_prompt_tokens(["abcde", "fghij"], 2, |text| text.len()), 21);
/// ```
pub fn messages_prompt_tokens<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    messages: usize,
    mut count: impl FnMut(&str) -> usize,
) -> usize {
    let counted = texts
        .into_iter()
        .fold(0usize, |sum, text| sum.saturating_add(count(text)));
    claude_scaled(counted)
        .saturating_add(messages.saturating_mul(MESSAGES_TOKENS_PER_MESSAGE))
        .saturating_add(MESSAGES_REPLY_PRIMING_TOKENS)
}

/// `⌈tokens × 6/5⌉`, saturating: cl100k tokens as Claude tokens.
fn claude_scaled(tokens: usize) -> usize {
    tokens
        .checked_mul(6)
        .map_or(usize::MAX, |six| six.div_ceil(5))
}

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
    fn messages_scale_texts_and_add_overheads() {
        assert_eq!(messages_prompt_tokens([], 0, |_| 0), 3);
        // 7 tokens scale to ⌈8.4⌉ = 9; three messages add 9, priming 3.
        assert_eq!(messages_prompt_tokens(["1234567"], 3, str::len), 21);
        assert_eq!(
            messages_prompt_tokens(["x"], usize::MAX, |_| usize::MAX),
            usize::MAX
        );
        let counter = TiktokenCounter::new();
        // "Hello, world!" is 4 cl100k tokens: ⌈4.8⌉ = 5, + 3 + 3.
        assert_eq!(
            messages_prompt_tokens(
                ["Hello, world!"],
                1,
                text_counter(&counter, "claude-sonnet-4-5")
            ),
            11
        );
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
