//! The host-aware work queue. A task gets a node on a physical host with a free
//! slot (default one request per host at a time); among those it prefers a node
//! that has the model, then one with it loaded, then the lowest priority number,
//! then the fewest requests in flight, then the lowest recent latency. A host
//! that finishes takes the next waiting task. Knows nodes, nothing of agents.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::nodes::Node;
use crate::ollama::types::same_model;
use crate::ollama::ClientError;

/// Retries of a failed task, each on another host when there is one.
pub const MAX_RETRIES: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any node in the pool, per the preference order above.
    Pool,
    /// Always the one preferred node.
    Single,
    /// Like Pool, but a node with the model in VRAM comes first.
    Gpu,
}

struct State {
    in_flight: HashMap<String, u32>,
}

/// What the scheduler did, for observers (the dashboard).
pub trait Events: Send + Sync {
    /// A task got a node, and why that one.
    fn picked(&self, _task: &str, _node: &Node, _reason: &str) {}
    /// An attempt on a node ended.
    fn finished(&self, _node: &Node, _seconds: f64, _ok: bool) {}
}

pub struct Scheduler {
    events: Option<Arc<dyn Events>>,
    nodes: Vec<Arc<Node>>,
    capacity: HashMap<String, u32>,
    policy: Policy,
    state: Mutex<State>,
    freed: Notify,
}

/// A slot on a node; dropping it frees the slot and wakes a waiting task.
pub struct Lease {
    pub node: Arc<Node>,
    sched: Arc<Scheduler>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut st = self.sched.state.lock().unwrap();
            if let Some(n) = st.in_flight.get_mut(&self.node.host) {
                *n = n.saturating_sub(1);
            }
        }
        {
            let mut st = self.node.state();
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        self.sched.freed.notify_waiters();
    }
}

/// Why a task could not run anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailed {
    pub label: String,
    /// (node name, error) for every attempt.
    pub attempts: Vec<(String, String)>,
}

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.attempts.is_empty() {
            return write!(f, "{}: no node is available", self.label);
        }
        let tried: Vec<String> = self
            .attempts
            .iter()
            .map(|(n, e)| format!("{n} ({e})"))
            .collect();
        write!(
            f,
            "{} failed on every node tried: {}",
            self.label,
            tried.join("; ")
        )
    }
}

/// Where and how a task ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attribution {
    pub task: String,
    pub node: String,
    pub url: String,
    pub host: String,
    pub seconds: f64,
    pub tokens_per_sec: Option<f64>,
    pub retries: usize,
}

impl Scheduler {
    /// `capacity(host)` gives the number of requests a host takes at once.
    pub fn new(
        nodes: Vec<Arc<Node>>,
        policy: Policy,
        capacity: impl Fn(&str) -> u32,
    ) -> Arc<Scheduler> {
        Self::with_events(nodes, policy, capacity, None)
    }

    /// Like `new`, telling `events` about every pick and every attempt.
    pub fn with_events(
        nodes: Vec<Arc<Node>>,
        policy: Policy,
        capacity: impl Fn(&str) -> u32,
        events: Option<Arc<dyn Events>>,
    ) -> Arc<Scheduler> {
        let mut caps = HashMap::new();
        for n in &nodes {
            caps.entry(n.host.clone())
                .or_insert_with(|| capacity(&n.host).max(1));
        }
        let nodes = match policy {
            Policy::Single => preferred(&nodes).into_iter().collect(),
            _ => nodes,
        };
        Arc::new(Scheduler {
            events,
            nodes,
            capacity: caps,
            policy,
            state: Mutex::new(State {
                in_flight: HashMap::new(),
            }),
            freed: Notify::new(),
        })
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Distinct physical hosts in the pool.
    pub fn hosts(&self) -> usize {
        let mut h: Vec<&str> = self.nodes.iter().map(|n| n.host.as_str()).collect();
        h.sort();
        h.dedup();
        h.len()
    }

    /// Wait for a slot on the best node for `model`, avoiding the hosts in
    /// `avoid` while any other host can serve. None when no node can serve.
    pub async fn acquire(self: &Arc<Self>, model: &str, avoid: &[String]) -> Option<Lease> {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_acquire(model, avoid) {
                Pick::Got(node) => {
                    node.state().in_flight += 1;
                    return Some(Lease {
                        node,
                        sched: self.clone(),
                    });
                }
                Pick::Nobody => return None,
                Pick::Wait => notified.await,
            }
        }
    }

