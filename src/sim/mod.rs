//! Simulated Ollama hosts for machines without Ollama, for tests, the network
//! lab and the benchmarks. Depends on nothing of the app but the API types.

pub mod config;
pub mod embed;
pub mod serve;
pub mod server;
pub mod text;

pub use config::{Fault, SimConfig};
pub use server::{SimHost, SimStats};
