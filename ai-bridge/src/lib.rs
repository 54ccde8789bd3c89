//! Chorus's AI bridge: what turns a model's streamed answer into edits of a live document.
//! It does no room I/O: the hub runs it through its server-side peer API.
//!
//! - [`provider`]: the `Provider` trait (streaming chat completions) and the policy every run
//!   applies (timeouts: first token, between tokens, total; retries with backoff and jitter
//!   before the first token only; cancellation drops the HTTP stream).
//! - [`openai`]: the provider for any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM,
//!   Ollama, llama.cpp's server, LiteLLM), through async-openai; operator configuration.
//! - [`markdown`]: markdown read as it streams, into blocks and marks that never need taking
//!   back.
//! - [`writer`]: those blocks and marks written into a Y.XmlFragment (Tiptap StarterKit nodes
//!   and marks) or a Y.Text at sticky positions, directly or as a suggestion; accepting one.
//! - [`chat`]: the room's chat schema (a Y.Array of Y.Map messages) and its writer.
//! - [`roots`]: a document's roots by type (a replica learns roots without their types).
//! - [`revert`]: removing exactly one run's items (every run writes under its own client id).
//! - [`standin`]: a stand-in model server for tests, the load tester and the demo (not a
//!   model: scripted answers and faults over the real API).
//!
//! Data moves: provider chunks -> `provider::Answer` -> `markdown::Markdown` (document
//! targets) -> `writer::DocWriter` / `chat::ChatWriter` inside a transaction the hub opens.

pub mod chat;
pub mod markdown;
pub mod openai;
pub mod provider;
pub mod revert;
pub mod roots;
pub mod standin;
pub mod writer;
