//! What the pipeline tells the outside world while it works (the app turns this
//! into progress lines and notices on a terminal).

use crate::nodes::Node;
use crate::scheduler::AttemptKind;

/// Callbacks from a running query. Implementations must be cheap and thread-safe.
pub trait Observer: Send + Sync {
    /// One line worth showing a person (a retry, a fallback).
    fn notice(&self, line: String);
    /// A task is waiting for a free host.
    fn queued(&self, _task: &str) {}
    /// A task started on a node.
    fn started(&self, _task: &str, _node: &str) {}
    /// An attempt of a task started on a node: the first, a retry or a hedge.
    fn attempt(&self, task: &str, node: &Node, _kind: &AttemptKind) {
        self.started(task, node.name());
    }
    /// More text arrived for a task (characters so far).
    fn progress(&self, _task: &str, _chars: usize) {}
    /// Tokens streamed so far for a task, and the rate since its first token.
    fn streaming(&self, _task: &str, _tokens: u64, _per_sec: Option<f64>) {}
    /// A task ended (successfully or not).
    fn finished(&self, _task: &str) {}
}

/// An observer that keeps notices (tests, `-i`).
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<String>>);

impl Observer for Collect {
    fn notice(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}
