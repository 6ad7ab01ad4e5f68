//! One operation on many nodes, each call through the node health view: a
//! node cooling down after failures is not called but reported as such; a
//! node that cannot be reached or breaks off is recorded against its health
//! (as a failed probe would be) and reported; a node that answers, even with
//! an error, is known to answer. These are management calls, not inference:
//! they take no scheduler slot (see the module's documentation).
//!
//! Pulls run in parallel across physical hosts and one at a time on each host
//! (a pull is bound by the host's disk and network link, which its nodes
//! share); deletes, copies, loads and unloads run on every node at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::nodes::Node;
use crate::ollama::manage::{Residency, PULL_TIMEOUTS};
use crate::ollama::types::{model_key, same_model, ProgressLine};
use crate::ollama::{Client, ClientError, ErrorKind};

/// What an operation did on one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done as asked.
    Done,
    /// The node answered with an error: its HTTP status (None for an error
    /// line inside a 200 stream) and Ollama's words.
    Refused {
        status: Option<u16>,
        message: String,
    },
    /// The node could not be reached or broke off (recorded in its health).
    Unreachable(String),
    /// Not called: the node is cooling down after failures (its state).
    Cooling(String),
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Done)
    }

    /// The failure in a few words (None when done).
    pub fn problem(&self) -> Option<String> {
        match self {
            Outcome::Done => None,
            Outcome::Refused {
                status: Some(s),
                message,
            } => Some(format!("HTTP {s}: {message}")),
            Outcome::Refused {
                status: None,
                message,
            } => Some(message.clone()),
            Outcome::Unreachable(e) => Some(e.clone()),
            Outcome::Cooling(state) => Some(format!("not tried: {state}")),
        }
    }

    /// The node itself is at fault (unreachable or cooling), not the request.
    pub fn node_fault(&self) -> bool {
        matches!(self, Outcome::Unreachable(_) | Outcome::Cooling(_))
    }
}

/// An operation's outcome on one node, and how long it took there.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub node: Arc<Node>,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// `Some(Cooling)` when the health view says not to call `node` now.
fn held_back(node: &Node) -> Option<Outcome> {
    let st = node.state();
    st.cooling().then(|| Outcome::Cooling(st.describe()))
}

/// Record a call's result in the node's health; what it means.
fn record(node: &Node, r: Result<(), ClientError>) -> Outcome {
    let answered = |o: Outcome| {
        node.state().record_probe_ok();
        o
    };
    match r {
        Ok(()) => answered(Outcome::Done),
        Err(e) => match e.kind {
            ErrorKind::Http { status, message } => answered(Outcome::Refused {
                status: Some(status),
                message,
            }),
            ErrorKind::TooLarge { message } => answered(Outcome::Refused {
                status: Some(400),
                message,
            }),
            ErrorKind::Model { message } => answered(Outcome::Refused {
                status: None,
                message,
            }),
            _ => {
                node.state().record_fault(&e, false);
                Outcome::Unreachable(e.short())
            }
        },
    }
}

/// Call `op` on `node` unless its health holds it back; the result, recorded.
async fn on_node<F, Fut>(node: &Arc<Node>, op: F) -> NodeResult
where
    F: FnOnce(Arc<Node>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let started = Instant::now();
    let outcome = match held_back(node) {
        Some(o) => o,
        None => record(node, op(node.clone()).await),
    };
    NodeResult {
        node: node.clone(),
        outcome,
        elapsed: started.elapsed(),
    }
}