    fn try_acquire(&self, model: &str, avoid: &[String]) -> Pick {
        let usable: Vec<&Arc<Node>> = self.nodes.iter().filter(|n| n.available()).collect();
        if usable.is_empty() {
            // Nothing to wait for: every node is cooling down after repeated failures.
            return Pick::Nobody;
        }
        let fresh: Vec<&Arc<Node>> = usable
            .iter()
            .copied()
            .filter(|n| !avoid.contains(&n.host))
            .collect();
        let candidates = if fresh.is_empty() { usable } else { fresh };
        let mut st = self.state.lock().unwrap();
        let free: Vec<&Arc<Node>> = candidates
            .into_iter()
            .filter(|n| {
                st.in_flight.get(&n.host).copied().unwrap_or(0)
                    < self.capacity.get(&n.host).copied().unwrap_or(1)
            })
            .collect();
        let Some(best) = free.into_iter().min_by(|a, b| {
            rank(a, model, self.policy)
                .partial_cmp(&rank(b, model, self.policy))
                .unwrap()
        }) else {
            return Pick::Wait;
        };
        *st.in_flight.entry(best.host.clone()).or_insert(0) += 1;
        Pick::Got(best.clone())
    }

    /// Run `attempt` on a node, retrying from scratch on another host up to
    /// `MAX_RETRIES` times. `notice` gets one line per retry.
    pub async fn run<T, F, Fut>(
        self: &Arc<Self>,
        label: &str,
        model: &str,
        mut attempt: F,
        notice: &(dyn Fn(String) + Sync),
    ) -> Result<(T, Attribution), TaskFailed>
    where
        F: FnMut(Arc<Node>) -> Fut,
        Fut: Future<Output = Result<(T, Option<f64>), ClientError>>,
    {
        let mut tried_hosts: Vec<String> = Vec::new();
        let mut attempts: Vec<(String, String)> = Vec::new();
        for round in 0..=MAX_RETRIES {
            let Some(lease) = self.acquire(model, &tried_hosts).await else {
                break;
            };
            let node = lease.node.clone();
            if let Some(ev) = &self.events {
                ev.picked(label, &node, &self.reason(&node, model, &tried_hosts));
            }
            let started = Instant::now();
            let result = attempt(node.clone()).await;
            let elapsed = started.elapsed();
            drop(lease);
            if let Some(ev) = &self.events {
                ev.finished(&node, elapsed.as_secs_f64(), result.is_ok());
            }
            match result {
                Ok((value, tps)) => {
                    {
                        let mut st = node.state();
                        st.record_success();
                        st.record_request(elapsed, true, tps);
                    }
                    return Ok((
                        value,
                        Attribution {
                            task: label.to_string(),
                            node: node.name().to_string(),
                            url: node.url().to_string(),
                            host: node.host.clone(),
                            seconds: elapsed.as_secs_f64(),
                            tokens_per_sec: tps,
                            retries: round,
                        },
                    ));
                }
                Err(e) => {
                    let went_down = {
                        let mut st = node.state();
                        st.record_request(elapsed, false, None);
                        st.record_failure(&e.to_string())
                    };
                    attempts.push((node.name().to_string(), short(&e)));
                    tried_hosts.push(node.host.clone());
                    let mut line = format!("⚠️  {label} failed on {} ({})", node.name(), short(&e));
                    if went_down {
                        line.push_str(&format!(
                            "; {} cooled down after 3 failures in a row",
                            node.name()
                        ));
                    }
                    if round < MAX_RETRIES {
                        line.push_str(&format!(
                            "; retrying from scratch ({}/{MAX_RETRIES})",
                            round + 1
                        ));
                    }
                    notice(line);
                }
            }
        }
        Err(TaskFailed {
            label: label.to_string(),
            attempts,
        })
    }
}

