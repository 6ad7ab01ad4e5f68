//! Probing nodes: `/api/tags` (and `/api/ps`) of an Ollama node, `/health` of a
//! llama.cpp coordinator, concurrently, each outcome recorded in the node's
//! place in the health view (see `state.rs`). A probe that times out on a
//! node with requests in flight (the scheduler's slot table knows, through
//! [`Load`]) marks it busy, not down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::registry::{Api, Node};
use super::state::Transition;
use crate::ollama::{Client, ClientError, ErrorKind, Timeouts};

/// How many requests each node has in flight right now.
pub trait Load: Send + Sync {
    fn in_flight(&self, node: &Node) -> u32;
}

/// Nothing in flight anywhere: probes outside any scheduler.
pub struct NoLoad;

impl Load for NoLoad {
    fn in_flight(&self, _: &Node) -> u32 {
        0
    }
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub node: Arc<Node>,
    /// The node answered (or is busy working and answered too slowly to tell).
    pub ok: bool,
    /// It answered too slowly while it had requests in flight.
    pub busy: bool,
    pub latency_ms: f64,
    pub detail: String,
    /// This probe's failure put the node into cool-down.
    pub went_down: bool,
    /// This probe's success brought back a node that was cooling down.
    pub came_back: bool,
}

/// Probe one node and record the outcome in its state; `load` tells whether
/// it is working.
pub async fn probe(
    client: &Client,
    node: Arc<Node>,
    with_ps: bool,
    load: &dyn Load,
) -> ProbeResult {
    let started = Instant::now();
    let answer = match node.api {
        Api::Ollama => probe_ollama(client, &node, with_ps).await,
        Api::OpenAi => probe_llama_server(client, &node).await,
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut result = ProbeResult {
        node: node.clone(),
        ok: false,
        busy: false,
        latency_ms,
        detail: String::new(),
        went_down: false,
        came_back: false,
    };
    let in_flight = load.in_flight(&node);
    let mut st = node.state();
    match answer {
        Ok(detail) => {
            result.ok = true;
            result.came_back = st.record_probe_ok();
            result.detail = format!("{detail}, {latency_ms:.0} ms");
        }
        Err(e) if is_slow(&e) && in_flight > 0 => {
            st.record_probe_slow();
            result.ok = true;
            result.busy = true;
            result.detail = format!(
                "busy: {} request(s) in flight, the probe got no answer within {:.0}s",
                in_flight,
                Timeouts::PROBE.total.as_secs_f64()
            );
        }
        Err(e) => {
            result.went_down = matches!(st.record_fault(&e, false), Transition::Cooled(_));
            result.detail = e.to_string();
        }
    }
    result
}

fn is_slow(e: &ClientError) -> bool {
    matches!(
        e.kind,
        ErrorKind::NoFirstToken { .. } | ErrorKind::Stall { .. } | ErrorKind::Deadline { .. }
    )
}

/// `/api/tags` (models installed) and optionally `/api/ps` (models loaded).
async fn probe_ollama(client: &Client, node: &Node, with_ps: bool) -> Result<String, ClientError> {
    let models = client.tags(node.url(), Timeouts::PROBE).await?;
    let loaded = if with_ps {
        client.ps(node.url(), Timeouts::PROBE).await.ok()
    } else {
        None
    };
    let mut st = node.state();
    st.models = models.into_iter().map(|m| m.name).collect();
    if let Some(l) = loaded {
        st.loaded = l;
    }
    Ok(format!("{} model(s)", st.models.len()))
}

/// llama-server's `/health`: 200 ready, 503 loading the model.
async fn probe_llama_server(client: &Client, node: &Node) -> Result<String, ClientError> {
    let url = format!("{}/health", node.url().trim_end_matches('/'));
    let t = Timeouts::new(
        Duration::from_millis(500),
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    match client.get_status_classified(&url, t).await? {
        200 => Ok("ready".into()),
        503 => Ok("loading the model".into()),
        s => Err(ClientError::new(
            url,
            ErrorKind::Http {
                status: s,
                message: "unexpected /health status".into(),
            },
        )),
    }
}

/// Probe every node at once.
pub async fn probe_all(
    client: &Client,
    nodes: &[Arc<Node>],
    with_ps: bool,
    load: &dyn Load,
) -> Vec<ProbeResult> {
    join_all(
        nodes
            .iter()
            .cloned()
            .map(|n| probe(client, n, with_ps, load)),
    )
    .await
}
