//! Choosing a node for one task among the free slots: health first (a
//! cooling node never, a suspect one only when no healthy host can take the
//! task soon), then [`Rank`]. A pick also names the cooling nodes whose
//! re-probe is due, for the caller to start.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::line::WaitState;
use super::pool::{Policy, Pool};
use super::rank::Rank;
use super::slots::SlotTable;
use crate::nodes::Node;

/// What a pick found, and the re-probes it wants started.
pub(super) struct Picked {
    /// `Granted` with the slot already taken in the table.
    pub state: WaitState,
    /// Cooling nodes whose re-probe is due, already marked as re-probing.
    pub reprobe: Vec<Arc<Node>>,
}

/// The task of `pool` for `model`, on a host not `excluded`: the best node
/// with a free slot (taken), or why there is none. `busy_elsewhere` hosts
/// count as having no free slot (other instances hold them);
/// `patience_over`: a suspect node is good enough now.
pub(super) fn pick(
    slots: &mut SlotTable,
    pool: &Pool,
    model: &str,
    excluded: &HashSet<String>,
    busy_elsewhere: &HashSet<String>,
    patience_over: bool,
) -> Picked {
    let now = Instant::now();
    let all = pool.candidates(model, excluded);
    if all.is_empty() {
        return Picked {
            state: WaitState::Nobody,
            reprobe: Vec::new(),
        };
    }
    let (cooling, usable): (Vec<_>, Vec<_>) = all.into_iter().partition(|n| n.state().cooling());
    let reprobe = due_for_reprobe(&cooling, usable.is_empty(), now);
    if usable.is_empty() {
        let due = cooling
            .iter()
            .filter_map(|n| n.state().health.cooling().map(|c| c.until))
            .min();
        return Picked {
            state: WaitState::Recovering(due),
            reprobe,
        };
    }
    let all_suspect = usable.iter().all(|n| n.state().health.is_suspect());
    let free: Vec<&Arc<Node>> = usable
        .iter()
        .filter(|n| slots.free(&n.host) && !busy_elsewhere.contains(&n.host))
        .collect();
    let trusted: Vec<&Arc<Node>> = free
        .iter()
        .copied()
        .filter(|n| !n.state().health.is_suspect())
        .collect();
    let best = match best(slots, &trusted, model, pool.policy) {
        Some(n) => Some(n),
        None if patience_over || all_suspect => best(slots, &free, model, pool.policy),
        None => None,
    };
    let state = match best {
        Some(n) => {
            slots.take(&n);
            WaitState::Granted(n)
        }
        None => WaitState::Waiting,
    };
    Picked { state, reprobe }
}

/// The best-ranked of `nodes` for `model`.
pub(super) fn best(
    slots: &SlotTable,
    nodes: &[&Arc<Node>],
    model: &str,
    policy: Policy,
) -> Option<Arc<Node>> {
    nodes
        .iter()
        .min_by_key(|n| Rank::of(n, model, policy, slots.on_node(n)))
        .map(|n| (*n).clone())
}

/// The `cooling` nodes whose re-probe is due now, marked as re-probing (so a
/// second pick does not start a second probe). With no other host left
/// (`urgent`), one is probed before its backoff ends.
fn due_for_reprobe(cooling: &[Arc<Node>], urgent: bool, now: Instant) -> Vec<Arc<Node>> {
    cooling
        .iter()
        .filter(|n| {
            let mut st = n.state();
            let due = if urgent {
                st.urgent_reprobe_due(now)
            } else {
                st.reprobe_due(now)
            };
            if due {
                st.reprobe_started(now);
            }
            due
        })
        .cloned()
        .collect()
}

/// Why `node` was a good choice for `model`, in words.
pub(super) fn reason(node: &Node, model: &str, pool: &Pool, excluded: &HashSet<String>) -> String {
    use crate::ollama::types::same_model;
    let st = node.state();
    let mut why = vec![st.health.word().to_string()];
    if st.loaded.iter().any(|m| same_model(&m.name, model)) {
        why.push(format!("{model} loaded"));
    } else if st.models.iter().any(|m| same_model(m, model)) {
        why.push(format!("has {model}"));
    }
    why.push(format!("host {} free", node.host));
    if !excluded.is_empty() {
        let mut hosts: Vec<&str> = excluded.iter().map(String::as_str).collect();
        hosts.sort();
        why.push(format!("retry away from {}", hosts.join(", ")));
    }
    if pool.policy == Policy::Single {
        why.push("strategy single".into());
    }
    format!(
        "{} (priority {}); {} host(s) in the pool",
        why.join(", "),
        node.entry.priority,
        pool.hosts()
    )
}