impl Scheduler {
    /// Why `node` was a good choice for `model`, in words.
    fn reason(&self, node: &Node, model: &str, avoided: &[String]) -> String {
        let st = node.state();
        let mut why = Vec::new();
        if st.loaded.iter().any(|m| same_model(&m.name, model)) {
            why.push(format!("{model} loaded"));
        } else if st.models.iter().any(|m| same_model(m, model)) {
            why.push(format!("has {model}"));
        }
        why.push(format!("host {} free", node.host));
        if !avoided.is_empty() {
            why.push(format!("retry away from {}", avoided.join(", ")));
        }
        if self.policy == Policy::Single {
            why.push("strategy single".into());
        }
        format!(
            "{} (priority {}); {} host(s) in the pool",
            why.join(", "),
            node.entry.priority,
            self.hosts()
        )
    }
}

enum Pick {
    Got(Arc<Node>),
    Wait,
    Nobody,
}

/// Lower is better.
fn rank(n: &Node, model: &str, policy: Policy) -> (u8, u8, i64, u32, f64) {
    let st = n.state();
    let has = st.models.is_empty() || st.models.iter().any(|m| same_model(m, model));
    let loaded = st.loaded.iter().find(|m| same_model(&m.name, model));
    let in_vram = loaded.is_some_and(|m| m.size_vram > 0);
    let first = if policy == Policy::Gpu {
        !in_vram
    } else {
        !has
    };
    (
        u8::from(first),
        u8::from(loaded.is_none()),
        n.entry.priority,
        st.in_flight,
        st.recent_latency_ms.unwrap_or(0.0),
    )
}

/// The preferred node: lowest priority number among those not known to be down.
pub fn preferred(nodes: &[Arc<Node>]) -> Option<Arc<Node>> {
    nodes
        .iter()
        .filter(|n| n.available())
        .min_by_key(|n| {
            (
                n.state().health == crate::nodes::Health::Down,
                n.entry.priority,
            )
        })
        .or_else(|| nodes.first())
        .cloned()
}

fn short(e: &ClientError) -> String {
    let s = e.to_string();
    let s = match s.split_once(": ") {
        Some((url, rest)) if url.starts_with("http") || url.starts_with("cannot connect") => {
            if url.starts_with("cannot connect") {
                s.clone()
            } else {
                rest.to_string()
            }
        }
        _ => s,
    };
    s.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;

    fn node(url: &str, host: &str, priority: i64) -> Arc<Node> {
        Arc::new(Node::new(
            NodeEntry {
                url: url.into(),
                name: url.into(),
                priority,
                host_id: Some(host.into()),
                extra: Default::default(),
            },
            false,
        ))
    }

    #[tokio::test]
    async fn one_request_per_host() {
        let a1 = node("http://a:1", "A", 0);
        let a2 = node("http://a:2", "A", 0);
        let b = node("http://b:1", "B", 5);
        let s = Scheduler::new(vec![a1, a2, b], Policy::Pool, |_| 1);
        let l1 = s.acquire("m", &[]).await.unwrap();
        let l2 = s.acquire("m", &[]).await.unwrap();
        assert_ne!(l1.node.host, l2.node.host);
        assert!(matches!(s.try_acquire("m", &[]), Pick::Wait));
        drop(l1);
        let l3 = s.acquire("m", &[]).await.unwrap();
        assert_eq!(l3.node.host, "A");
    }

    #[tokio::test]
    async fn prefers_the_model_then_priority_and_avoids_tried_hosts() {
        let a = node("http://a:1", "A", 0);
        let b = node("http://b:1", "B", 1);
        a.state().models = vec!["other:latest".into()];
        b.state().models = vec!["m:latest".into()];
        let s = Scheduler::new(vec![a.clone(), b.clone()], Policy::Pool, |_| 1);
        assert_eq!(s.acquire("m", &[]).await.unwrap().node.host, "B");
        assert_eq!(s.acquire("m", &["B".into()]).await.unwrap().node.host, "A");
        let single = Scheduler::new(vec![a, b], Policy::Single, |_| 1);
        assert_eq!(single.nodes().len(), 1);
        assert_eq!(single.nodes()[0].host, "A");
    }

    #[tokio::test]
    async fn capacity_raises_the_limit() {
        let s = Scheduler::new(vec![node("http://a:1", "A", 0)], Policy::Pool, |_| 2);
        let _x = s.acquire("m", &[]).await.unwrap();
        let _y = s.acquire("m", &[]).await.unwrap();
        assert!(matches!(s.try_acquire("m", &[]), Pick::Wait));
    }
}
