//! The one integration-test binary: the real `synapticllamas` binary driven by
//! piped command files, with a temporary home and simulated Ollama hosts.

mod bad_input;
mod client;
mod commands;
mod confine;
mod dashboard;
mod dashboard_browser;
mod dashboard_shell;
mod discovery;
mod durability;
mod faults;
mod files;
mod fuzz;
mod lab;
mod llama;
mod load;
mod piped;
mod pipeline;
mod rag;
mod rag_llama;
mod security;
mod sharding;
mod support;
