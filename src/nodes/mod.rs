//! Nodes: the registry, physical-host locality, health probes and discovery.

pub mod context;
pub mod discovery;
pub mod health;
pub mod latency;
pub mod locality;
pub mod registry;
pub mod release;
pub mod scan;
pub mod state;

pub use registry::{Api, Health, Node, NodeStore, Registry};
