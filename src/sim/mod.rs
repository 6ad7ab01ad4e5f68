//! Simulated Ollama hosts for machines without Ollama, for tests, the network
//! lab and the benchmarks. Depends on nothing of the app but the API types.

mod api;
pub mod config;
pub mod embed;
mod embeddings;
pub mod host;
mod inference;
mod reply;
mod schema;
pub mod serve;
mod store;
pub mod text;

pub use config::{Fault, SimConfig};
pub use host::{SimHost, SimStats};
