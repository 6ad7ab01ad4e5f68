//! Model sharding with llama.cpp RPC: backends, the coordinator's lifecycle, GGUF
//! resolution from Ollama's store, and the task/model/both/off routing rule.

pub mod backends;
pub mod coordinator;
pub mod error;
pub mod gguf;
pub mod route;

pub use error::ShardingError;
