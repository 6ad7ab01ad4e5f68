//! The one integration-test binary: the real `synapticllamas` binary driven by
//! piped command files, with a temporary home and simulated Ollama hosts.

mod agents;
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
mod lock_wait;
mod messages;
mod official_clients;
mod piped;
mod pipeline;
mod rag;
mod rag_llama;
mod redis;
mod redis_shared;
mod redis_support;
mod resilience;
mod security;
mod settings_file;
mod sharding;
mod shutdown;
mod support;
mod terminal;
