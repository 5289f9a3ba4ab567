//! Exponential backoff with jitter and an async retry helper that honours retry-after
#![warn(missing_docs)]
