//! SynapticLlamas: an orchestrator shell for a LAN of Ollama nodes.
//!
//! Data flows one way: line → `command::parse` → `app::App::dispatch` →
//! subsystems (nodes, ollama, pipeline, sim) → a `Sink`. Only `shell` and `ui`
//! know about the terminal. Each module uses only the layers below its own;
//! the layer table and its check are in `tests/cli/layers.rs`.

pub mod app;
pub mod blocking;
pub mod cli;
pub mod command;
pub mod config;
pub mod dashboard;
pub mod gateway;
pub mod models;
pub mod names;
pub mod nodes;
pub mod ollama;
pub mod pipeline;
pub mod prompt;
pub mod rag;
pub mod redis;
pub mod report;
pub mod scheduler;
pub mod sharding;
pub mod shell;
mod signals;
pub mod sim;
pub mod startup;
pub mod ui;
