//! Closed-loop rate limiting for LLM APIs: continuously refilling buckets, reservations settled against real usage, header feedback
#![warn(missing_docs)]
