//! Token estimation for OpenAI-compatible chat requests on tiktoken-rs
#![warn(missing_docs)]
