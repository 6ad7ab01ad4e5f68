//! Embeddings through the cluster: only nodes whose `/api/tags` lists the
//! embedding model are asked, and each request goes through the host-aware
//! scheduler (one request per physical host at a time, retries elsewhere).
//! Every use of the scheduler is in `scheduler_for` and `through_scheduler`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::nodes::health::probe_all;
use crate::nodes::{Api, Node};
use crate::ollama::types::same_model;
use crate::ollama::{Client, ClientError, Timeouts};
use crate::scheduler::{Attribution, Policy, Scheduler, TaskFailed};

pub const DEFAULT_MODEL: &str = "mxbai-embed-large";

/// No node can embed with the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no node has the embedding model {model} ({detail}); install it on a node with `ollama pull {model}`")]
pub struct NoEmbedder {
    pub model: String,
    pub detail: String,
}

pub struct Embedder {
    client: Client,
    model: String,
    sched: Arc<Scheduler>,
    timeouts: Timeouts,
}

fn has_model(n: &Node, model: &str) -> bool {
    n.api == Api::Ollama && n.state().models.iter().any(|m| same_model(m, model))
}

/// The nodes of `candidates` that have `model`. Nodes whose models are not
/// known yet are asked (`/api/tags`) first; when none has it by what is known,
/// every node is asked once more, in case the model was pulled since.
pub async fn capable_nodes(
    client: &Client,
    candidates: &[Arc<Node>],
    model: &str,
) -> Vec<Arc<Node>> {
    let unknown: Vec<Arc<Node>> = candidates
        .iter()
        .filter(|n| n.state().models.is_empty())
        .cloned()
        .collect();
    probe_all(client, &unknown, false).await;
    let pick = || -> Vec<Arc<Node>> {
        candidates
            .iter()
            .filter(|n| n.available() && has_model(n, model))
            .cloned()
            .collect()
    };
    let found = pick();
    if !found.is_empty() || unknown.len() == candidates.len() {
        return found;
    }
    probe_all(client, candidates, false).await;
    pick()
}

/// A scheduler over the nodes that can embed. (At merge: the process-wide
/// scheduler with a filter for these nodes.)
fn scheduler_for(nodes: Vec<Arc<Node>>, capacity: impl Fn(&str) -> u32) -> Arc<Scheduler> {
    Scheduler::new(nodes, Policy::Pool, capacity)
}

/// Run one embedding request on a node the scheduler picks (with its retries).
async fn through_scheduler<T, F, Fut>(
    sched: &Arc<Scheduler>,
    label: &str,
    model: &str,
    attempt: F,
    notice: &(dyn Fn(String) + Sync),
) -> Result<(T, Attribution), TaskFailed>
where
    F: FnMut(Arc<Node>) -> Fut,
    Fut: Future<Output = Result<(T, Option<f64>), ClientError>>,
{
    sched.run(label, model, attempt, notice).await
}

impl Embedder {
    /// An embedder over `candidates`, or why there is none.
    pub async fn new(
        client: &Client,
        candidates: &[Arc<Node>],
        model: &str,
        capacity: impl Fn(&str) -> u32,
        total: Duration,
    ) -> Result<Embedder, NoEmbedder> {
        let nodes = capable_nodes(client, candidates, model).await;
        if nodes.is_empty() {
            let answering = candidates
                .iter()
                .filter(|n| n.state().health == crate::nodes::Health::Up)
                .count();
            let detail = if candidates.is_empty() {
                "no nodes are configured".to_string()
            } else {
                format!("{} node(s) asked, {answering} answering", candidates.len())
            };
            return Err(NoEmbedder {
                model: model.to_string(),
                detail,
            });
        }
        Ok(Embedder {
            client: client.clone(),
            model: model.to_string(),
            sched: scheduler_for(nodes, capacity),
            timeouts: Timeouts::generation(total),
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Physical hosts that can embed.
    pub fn hosts(&self) -> usize {
        self.sched.hosts()
    }

    /// Names of the nodes that can embed.
    pub fn node_names(&self) -> Vec<String> {
        self.sched
            .nodes()
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    /// Embed `inputs` in one request; the vectors and where they were made.
    pub async fn embed(
        &self,
        label: &str,
        inputs: &[String],
        notice: &(dyn Fn(String) + Sync),
    ) -> Result<(Vec<Vec<f32>>, Attribution), TaskFailed> {
        let model = self.model.as_str();
        let attempt = |node: Arc<Node>| async move {
            let v = self
                .client
                .embed(node.url(), model, inputs, self.timeouts)
                .await?;
            Ok((v, None))
        };
        through_scheduler(&self.sched, label, model, attempt, notice).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;
    use crate::sim::{SimConfig, SimHost};
    use std::net::{IpAddr, Ipv4Addr};

    fn node(url: String, host: &str) -> Arc<Node> {
        Arc::new(Node::new(
            NodeEntry {
                url,
                name: host.into(),
                priority: 0,
                host_id: Some(host.into()),
                extra: Default::default(),
            },
            false,
        ))
    }

    async fn host(models: &[&str]) -> Arc<SimHost> {
        let cfg = SimConfig {
            models: models.iter().map(|m| m.to_string()).collect(),
            embed_dims: 8,
            ..SimConfig::default()
        };
        SimHost::start("t", IpAddr::V4(Ipv4Addr::LOCALHOST), &[0], cfg)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_nodes_with_the_model_are_asked() {
        let with = host(&["mxbai-embed-large:latest"]).await;
        let without = host(&["llama3.2:latest"]).await;
        let nodes = vec![node(without.url(), "B"), node(with.url(), "A")];
        let client = Client::default();
        let e = Embedder::new(
            &client,
            &nodes,
            DEFAULT_MODEL,
            |_| 1,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(e.node_names(), ["A"]);
        let inputs: Vec<String> = (0..6).map(|i| format!("text {i}")).collect();
        for _ in 0..3 {
            let (v, a) = e.embed("q", &inputs, &|_| {}).await.unwrap();
            assert_eq!((v.len(), v[0].len(), a.node.as_str()), (6, 8, "A"));
        }
        assert_eq!(with.stats().embed_requests, 3);
        assert_eq!(without.stats().embed_requests, 0);
        let err = Embedder::new(
            &client,
            &nodes[..1],
            DEFAULT_MODEL,
            |_| 1,
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
        assert!(
            err.to_string().contains(
                "no node has the embedding model mxbai-embed-large (1 node(s) asked, 1 answering)"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failing_node_is_retried_on_another_host() {
        let bad = host(&["mxbai-embed-large:latest"]).await;
        bad.set_fault(crate::sim::Fault::Http500, 0);
        let good = host(&["mxbai-embed-large:latest"]).await;
        let nodes = vec![node(bad.url(), "A"), node(good.url(), "B")];
        let e = Embedder::new(
            &Client::default(),
            &nodes,
            DEFAULT_MODEL,
            |_| 1,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let said = std::sync::Mutex::new(Vec::new());
        let input = ["x".to_string()];
        for _ in 0..2 {
            let (_, a) = e
                .embed("q", &input, &|l| said.lock().unwrap().push(l))
                .await
                .unwrap();
            assert_eq!(a.node, "B");
        }
        assert!(bad.stats().embed_requests >= 1);
        let said = said.lock().unwrap();
        assert!(said[0].contains("q failed on A (HTTP 500"), "{said:?}");
    }
}
