//! The crate's error types.

use std::sync::Arc;

use crate::Encoding;
pub use crate::vocabulary::VocabularyError;

/// Why a request could not be estimated.
///
/// Every variant that concerns the request body carries the JSON path of the offending field
/// (for example `messages[2].content`), so the message tells the caller exactly what to fix.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The request body is not a JSON object.
    #[error("request body: expected a JSON object")]
    NotAnObject,
    /// A required field is absent (or `null`).
    #[error("{path}: missing")]
    MissingField {
        /// JSON path of the field, e.g. `model` or `messages[0].role`.
        path: String,
    },
    /// A field is present but has the wrong type or an out-of-range value.
    #[error("{path}: expected {expected}")]
    InvalidField {
        /// JSON path of the field, e.g. `messages[2].content`.
        path: String,
        /// What the field should have been, e.g. `string or array of parts`.
        expected: &'static str,
    },
    /// A tokenizer could not be built from what the binary carries.
    #[error("tokenizer {encoding} is unavailable: {source}")]
    EncoderUnavailable {
        /// The encoding that failed to load.
        encoding: Encoding,
        /// What went wrong while loading it.
        #[source]
        source: LoadError,
    },
}

/// Why a tokenizer could not be built.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Its embedded vocabulary table is damaged.
    #[error("its embedded vocabulary is damaged: {0}")]
    Vocabulary(#[source] VocabularyError),
    /// Its split pattern does not compile (regex-automata's error).
    #[error("its split pattern does not compile: {0}")]
    Pattern(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl TokenError {
    /// The JSON path of the offending field, if the error is about one.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        match self {
            TokenError::MissingField { path } | TokenError::InvalidField { path, .. } => Some(path),
            TokenError::NotAnObject | TokenError::EncoderUnavailable { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_tokenizer_that_cannot_load_keeps_its_cause() {
        let error = TokenError::EncoderUnavailable {
            encoding: Encoding::O200kBase,
            source: LoadError::Vocabulary(VocabularyError::Truncated { rank: 5 }),
        };
        assert_eq!(
            error.to_string(),
            "tokenizer o200k_base is unavailable: its embedded vocabulary is damaged: \
             the table ends inside the token of rank 5"
        );
        let load = error
            .source()
            .and_then(|source| source.downcast_ref::<LoadError>());
        assert!(matches!(load, Some(LoadError::Vocabulary(_))), "{load:?}");
        let table = load
            .and_then(|load| load.source())
            .and_then(|source| source.downcast_ref::<VocabularyError>());
        assert_eq!(table, Some(&VocabularyError::Truncated { rank: 5 }));
    }
}
