//! OpenAI-compatible chat clients (OpenAI, Groq, any base URL), a rate-limited mock server and a simulated provider
#![warn(missing_docs)]
