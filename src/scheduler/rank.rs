//! Which free node takes a task: a [`Rank`] per node, compared field by field
//! in the order declared (lower is better). **A new routing rule is a new
//! field**, placed where it should weigh: before the fields it overrides,
//! after those that override it.
//!
//! Health decides before rank does: a cooling node is never ranked, and a
//! suspect one only when no healthy host can take the task soon (see
//! `pick.rs`).

use std::cmp::Ordering;

use super::pool::Policy;
use crate::nodes::Node;
use crate::ollama::types::same_model;

/// How good a choice a node is for one task, as derived `Ord` compares it:
/// the first field that differs decides, lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// Busy: it answers, but slowly, while it works (a probe timed out).
    pub busy: bool,
    /// It lacks the model (a node whose models are unknown may have it); with
    /// the GPU policy: it lacks the model in VRAM.
    pub lacks_model: bool,
    /// The model is not loaded there (it would have to load first).
    pub not_loaded: bool,
    /// The node's priority number from the node file (lower first).
    pub priority: i64,
    /// Requests it has in flight now (from the slot table).
    pub in_flight: u32,
    /// Its recent latency (exponentially weighted, ms; 0 when unmeasured).
    pub recent_latency: Millis,
}

/// Milliseconds, ordered totally (`f64::total_cmp`), so `Rank` can derive `Ord`.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub f64);

impl PartialEq for Millis {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Millis {}

impl PartialOrd for Millis {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Millis {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Rank {
    /// `node`'s rank for a task on `model` under `policy`, with `in_flight`
    /// requests on it now.
    pub(crate) fn of(node: &Node, model: &str, policy: Policy, in_flight: u32) -> Rank {
        let st = node.state();
        let has = st.models.is_empty() || st.models.iter().any(|m| same_model(m, model));
        let loaded = st.loaded.iter().find(|m| same_model(&m.name, model));
        let in_vram = loaded.is_some_and(|m| m.size_vram > 0);
        Rank {
            busy: st.health.is_busy(),
            lacks_model: if policy == Policy::Gpu {
                !in_vram
            } else {
                !has
            },
            not_loaded: loaded.is_none(),
            priority: node.entry.priority,
            in_flight,
            recent_latency: Millis(st.recent_latency_ms.unwrap_or(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(busy: bool, lacks: bool, priority: i64, in_flight: u32, ms: f64) -> Rank {
        Rank {
            busy,
            lacks_model: lacks,
            not_loaded: true,
            priority,
            in_flight,
            recent_latency: Millis(ms),
        }
    }

    #[test]
    fn earlier_fields_outweigh_later_ones() {
        // Busy loses to anything not busy.
        assert!(rank(false, true, 9, 9, 900.0) < rank(true, false, 0, 0, 0.0));
        // Having the model beats a better priority.
        assert!(rank(false, false, 9, 0, 0.0) < rank(false, true, 0, 0, 0.0));
        // Priority beats fewer requests in flight; those beat latency.
        assert!(rank(false, false, 0, 3, 0.0) < rank(false, false, 1, 0, 0.0));
        assert!(rank(false, false, 0, 0, 900.0) < rank(false, false, 0, 1, 1.0));
        assert!(rank(false, false, 0, 0, 1.0) < rank(false, false, 0, 0, 2.0));
    }
}
