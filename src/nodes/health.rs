//! Probing nodes: `/api/tags` (and `/api/ps`) concurrently, updating live state.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;

use super::registry::Node;
use crate::ollama::{Client, Timeouts};

#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub node: Arc<Node>,
    pub ok: bool,
    pub latency_ms: f64,
    pub detail: String,
    /// This probe's failure put the node into cool-down.
    pub went_down: bool,
    /// This probe's success brought back a node that was down.
    pub came_back: bool,
}

/// Probe one node and record the outcome in its state.
pub async fn probe(client: &Client, node: Arc<Node>, with_ps: bool) -> ProbeResult {
    let started = Instant::now();
    let tags = client.tags(node.url(), Timeouts::PROBE).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match tags {
        Ok(models) => {
            let loaded = if with_ps {
                client.ps(node.url(), Timeouts::PROBE).await.ok()
            } else {
                None
            };
            let mut st = node.state();
            let came_back = st.consecutive_failures >= super::registry::FAILURES_TO_DOWN;
            st.record_success();
            st.models = models.into_iter().map(|m| m.name).collect();
            if let Some(l) = loaded {
                st.loaded = l;
            }
            let detail = format!("{} model(s), {latency_ms:.0} ms", st.models.len());
            drop(st);
            ProbeResult {
                node,
                ok: true,
                latency_ms,
                detail,
                went_down: false,
                came_back,
            }
        }
        Err(e) => {
            let went_down = node.state().record_failure(&e.to_string());
            ProbeResult {
                node,
                ok: false,
                latency_ms,
                detail: e.to_string(),
                went_down,
                came_back: false,
            }
        }
    }
}

/// Probe every node at once.
pub async fn probe_all(client: &Client, nodes: &[Arc<Node>], with_ps: bool) -> Vec<ProbeResult> {
    join_all(nodes.iter().cloned().map(|n| probe(client, n, with_ps))).await
}
