//! The one integration-test binary: the real `synapticllamas` binary driven by
//! piped command files, with a temporary home and simulated Ollama hosts.

mod agents;
mod answers;
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
mod flags;
mod fuzz;
mod identity;
mod lab;
mod llama;
mod load;
mod messages;
mod official_clients;
mod ollama_adapter;
mod piped;
mod pipeline;
mod redis;
mod redis_support;
mod security;
mod settings_file;
mod sharding;
mod shutdown;
mod support;
mod terminal;
