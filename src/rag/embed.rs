//! Embeddings through the cluster: only nodes whose `/api/tags` lists the
//! embedding model are asked, and each request goes through the process-wide
//! host-aware scheduler (one request per physical host at a time, retries on
//! other hosts). Every use of the scheduler is in `through_scheduler`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::nodes::health::{probe_all, Load};
use crate::nodes::{Api, Node};
use crate::ollama::types::same_model;
use crate::ollama::{Client, ClientError, Timeouts};
use crate::scheduler::{Attempt, Attribution, Measured, Policy, Pool, Scheduler, Task, TaskFailed};

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
    pool: Pool,
    limits: Timeouts,
}

/// Known to have the model (an unknown model list does not count here).
fn has_model(n: &Node, model: &str) -> bool {
    n.api == Api::Ollama && n.state().models.iter().any(|m| same_model(m, model))
}

/// The nodes of `candidates` that have `model`. Nodes whose models are not
/// known yet are asked (`/api/tags`) first; when none has it by what is known,
/// every node is asked once more, in case the model was pulled since. `load`
/// tells the probes which nodes are working.
pub(crate) async fn capable_nodes(
    client: &Client,
    load: &dyn Load,
    candidates: &[Arc<Node>],
    model: &str,
) -> Vec<Arc<Node>> {
    let unknown: Vec<Arc<Node>> = candidates
        .iter()
        .filter(|n| n.state().models.is_empty())
        .cloned()
        .collect();
    probe_all(client, &unknown, false, load).await;
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
    probe_all(client, candidates, false, load).await;
    pick()
}

/// Run one embedding request on a node the scheduler picks (with its retries
/// on other hosts). An embedding reply is not streamed, so the attempt is
/// marked as started at once (the scheduler's hedging, which watches streamed
/// tokens, leaves it alone) and gets the task's own limits rather than a
/// first-token deadline learnt from chat replies.
#[allow(clippy::too_many_arguments)]
async fn through_scheduler<T, F, Fut>(
    sched: &Arc<Scheduler>,
    pool: &Pool,
    label: &str,
    model: &str,
    prompt_tokens: usize,
    limits: Timeouts,
    mut attempt: F,
    notice: &(dyn Fn(String) + Sync),
) -> Result<(T, Attribution), TaskFailed>
where
    F: FnMut(Arc<Node>, Timeouts) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let task = Task {
        label,
        model,
        prompt_tokens,
        limits,
        own_bound: false,
    };
    sched
        .run(
            pool,
            &task,
            |a: Attempt| {
                a.progress.piece("");
                let t = Timeouts::new(limits.connect, a.timeouts.total, a.timeouts.total);
                let fut = attempt(a.node, t);
                async move { fut.await.map(|v| (v, Measured::default())) }
            },
            notice,
        )
        .await
}

impl Embedder {
    /// An embedder over the nodes of `candidates` that have `model`, or why
    /// there is none. `total` bounds one request, retries included.
    pub async fn new(
        client: &Client,
        sched: Arc<Scheduler>,
        candidates: &[Arc<Node>],
        model: &str,
        total: Duration,
    ) -> Result<Embedder, NoEmbedder> {
        let nodes = capable_nodes(client, &*sched, candidates, model).await;
        if nodes.is_empty() {
            let answering = candidates
                .iter()
                .filter(|n| n.state().health.is_up())
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
            sched,
            pool: Pool::new(nodes, Policy::Pool),
            limits: Timeouts::new(Duration::from_secs(3), total, total),
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Physical hosts that can embed.
    pub fn hosts(&self) -> usize {
        self.pool.hosts()
    }

    /// Names of the nodes that can embed.
    #[cfg(test)]
    fn node_names(&self) -> Vec<String> {
        self.pool
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
        let tokens = inputs.iter().map(String::len).sum::<usize>() / 4;
        let attempt = |node: Arc<Node>, t: Timeouts| async move {
            self.client.embed(node.url(), model, inputs, t).await
        };
        through_scheduler(
            &self.sched,
            &self.pool,
            label,
            model,
            tokens,
            self.limits,
            attempt,
            notice,
        )
        .await
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
        let sched = Scheduler::new(client.clone());
        let e = Embedder::new(
            &client,
            sched.clone(),
            &nodes,
            crate::config::settings::RAG_MODEL,
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
            sched,
            &nodes[..1],
            crate::config::settings::RAG_MODEL,
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
        let client = Client::default();
        let e = Embedder::new(
            &client,
            Scheduler::new(client.clone()),
            &nodes,
            crate::config::settings::RAG_MODEL,
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
