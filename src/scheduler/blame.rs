//! Whose fault a failed attempt is: the node's, or the request's.
//!
//! An error that may be the request's (an HTTP error, an error line inside
//! the stream, a reply that is not what the API promises) is not held
//! against the node until the task ends, when the pool has another host to
//! compare with (with one host it is the node's at once): when another host
//! then answers the same request, the node failed it and takes the blame;
//! when the task fails with the same error from two hosts or more, the
//! request (or its model) is at fault and no node is blamed. A model the
//! node says it does not have (Ollama's 404) is never the node's fault.
//!
//! What is known of each model is kept here too: when a request for it last
//! answered, and the error that made a whole task fail on two hosts or more
//! while nothing for the model answered — the model is broken. A later task
//! for it stops at its first attempt that gives that same error (the real
//! reason, at once, no node blamed); the first request that answers clears it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::nodes::Node;
use crate::ollama::types::model_key;
use crate::ollama::{ClientError, ErrorKind};

/// A failure whose blame waits for the end of its task.
pub(super) struct Deferred {
    pub node: Arc<Node>,
    pub error: ClientError,
}

/// An error that may come from the request itself (every node would answer
/// it the same way), as opposed to one that says the node or the network is
/// unwell.
pub(super) fn request_error(e: &ClientError) -> bool {
    matches!(
        e.kind,
        ErrorKind::Http { .. } | ErrorKind::Model { .. } | ErrorKind::BadReply { .. }
    ) && e.is_node_fault()
}

/// The deferred failures of a task that failed, split: the errors that came
/// from two hosts or more (the request's fault), with how many hosts gave
/// each; and the failures that remain the nodes'.
pub(super) fn split(deferred: Vec<Deferred>) -> (Vec<(ErrorKind, usize)>, Vec<Deferred>) {
    let mut shared: Vec<(ErrorKind, usize)> = Vec::new();
    for d in &deferred {
        if shared.iter().any(|(k, _)| *k == d.error.kind) {
            continue;
        }
        let hosts: HashSet<&str> = deferred
            .iter()
            .filter(|o| o.error.kind == d.error.kind)
            .map(|o| o.node.host.as_str())
            .collect();
        if hosts.len() >= 2 {
            shared.push((d.error.kind.clone(), hosts.len()));
        }
    }
    let nodes = deferred
        .into_iter()
        .filter(|d| !shared.iter().any(|(k, _)| *k == d.error.kind))
        .collect();
    (shared, nodes)
}

/// A model that failed a whole task with the same error on several hosts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Broken {
    pub error: ErrorKind,
    pub hosts: usize,
}

#[derive(Default)]
struct Record {
    /// When a request for the model last answered.
    answered: Option<Instant>,
    broken: Option<Broken>,
}

/// What is known of each model's requests (by Ollama's model key).
#[derive(Default)]
pub(super) struct Models(Mutex<HashMap<String, Record>>);

impl Models {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request for `model` answered: the model works.
    pub fn answered(&self, model: &str) {
        let mut m = self.lock();
        let r = m.entry(model_key(model)).or_default();
        r.answered = Some(Instant::now());
        r.broken = None;
    }

    /// A request for `model` answered at `since` or later.
    pub fn answered_since(&self, model: &str, since: Instant) -> bool {
        self.lock()
            .get(&model_key(model))
            .and_then(|r| r.answered)
            .is_some_and(|t| t >= since)
    }

    /// A task for `model` failed with `error` from `hosts` hosts.
    pub fn broke(&self, model: &str, error: ErrorKind, hosts: usize) {
        self.lock().entry(model_key(model)).or_default().broken = Some(Broken { error, hosts });
    }

    /// The error `model` is known to fail with, if it is broken.
    pub fn broken(&self, model: &str) -> Option<Broken> {
        self.lock()
            .get(&model_key(model))
            .and_then(|r| r.broken.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;

    fn node(host: &str) -> Arc<Node> {
        Arc::new(Node::new(
            NodeEntry {
                url: format!("http://{host}:1"),
                name: host.into(),
                priority: 0,
                host_id: Some(host.into()),
                extra: Default::default(),
            },
            false,
        ))
    }

    fn http(status: u16, message: &str) -> ErrorKind {
        ErrorKind::Http {
            status,
            message: message.into(),
        }
    }

    fn deferred(host: &str, kind: ErrorKind) -> Deferred {
        Deferred {
            node: node(host),
            error: ClientError::new("u", kind),
        }
    }

    #[test]
    fn the_same_error_from_two_hosts_is_the_requests_and_a_lone_one_the_nodes() {
        let (shared, nodes) = split(vec![
            deferred("A", http(500, "boom")),
            deferred("B", http(500, "boom")),
            deferred("C", http(500, "other")),
            deferred("A", http(503, "busy")),
        ]);
        assert_eq!(shared, vec![(http(500, "boom"), 2)]);
        let blamed: Vec<(&str, &ErrorKind)> = nodes
            .iter()
            .map(|d| (d.node.host.as_str(), &d.error.kind))
            .collect();
        assert_eq!(
            blamed,
            vec![("C", &http(500, "other")), ("A", &http(503, "busy"))]
        );
        // Twice on one host is not "two hosts".
        let (shared, nodes) = split(vec![
            deferred("A", http(500, "boom")),
            deferred("A", http(500, "boom")),
        ]);
        assert!(shared.is_empty());
        assert_eq!(nodes.len(), 2);
    }

    #[test]
    fn a_missing_model_and_a_broken_connection_are_not_request_errors() {
        let e = |kind| ClientError::new("u", kind);
        assert!(request_error(&e(http(500, "boom"))));
        assert!(!request_error(&e(http(404, "model 'x' not found"))));
        assert!(!request_error(&e(ErrorKind::Reset {
            after_first_token: false,
            detail: String::new(),
        })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_is_broken_until_a_request_for_it_answers() {
        let m = Models::default();
        let start = Instant::now();
        assert!(!m.answered_since("qwen", start));
        m.broke("qwen", http(500, "boom"), 2);
        assert_eq!(m.broken("qwen:latest").map(|b| b.hosts), Some(2));
        assert_eq!(m.broken("llama3.2"), None);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        m.answered("QWEN:latest");
        assert_eq!(m.broken("qwen"), None);
        assert!(m.answered_since("qwen", start));
        assert!(!m.answered_since("qwen", Instant::now() + std::time::Duration::from_secs(1)));
    }
}
