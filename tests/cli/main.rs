//! The one integration-test binary: the real `synapticllamas` binary driven by
//! piped command files, with a temporary home and simulated Ollama hosts.

mod client;
mod commands;
mod dashboard;
mod dashboard_browser;
mod dashboard_shell;
mod discovery;
mod files;
mod lab;
mod llama;
mod piped;
mod pipeline;
mod sharding;
mod support;
