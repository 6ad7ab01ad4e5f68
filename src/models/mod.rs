//! The cluster's models managed as one: pull a model onto every node that
//! lacks it, delete or copy it wherever it is, load or unload it everywhere —
//! the operations the gateway (`/api/pull`, `/api/delete`, `/api/copy`,
//! empty `/api/generate` and `/api/chat`) and the shell (`pull`, `rm`) share.
//!
//! - `targets.rs`: which nodes an operation is for (named, lacking the
//!   model, having it, having it loaded), from lists read fresh;
//! - `fanout.rs`: an operation on many nodes through the node health view;
//! - `progress.rs`: many nodes' pull progress as one.
//!
//! None of these take a scheduler slot. Pulls, deletes and copies are disk
//! and network work on a node's store, not inference: holding a host's slot
//! for the minutes a pull takes would stop its generations for nothing (and
//! Ollama serves both at once). Loads and unloads bypass the slots too: an
//! unload ("eject") must act now rather than wait behind queued generations
//! that would load the model again, and a load only warms the model for the
//! requests that follow, which Ollama itself queues behind the one running.

pub mod fanout;
pub mod progress;
pub mod targets;

pub use fanout::{NodeResult, Outcome, PullEvent};
pub use progress::Board;
