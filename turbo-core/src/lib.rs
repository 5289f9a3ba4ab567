//! The TurboRun engine: a dependency graph of LLM requests run as fast as the rate limits allow
#![warn(missing_docs)]
