//! The nodes one task may use, how to choose among them, and on whose behalf
//! it waits.

use std::collections::HashSet;
use std::sync::Arc;

use crate::nodes::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any node in the pool, per the preference order of [`super::rank::Rank`].
    Pool,
    /// Always the one preferred node.
    Single,
    /// Like Pool, but a node with the model in VRAM comes first.
    Gpu,
}

/// The priority of a task that names none (an agent file without one, a gateway request).
pub(crate) const DEFAULT_PRIORITY: i32 = 5;

/// The nodes one query (or request) may use, how to choose among them, and on
/// whose behalf it waits.
#[derive(Clone)]
pub struct Pool {
    pub(super) nodes: Vec<Arc<Node>>,
    pub policy: Policy,
    /// The client asking (waiters of different clients take turns).
    pub(super) client: Option<Arc<str>>,
    /// A task refuses to wait when this many tasks already wait.
    pub(super) queue_limit: Option<usize>,
    /// Among one client's waiting tasks, a higher priority takes a freed slot
    /// first (an agent's `priority`; equal priorities keep arrival order).
    pub priority: i32,
}

impl Pool {
    pub fn new(nodes: Vec<Arc<Node>>, policy: Policy) -> Pool {
        let nodes = match policy {
            Policy::Single => preferred(&nodes).into_iter().collect(),
            _ => nodes,
        };
        Pool {
            nodes,
            policy,
            client: None,
            queue_limit: None,
            priority: DEFAULT_PRIORITY,
        }
    }

    /// The same pool (client, queue limit, priority) over fewer nodes.
    pub(crate) fn narrowed(&self, nodes: Vec<Arc<Node>>) -> Pool {
        Pool {
            nodes,
            ..self.clone()
        }
    }

    /// Tasks of this pool wait with `priority` (see `Pool::priority`).
    pub(crate) fn with_priority(mut self, priority: i32) -> Pool {
        self.priority = priority;
        self
    }

    /// Wait on behalf of `client`: when several clients wait, they take turns.
    pub(crate) fn for_client(mut self, client: Option<Arc<str>>) -> Pool {
        self.client = client;
        self
    }

    /// A task of this pool that would have to wait while `limit` tasks already
    /// wait fails at once with `NoSlot::QueueFull` (its retries never do).
    pub(crate) fn with_queue_limit(mut self, limit: usize) -> Pool {
        self.queue_limit = Some(limit);
        self
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Distinct physical hosts in the pool.
    pub fn hosts(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.host.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    /// The pool's nodes on hosts not excluded, leaving out those known to lack
    /// the model (a node whose models are not known yet stays) — unless that
    /// leaves none.
    pub(super) fn candidates(&self, model: &str, excluded: &HashSet<String>) -> Vec<Arc<Node>> {
        let open: Vec<Arc<Node>> = self
            .nodes
            .iter()
            .filter(|n| !excluded.contains(&n.host))
            .cloned()
            .collect();
        let may_have: Vec<Arc<Node>> = open
            .iter()
            .filter(|n| n.has_model(model))
            .cloned()
            .collect();
        if may_have.is_empty() {
            open
        } else {
            may_have
        }
    }
}

/// The preferred node: lowest priority number among those not cooling down.
pub(crate) fn preferred(nodes: &[Arc<Node>]) -> Option<Arc<Node>> {
    nodes
        .iter()
        .filter(|n| n.available())
        .min_by_key(|n| (!n.state().health.is_up(), n.entry.priority))
        .or_else(|| nodes.first())
        .cloned()
}
