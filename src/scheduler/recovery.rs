//! Cooling nodes coming back: a pick that finds a cooling node whose backoff
//! has passed (or, when a task has no other host left, one not probed in the
//! last second) asks for a re-probe; it runs in the background and a node
//! that answers rejoins the pool, every waiter looking again. A task whose
//! hosts are all cooling waits up to [`RECOVERY_WAIT`] for one to come back,
//! then gives up (`NoSlot::AllCooling`).
//!
//! The health view is shared with other instances here too: their coolings
//! and recoveries are merged in before a task takes a slot, and ours are
//! reported (`shared.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::pool::Pool;
use super::shared::NodeView;
use super::Scheduler;
use crate::nodes::state::{Transition, URGENT_EVERY};
use crate::nodes::{health, Node};

/// How long a task waits for a cooling host to be re-admitted when it has no
/// other host left, before it gives up.
pub(crate) const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// Probes a cooling node and records the outcome in its state; true when it
/// came back. The scheduler's asks the node over HTTP; tests bring their own.
pub(super) type Prober =
    Arc<dyn Fn(Arc<Scheduler>, Arc<Node>) -> BoxFuture<'static, bool> + Send + Sync>;

/// The node's own probe (`/api/tags`), with the slot table's word on whether
/// it is working.
pub(super) fn http_prober() -> Prober {
    Arc::new(
        |sched: Arc<Scheduler>, node: Arc<Node>| -> BoxFuture<'static, bool> {
            Box::pin(async move {
                health::probe(&sched.client, node, false, &*sched)
                    .await
                    .came_back
            })
        },
    )
}

impl Scheduler {
    /// Start the re-probes a pick asked for.
    pub(super) fn start_reprobes(self: &Arc<Self>, nodes: Vec<Arc<Node>>) {
        for n in nodes {
            self.reprobe(n);
        }
    }

    /// Probe a cooling node in the background; it rejoins the pool on success.
    fn reprobe(self: &Arc<Self>, node: Arc<Node>) {
        if tokio::runtime::Handle::try_current().is_err() {
            node.state().reprobe_ended();
            return;
        }
        let probe = (self.prober)(self.clone(), node.clone());
        let sched = self.clone();
        tokio::spawn(async move {
            let came_back = probe.await;
            node.state().reprobe_ended();
            if came_back {
                sched.share_recovery(&node);
                let health = node.state().health.word();
                sched.notify(format!(
                    "ℹ️  {} is answering again; back in the pool ({health})",
                    node.name()
                ));
            }
            sched.dispatch();
            sched.wake_recovering();
        });
    }

    /// One line when tasks start waiting for a cooling node to come back (not
    /// one per task, nor one per moment of the same outage).
    pub(super) fn say_recovering(&self, pool: &Pool, now: Instant) {
        {
            let mut slots = self.slots();
            if slots
                .said_recovering
                .is_some_and(|t| now.saturating_duration_since(t) < RECOVERY_WAIT)
            {
                return;
            }
            slots.said_recovering = Some(now);
        }
        let cooling: Vec<&str> = pool
            .nodes()
            .iter()
            .filter(|n| n.state().cooling())
            .map(|n| n.name())
            .collect();
        self.notify(format!(
            "⏳ Every node left is cooling down ({}); waiting up to {}s for one to come back",
            cooling.join(", "),
            RECOVERY_WAIT.as_secs()
        ));
    }

    /// What other instances know of the pool's nodes, merged into the local view.
    pub(super) async fn merge_shared_health(&self, pool: &Pool) {
        let health = self.shared().health;
        if !health.is_shared() {
            return;
        }
        let urls: Vec<String> = pool.nodes().iter().map(|n| n.url().to_string()).collect();
        let views = health.views(&urls).await;
        for n in pool.nodes() {
            match views.get(n.url()) {
                Some(NodeView::Cooling {
                    until, failures, ..
                }) => n.state().cool_until(*until, *failures),
                Some(NodeView::Recovered { ago, .. }) => {
                    n.state().recovered_elsewhere(*ago);
                }
                _ => {}
            }
        }
    }

    /// Tell other instances a node is cooling.
    pub(super) fn share_health(&self, node: &Node, transition: Transition) {
        if let Transition::Cooled(d) = transition {
            let (why, failures) = {
                let st = node.state();
                (
                    st.last_error().unwrap_or_default().to_string(),
                    st.consecutive_failures(),
                )
            };
            self.shared()
                .health
                .report_cooling(node.url(), d, failures, &why);
        }
    }

    /// Tell other instances a node answers again.
    pub(super) fn share_recovery(&self, node: &Node) {
        self.shared().health.report_recovered(node.url());
    }
}

/// When a waiter whose hosts are all recovering (since `since`) looks
/// again: when an early re-probe may run or the backoff ends (`due`), at
/// least 50 ms on, at most when the recovery wait is over.
pub(super) fn recovery_wake(due: Option<Instant>, now: Instant, since: Instant) -> Instant {
    let next_probe = now + URGENT_EVERY;
    due.unwrap_or(next_probe)
        .min(next_probe)
        .max(now + Duration::from_millis(50))
        .min(since + RECOVERY_WAIT)
}
