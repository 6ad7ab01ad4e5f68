//! Probing a large registry without making the shell wait. Up to
//! [`EAGER_LIMIT`] nodes, `status` and `nodes` probe every node before they
//! answer, all at once, as they always have. Above it (a node file of
//! thousands of entries), start-up starts one round of probes in the
//! background, [`AT_ONCE`] nodes at a time, and says so; `status` and `nodes`
//! then answer at once with what is known so far (starting another round when
//! the last one has finished), and `health`, which is asked to probe, probes
//! every node [`AT_ONCE`] at a time and waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tokio::task::JoinHandle;

use super::{App, Sink};
use crate::nodes::health::{probe, probe_all, Load, ProbeResult};
use crate::nodes::Node;
use crate::ollama::Client;
use crate::scheduler::Scheduler;

/// The most nodes `status` and `nodes` probe before they answer.
pub(crate) const EAGER_LIMIT: usize = 256;
/// Probes in flight at once when a registry is larger than `EAGER_LIMIT`.
pub(crate) const AT_ONCE: usize = 64;

/// One round of probes running in the background.
pub(crate) struct BackgroundProbe {
    total: usize,
    done: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl BackgroundProbe {
    fn start(client: Client, sched: Arc<Scheduler>, nodes: Vec<Arc<Node>>) -> BackgroundProbe {
        let done = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        let total = nodes.len();
        let task = tokio::spawn(async move {
            stream::iter(nodes)
                .map(|n| probe(&client, n, false, &*sched))
                .buffer_unordered(AT_ONCE)
                .for_each(|_| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    std::future::ready(())
                })
                .await;
        });
        BackgroundProbe { total, done, task }
    }

    fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// "probing 130000 nodes in the background (1200 probed so far)".
    fn progress(&self) -> String {
        format!(
            "probing {} nodes in the background ({} probed so far, {AT_ONCE} at a time)",
            self.total,
            self.done.load(Ordering::Relaxed)
        )
    }
}

impl Drop for BackgroundProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Probe `nodes`, at most [`AT_ONCE`] at a time, in their order.
pub(crate) async fn probe_bounded(
    client: &Client,
    nodes: &[Arc<Node>],
    with_ps: bool,
    load: &dyn Load,
) -> Vec<ProbeResult> {
    if nodes.len() <= EAGER_LIMIT {
        return probe_all(client, nodes, with_ps, load).await;
    }
    stream::iter(nodes.iter().cloned())
        .map(|n| probe(client, n, with_ps, load))
        .buffered(AT_ONCE)
        .collect()
        .await
}

impl App {
    /// At start-up: a registry larger than [`EAGER_LIMIT`] starts being
    /// probed in the background, with a line saying so. Smaller ones are
    /// probed by the commands that show them, as before.
    pub fn probe_in_background_if_large(&mut self, sink: &mut dyn Sink) {
        if self.cluster.registry.len() > EAGER_LIMIT {
            self.start_background_probe();
            sink.err(&format!(
                "ℹ️  probing {} nodes in the background, {AT_ONCE} at a time: the shell does not wait for it; `status` and `nodes` show what is known so far",
                self.cluster.registry.len()
            ));
        }
    }

    /// Start a round of probes of every registered node; its progress line.
    fn start_background_probe(&mut self) -> String {
        let nodes = self.cluster.registry.nodes().to_vec();
        let p = BackgroundProbe::start(
            self.cluster.client.clone(),
            self.cluster.sched.clone(),
            nodes,
        );
        let line = p.progress();
        self.cluster.probing = Some(p);
        line
    }

    /// Before `status` or `nodes` show health: probe `nodes` and wait when
    /// there are at most [`EAGER_LIMIT`] of them; else say how far the
    /// background probing is (starting a new round when the last one ended)
    /// and do not wait.
    pub(super) async fn probe_for_view(
        &mut self,
        nodes: &[Arc<Node>],
        with_ps: bool,
        sink: &mut dyn Sink,
    ) -> Option<Vec<ProbeResult>> {
        if self.cluster.registry.len() <= EAGER_LIMIT {
            return Some(
                probe_all(&self.cluster.client, nodes, with_ps, &*self.cluster.sched).await,
            );
        }
        let running = self.cluster.probing.as_ref().filter(|p| !p.finished());
        let line = match running {
            Some(p) => p.progress(),
            None => self.start_background_probe(),
        };
        sink.err(&format!(
            "ℹ️  {line}; what follows is what is known so far (`health` probes every node and waits)"
        ));
        None
    }
}
