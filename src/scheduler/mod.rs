//! The host-aware work queue, one per process: every request (the shell's
//! queries, and any other client of this process) takes a slot on a physical
//! host first (default one request per host at a time).
//!
//! - `pool.rs`: the nodes a task may use ([`Pool`], [`Policy`]);
//! - `slots.rs`: the slot table, the only count of requests in flight;
//! - `rank.rs`: which free node is best for a task ([`rank::Rank`]: add a
//!   routing rule there, as a field);
//! - `pick.rs`: health first (a suspect node only when no healthy host can
//!   take the task soon, a cooling one not at all), then rank;
//! - `line.rs` and `acquire.rs`: a task that finds no free slot waits in one
//!   line; a freed slot goes straight to the first waiter that can use it,
//!   clients (API keys of the gateway) take turns, a pool may bound the line
//!   (back-pressure), and a waiter that is dropped leaves at once;
//! - `recovery.rs`: cooling nodes are re-probed (after their backoff, or
//!   early when a task has no other host left) and rejoin on success;
//! - `shared.rs`: the host rule and the health view kept together with other
//!   instances, behind traits this module owns ([`HostLeases`],
//!   [`HealthReports`]; Redis implements them);
//! - `task.rs`: one task on top of this: deadlines from the latency model,
//!   hedging, retries on hosts that have not failed the task;
//! - `blame.rs`: whose fault a failure is, the node's or the request's (the
//!   same error from two hosts), and which models are broken everywhere.
//!
//! Time is `tokio::time` throughout, so tests on a paused clock drive
//! back-off, recovery, patience and hedging.

mod acquire;
mod blame;
pub mod estimate;
mod line;
mod pick;
mod pool;
pub mod progress;
pub mod rank;
mod recovery;
pub mod shared;
mod slots;
mod task;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing_tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::time::Instant;

use crate::nodes::health::Load;
use crate::nodes::Node;
use crate::ollama::Client;
use line::Line;
use slots::SlotTable;

pub use acquire::{Lease, NoSlot};
pub(crate) use pool::{preferred, DEFAULT_PRIORITY};
pub use pool::{Policy, Pool};
pub use shared::{Alone, Claim, HealthReports, HostLeases, NodeView};
pub use task::{
    Attempt, AttemptKind, Attribution, FailedAttempt, Held, Measured, Task, TaskFailed,
};

/// What the scheduler did, for observers (the dashboard).
pub(crate) trait Events: Send + Sync {
    /// A task got a node, and why that one.
    fn picked(&self, _task: &str, _node: &Node, _reason: &str) {}
    /// An attempt on a node ended.
    fn finished(&self, _node: &Node, _seconds: f64, _ok: bool) {}
}

type NoticeFn = Arc<dyn Fn(String) + Send + Sync>;

/// The slot table and the line, under one lock.
#[derive(Default)]
struct Slots {
    table: SlotTable,
    /// Tasks waiting for a slot (hedges are started only when nobody waits).
    line: Line,
    /// When a task last said it waits for a cooling node (said once per episode).
    said_recovering: Option<Instant>,
}

/// What the host rule and the health view share with other instances.
#[derive(Clone)]
struct Shared {
    leases: Arc<dyn HostLeases>,
    health: Arc<dyn HealthReports>,
}

pub struct Scheduler {
    client: Client,
    shared: RwLock<Shared>,
    events: RwLock<Option<Arc<dyn Events>>>,
    /// Lines from background work (a re-probed node is back).
    notifier: RwLock<NoticeFn>,
    slots: Mutex<Slots>,
    /// How a cooling node is re-probed.
    prober: recovery::Prober,
    /// What is known of each model's requests (answered, broken everywhere).
    models: blame::Models,
}

impl Scheduler {
    pub fn new(client: Client) -> Arc<Scheduler> {
        Scheduler::with_prober(client, recovery::http_prober())
    }

    fn with_prober(client: Client, prober: recovery::Prober) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            client,
            shared: RwLock::new(Shared {
                leases: Arc::new(Alone),
                health: Arc::new(Alone),
            }),
            events: RwLock::new(None),
            notifier: RwLock::new(Arc::new(|_| {})),
            slots: Mutex::new(Slots::default()),
            prober,
            models: blame::Models::default(),
        })
    }

    /// The slot table and the line. A panic while they were locked would be
    /// a bug in this module; they are still used rather than fail every
    /// later request (the other locks here recover the same way).
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the host rule and the health view together with other instances
    /// through these (Redis); they fall back to local by themselves.
    pub fn share_through(
        &self,
        leases: impl HostLeases + 'static,
        health: impl HealthReports + 'static,
    ) {
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = Shared {
            leases: Arc::new(leases),
            health: Arc::new(health),
        };
    }

    fn shared(&self) -> Shared {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_events(&self, events: Option<Arc<dyn Events>>) {
        *self.events.write().unwrap_or_else(|e| e.into_inner()) = events;
    }

    fn events(&self) -> Option<Arc<dyn Events>> {
        self.events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where lines from background work go.
    pub(crate) fn set_notifier(&self, f: impl Fn(String) + Send + Sync + 'static) {
        *self.notifier.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
    }

    fn notify(&self, line: String) {
        let f = self
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        f(line);
    }

    /// Requests a host takes at once: `per_host` where given, else `default`.
    pub fn set_capacities(self: &Arc<Self>, default: u32, per_host: HashMap<String, u32>) {
        self.slots().table.set_capacities(default, per_host);
        self.dispatch();
    }

    /// Set one host's capacity (the coordinator's slot count).
    pub(crate) fn set_capacity(self: &Arc<Self>, host: &str, n: u32) {
        self.slots().table.set_capacity(host, n);
        self.dispatch();
    }

    pub fn capacity(&self, host: &str) -> u32 {
        self.slots().table.capacity(host)
    }

    /// Requests in flight on a host right now.
    pub fn in_flight(&self, host: &str) -> u32 {
        self.slots().table.on_host(host)
    }

    /// Requests in flight on a node right now.
    pub fn in_flight_on(&self, node: &Node) -> u32 {
        self.slots().table.on_node(node)
    }

    /// Tasks waiting for a slot right now.
    pub fn queue_depth(&self) -> usize {
        self.slots().line.waiters.len()
    }

    /// Tasks waiting for a slot, by client (`None`: the shell and unnamed clients).
    pub(crate) fn queue_by_client(&self) -> Vec<(Option<Arc<str>>, usize)> {
        let slots = self.slots();
        let mut out: Vec<(Option<Arc<str>>, usize)> = Vec::new();
        for w in &slots.line.waiters {
            match out.iter_mut().find(|(c, _)| *c == w.client) {
                Some((_, n)) => *n += 1,
                None => out.push((w.client.clone(), 1)),
            }
        }
        out
    }
}

/// The slot table answers how busy a node is (for the probes' busy rule and
/// the dashboard).
impl Load for Scheduler {
    fn in_flight(&self, node: &Node) -> u32 {
        self.in_flight_on(node)
    }
}
