//! Talking to Ollama: addresses, API types, the NDJSON decoder and the client.

pub mod client;
pub mod embed;
pub mod error;
pub mod host;
pub mod manage;
pub mod ndjson;
pub mod openai;
pub mod types;

pub use client::{Client, Timeouts};
pub use error::{ClientError, ErrorKind};
pub use openai::OpenAiChat;
