//! The one integration-test binary: the real `synapticllamas` binary driven by
//! piped command files, with a temporary home and simulated Ollama hosts.

mod bad_input;
mod client;
mod commands;
mod discovery;
mod durability;
mod files;
mod fuzz;
mod lab;
mod piped;
mod pipeline;
mod security;
mod support;