/// What a pull on many nodes tells as it goes.
pub enum PullEvent<'a> {
    /// The pull on this node begins (its host's turn came).
    Started(&'a Arc<Node>),
    /// A progress line from this node.
    Line(&'a Arc<Node>, &'a ProgressLine),
    /// The pull on this node ended.
    Finished(&'a NodeResult),
}

/// Pull `model` onto `nodes`: in parallel across physical hosts, one node at
/// a time on each; `events` hears every step. The results in `nodes`' order.
/// Dropping the future cancels the pulls (each node stops its own).
pub async fn pull(
    client: &Client,
    nodes: &[Arc<Node>],
    model: &str,
    insecure: bool,
    events: &(dyn Fn(PullEvent<'_>) + Sync),
) -> Vec<NodeResult> {
    let mut by_host: BTreeMap<&str, Vec<&Arc<Node>>> = BTreeMap::new();
    for n in nodes {
        by_host.entry(n.host.as_str()).or_default().push(n);
    }
    let hosts = by_host.into_values().map(|on_host| async move {
        let mut done = Vec::new();
        for node in on_host {
            events(PullEvent::Started(node));
            let r = on_node(node, |n| async move {
                client
                    .pull(n.url(), model, insecure, PULL_TIMEOUTS, |line| {
                        events(PullEvent::Line(&n, line))
                    })
                    .await
            })
            .await;
            if r.outcome.ok() {
                installed(node, model);
            }
            events(PullEvent::Finished(&r));
            done.push(r);
        }
        done
    });
    in_order(nodes, join_all(hosts).await.into_iter().flatten().collect())
}

/// `results` in the order of `nodes`.
fn in_order(nodes: &[Arc<Node>], mut results: Vec<NodeResult>) -> Vec<NodeResult> {
    let at = |r: &NodeResult| nodes.iter().position(|n| Arc::ptr_eq(n, &r.node));
    results.sort_by_key(at);
    results
}

/// The node has `model` now (routing sees it before the next probe).
fn installed(node: &Node, model: &str) {
    let mut st = node.state();
    if !st.models.iter().any(|m| same_model(m, model)) {
        st.models.push(model_key(model));
    }
}

/// Delete `model` on every one of `nodes` at once.
pub async fn delete(client: &Client, nodes: &[Arc<Node>], model: &str) -> Vec<NodeResult> {
    let calls = nodes.iter().map(|node| async move {
        let r = on_node(node, |n| async move {
            client.delete_model(n.url(), model).await
        })
        .await;
        if r.outcome.ok() {
            let mut st = node.state();
            st.models.retain(|m| !same_model(m, model));
            st.loaded.retain(|m| !same_model(&m.name, model));
        }
        r
    });
    join_all(calls).await
}

/// Copy `source` to `destination` on every one of `nodes` at once.
pub async fn copy(
    client: &Client,
    nodes: &[Arc<Node>],
    source: &str,
    destination: &str,
) -> Vec<NodeResult> {
    let calls = nodes.iter().map(|node| async move {
        let r = on_node(node, |n| async move {
            client.copy_model(n.url(), source, destination).await
        })
        .await;
        if r.outcome.ok() {
            installed(node, destination);
        }
        r
    });
    join_all(calls).await
}

/// Load `model` into memory (with this `keep_alive`) or unload it, on every
/// one of `nodes` at once.
pub async fn residency(
    client: &Client,
    nodes: &[Arc<Node>],
    model: &str,
    what: Residency,
    keep_alive: Option<&serde_json::Value>,
) -> Vec<NodeResult> {
    let calls = nodes.iter().map(|node| async move {
        let r = on_node(node, |n| async move {
            client.residency(n.url(), model, what, keep_alive).await
        })
        .await;
        if r.outcome.ok() && what == Residency::Unload {
            node.state().loaded.retain(|m| !same_model(&m.name, model));
        }
        r
    });
    join_all(calls).await
}

/// `name (what went wrong)` for each result that failed, joined.
pub fn failures(results: &[NodeResult]) -> String {
    results
        .iter()
        .filter_map(|r| {
            r.outcome
                .problem()
                .map(|p| format!("{} ({p})", r.node.name()))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The names of the nodes where it was done.
pub fn done_on(results: &[NodeResult]) -> Vec<&str> {
    results
        .iter()
        .filter(|r| r.outcome.ok())
        .map(|r| r.node.name())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;

    fn node() -> Node {
        Node::new(
            NodeEntry {
                url: "http://a:1".into(),
                name: "a".into(),
                priority: 0,
                host_id: None,
                extra: Default::default(),
            },
            false,
        )
    }

    #[test]
    fn an_answer_is_not_held_against_the_node_but_a_broken_call_is() {
        let n = node();
        let http = ClientError::new(
            "u",
            ErrorKind::Http {
                status: 404,
                message: "model 'x' not found".into(),
            },
        );
        assert_eq!(
            record(&n, Err(http)),
            Outcome::Refused {
                status: Some(404),
                message: "model 'x' not found".into()
            }
        );
        assert_eq!(n.state().consecutive_failures(), 0);
        let refused = ClientError::new(
            "u",
            ErrorKind::Refused {
                reason: "connection refused".into(),
            },
        );
        let o = record(&n, Err(refused));
        assert!(o.node_fault() && !o.ok(), "{o:?}");
        assert!(
            n.state().cooling(),
            "nothing listening cools a node at once"
        );
        assert!(matches!(held_back(&n), Some(Outcome::Cooling(_))));
        assert_eq!(
            Outcome::Cooling("cooling (1 failures; backoff 5s)".into()).problem(),
            Some("not tried: cooling (1 failures; backoff 5s)".into())
        );
    }
}
