//! The host-aware work queue, one per process: every request (the shell's
//! queries, and any other client of this process) takes a slot on a physical
//! host first (default one request per host at a time). Among the nodes with a
//! free slot it prefers a healthy one, then one that has the model, then one
//! with it loaded, then the lowest priority number, then the fewest requests in
//! flight, then the lowest recent latency. A suspect node is picked only when
//! no healthy host can take the task soon; a cooling node not at all until a
//! re-probe (started here when its backoff has passed) succeeds.
//!
//! A task that finds no free slot waits in one line (`queue.rs`): a freed slot
//! goes straight to the first waiter that can use it, clients (API keys of the
//! gateway) take turns, and a pool may bound the line (back-pressure). A waiter
//! that is dropped (its client went away) leaves the line at once.
//!
//! `task.rs` runs one task on top of this: deadlines from the latency model,
//! hedging, retries on hosts that have not failed the task.

pub mod estimate;
pub mod progress;
mod queue;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::nodes::{health, Health, Node};
use crate::ollama::types::same_model;
use crate::ollama::Client;
use crate::redis::{NodeView, RemoteLease, SharedHealth, SharedLeases};
use queue::{Queue, WaitState, Waiter};

pub use task::{
    Attempt, AttemptKind, Attribution, FailedAttempt, Held, Measured, Task, TaskFailed,
};

/// How long a task waits for a cooling host to be re-admitted when it has no
/// other host left, before it gives up.
pub(crate) const RECOVERY_WAIT: Duration = Duration::from_secs(10);
/// How long a task waits for a healthy host before it takes a suspect one,
/// when nothing has been measured yet.
pub(crate) const PRIOR_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any node in the pool, per the preference order above.
    Pool,
    /// Always the one preferred node.
    Single,
    /// Like Pool, but a node with the model in VRAM comes first.
    Gpu,
}

/// The priority of a task that names none (an agent file without one, a gateway request).
pub(crate) const DEFAULT_PRIORITY: i32 = 5;

/// The nodes one query (or request) may use, how to choose among them, and on
/// whose behalf it waits.
#[derive(Clone)]
pub struct Pool {
    nodes: Vec<Arc<Node>>,
    pub policy: Policy,
    /// The client asking (waiters of different clients take turns).
    client: Option<Arc<str>>,
    /// A task refuses to wait when this many tasks already wait.
    queue_limit: Option<usize>,
    /// Among one client's waiting tasks, a higher priority takes a freed slot
    /// first (an agent's `priority`; equal priorities keep arrival order).
    pub priority: i32,
}

impl Pool {
    pub fn new(nodes: Vec<Arc<Node>>, policy: Policy) -> Pool {
        let nodes = match policy {
            Policy::Single => preferred(&nodes).into_iter().collect(),
            _ => nodes,
        };
        Pool {
            nodes,
            policy,
            client: None,
            queue_limit: None,
            priority: DEFAULT_PRIORITY,
        }
    }

    /// The same pool (client, queue limit, priority) over fewer nodes.
    pub(crate) fn narrowed(&self, nodes: Vec<Arc<Node>>) -> Pool {
        Pool {
            nodes,
            ..self.clone()
        }
    }

    /// Tasks of this pool wait with `priority` (see `Pool::priority`).
    pub(crate) fn with_priority(mut self, priority: i32) -> Pool {
        self.priority = priority;
        self
    }

    /// Wait on behalf of `client`: when several clients wait, they take turns.
    pub(crate) fn for_client(mut self, client: Option<Arc<str>>) -> Pool {
        self.client = client;
        self
    }

    /// A task of this pool that would have to wait while `limit` tasks already
    /// wait fails at once with `NoSlot::QueueFull` (its retries never do).
    pub(crate) fn with_queue_limit(mut self, limit: usize) -> Pool {
        self.queue_limit = Some(limit);
        self
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Distinct physical hosts in the pool.
    pub fn hosts(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.host.as_str())
            .collect::<HashSet<_>>()
            .len()
    }
}

/// What the scheduler did, for observers (the dashboard).
pub(crate) trait Events: Send + Sync {
    /// A task got a node, and why that one.
    fn picked(&self, _task: &str, _node: &Node, _reason: &str) {}
    /// An attempt on a node ended.
    fn finished(&self, _node: &Node, _seconds: f64, _ok: bool) {}
}

#[derive(Default)]
struct Counts {
    in_flight: HashMap<String, u32>,
    capacity: HashMap<String, u32>,
    default_capacity: u32,
}

#[derive(Default)]
struct Slots {
    counts: Counts,
    /// Tasks waiting for a slot (hedges are started only when nobody waits).
    queue: Queue,
    /// When a task last said it waits for a cooling node (said once per episode).
    said_recovering: Option<Instant>,
}

impl Counts {
    fn capacity(&self, host: &str) -> u32 {
        self.capacity
            .get(host)
            .copied()
            .unwrap_or(self.default_capacity)
            .max(1)
    }

    fn free(&self, host: &str) -> bool {
        self.in_flight.get(host).copied().unwrap_or(0) < self.capacity(host)
    }
}

type NoticeFn = Arc<dyn Fn(String) + Send + Sync>;

pub struct Scheduler {
    client: Client,
    shared: RwLock<Shared>,
    events: RwLock<Option<Arc<dyn Events>>>,
    /// Lines from background work (a re-probed node is back).
    notifier: RwLock<NoticeFn>,
    slots: Mutex<Slots>,
}

/// A slot on a node's host; dropping it frees the slot (here, and in Redis
/// when the host rule is shared) and hands it to the first waiting task that
/// can use it.
pub struct Lease {
    pub node: Arc<Node>,
    /// How long the task waited in line for this slot.
    pub waited: Duration,
    sched: Arc<Scheduler>,
    /// The same slot counted across instances (Redis on).
    _shared: Option<RemoteLease>,
}

/// What the host rule and the health view share with other instances (Redis);
/// local-only stand-ins when Redis is off.
#[derive(Clone)]
struct Shared {
    leases: SharedLeases,
    health: SharedHealth,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.sched.release(&self.node);
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Every host of the pool has failed this task (or the pool is empty).
    NoUsableHost,
    /// The hosts left are cooling down and none came back in time.
    AllCooling,
    /// The task's deadline passed while it waited.
    Deadline,
    /// Too many tasks wait already (the pool's queue limit).
    QueueFull,
}

impl std::fmt::Display for NoSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoSlot::NoUsableHost => "no node is available",
            NoSlot::AllCooling => {
                "every node left is cooling down after failures and none came back in time"
            }
            NoSlot::Deadline => "the agent timeout passed while waiting for a free host",
            NoSlot::QueueFull => "too many requests are waiting for a free host",
        })
    }
}

enum Pick {
    Got(Arc<Node>),
    /// Every host has a request in flight: wait for a slot.
    Wait,
    /// Only cooling hosts are left; the earliest re-probe is due then.
    Recovering(Option<Instant>),
    Nobody,
}

/// Takes a waiter out of the line however its wait ends (even when its future
/// is dropped); a slot granted to it but not picked up goes to the next one.
struct InLine<'a> {
    sched: &'a Arc<Scheduler>,
    id: u64,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let left = self.sched.slots().queue.remove(self.id);
        if let Some(Waiter {
            state: WaitState::Granted(node),
            ..
        }) = left
        {
            self.sched.release(&node);
        }
    }
}

impl Scheduler {
    pub fn new(client: Client) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            client,
            shared: RwLock::new(Shared {
                leases: SharedLeases::local(),
                health: SharedHealth::local(),
            }),
            events: RwLock::new(None),
            notifier: RwLock::new(Arc::new(|_| {})),
            slots: Mutex::new(Slots {
                counts: Counts {
                    default_capacity: 1,
                    ..Default::default()
                },
                ..Default::default()
            }),
        })
    }

    /// The slot table. A panic while it was locked would be a bug in this
    /// module; the table is still used rather than fail every later request
    /// (the other locks here recover the same way).
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the host rule and the health view together with other instances
    /// through these (Redis); they fall back to local by themselves.
    pub fn share_through(&self, leases: SharedLeases, health: SharedHealth) {
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = Shared { leases, health };
    }

    fn shared(&self) -> Shared {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The host's slot across instances: `Ok(None)` when the rule is local
    /// (Redis off or away), `Err(())` when other instances hold every slot.
    async fn claim_shared(&self, node: &Node) -> Result<Option<RemoteLease>, ()> {
        let leases = self.shared().leases;
        if !leases.is_shared() {
            return Ok(None);
        }
        match leases
            .try_acquire(&node.host, self.capacity(&node.host))
            .await
        {
            Some(l) => Ok(Some(l)),
            None => Err(()),
        }
    }

    /// What other instances know of the pool's nodes, merged into the local view.
    async fn merge_shared_health(&self, pool: &Pool) {
        let Shared { leases, health } = self.shared();
        if !leases.is_shared() {
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

    /// Tell other instances a node is cooling, or answers again.
    fn share_health(&self, node: &Node, transition: crate::nodes::state::Transition) {
        if let crate::nodes::state::Transition::Cooled(d) = transition {
            let (why, failures) = {
                let st = node.state();
                (
                    st.last_error.clone().unwrap_or_default(),
                    st.consecutive_failures,
                )
            };
            self.shared()
                .health
                .report_cooling(node.url(), d, failures, &why);
        }
    }

    fn share_recovery(&self, node: &Node) {
        self.shared().health.report_recovered(node.url());
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
        {
            let mut slots = self.slots();
            slots.counts.default_capacity = default.max(1);
            slots.counts.capacity = per_host;
        }
        self.dispatch();
    }

    /// Set one host's capacity (the coordinator's slot count).
    pub(crate) fn set_capacity(self: &Arc<Self>, host: &str, n: u32) {
        self.slots()
            .counts
            .capacity
            .insert(host.to_string(), n.max(1));
        self.dispatch();
    }

    pub fn capacity(&self, host: &str) -> u32 {
        self.slots().counts.capacity(host)
    }

    /// Requests in flight on a host right now.
    pub fn in_flight(&self, host: &str) -> u32 {
        self.slots()
            .counts
            .in_flight
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    /// Tasks waiting for a slot right now.
    pub fn queue_depth(&self) -> usize {
        self.slots().queue.waiters.len()
    }

    /// Tasks waiting for a slot, by client (`None`: the shell and unnamed clients).
    pub(crate) fn queue_by_client(&self) -> Vec<(Option<Arc<str>>, usize)> {
        let slots = self.slots();
        let mut out: Vec<(Option<Arc<str>>, usize)> = Vec::new();
        for w in &slots.queue.waiters {
            match out.iter_mut().find(|(c, _)| *c == w.client) {
                Some((_, n)) => *n += 1,
                None => out.push((w.client.clone(), 1)),
            }
        }
        out
    }

    fn waiting(&self) -> usize {
        self.queue_depth()
    }

    /// A slot on `node`'s host is free again: count it and hand it on.
    fn release(self: &Arc<Self>, node: &Arc<Node>) {
        {
            let mut slots = self.slots();
            if let Some(n) = slots.counts.in_flight.get_mut(&node.host) {
                *n = n.saturating_sub(1);
            }
        }
        {
            let mut st = node.state();
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        self.dispatch();
    }

    /// Hand free slots to waiters, in fair order; wake those whose state changed.
    fn dispatch(self: &Arc<Self>) {
        let mut reprobes = Vec::new();
        let mut wake = Vec::new();
        {
            let mut guard = self.slots();
            let slots = &mut *guard;
            if slots.queue.waiters.is_empty() {
                return;
            }
            let now = Instant::now();
            for i in slots.queue.fair_order() {
                let w = &slots.queue.waiters[i];
                if matches!(w.state, WaitState::Granted(_) | WaitState::Nobody) {
                    continue;
                }
                if !w.pool.nodes.iter().any(|n| slots.counts.free(&n.host))
                    && matches!(w.state, WaitState::Waiting)
                {
                    continue;
                }
                let pick = pick(
                    &mut slots.counts,
                    &w.pool,
                    &w.model,
                    &w.excluded,
                    &w.busy_elsewhere,
                    now >= w.patience_at,
                    &mut reprobes,
                );
                let w = &mut slots.queue.waiters[i];
                let state = match pick {
                    Pick::Got(node) => WaitState::Granted(node),
                    Pick::Wait => WaitState::Waiting,
                    Pick::Nobody => WaitState::Nobody,
                    Pick::Recovering(due) => WaitState::Recovering(due),
                };
                let changed = std::mem::discriminant(&state) != std::mem::discriminant(&w.state);
                w.state = state;
                if changed {
                    wake.push(w.wake.clone());
                }
                if matches!(w.state, WaitState::Granted(_)) {
                    let client = w.client.clone();
                    slots.queue.served(client);
                }
            }
        }
        for n in reprobes {
            self.reprobe(n);
        }
        for w in wake {
            w.notify_one();
        }
    }

    /// Wait for a slot on the best node of `pool` for `model`, on a host not in
    /// `excluded`, until `deadline`; waiting in line behind earlier tasks (and
    /// failing at once with `QueueFull` when the pool's queue limit is reached).
    pub async fn acquire(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        deadline: Instant,
    ) -> Result<Lease, NoSlot> {
        self.acquire_with(pool, model, excluded, deadline, true)
            .await
    }

    /// `acquire`; `bounded` false lets an admitted task's retries wait however
    /// long the line is.
    async fn acquire_with(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        deadline: Instant,
        bounded: bool,
    ) -> Result<Lease, NoSlot> {
        let began = Instant::now();
        self.merge_shared_health(pool).await;
        let patience_at = began + self.patience(pool);
        let mut rel = Releases::of(self.shared().leases);
        // A host whose every slot another instance holds (Redis) counts as
        // busy for this task until a release is seen.
        let mut busy_elsewhere: HashSet<String> = HashSet::new();
        // Nobody is in line: take a free slot at once.
        let at_once = self.take_at_once(pool, model, excluded, &mut busy_elsewhere, &mut rel);
        if let Some(lease) = at_once.await? {
            return Ok(lease);
        }
        let wake = Arc::new(Notify::new());
        let waiter = Waiter::new(pool, model, excluded, busy_elsewhere, patience_at, &wake);
        let id = self.join_line(waiter, bounded)?;
        let in_line = InLine { sched: self, id };
        self.dispatch();
        let mut recovering_since: Option<Instant> = None;
        loop {
            let state = self.wait_state(id);
            let now = Instant::now();
            let wake_at = match state {
                WaitState::Granted(node) => {
                    let Ok(shared) = self.claim_granted(id, &node, &mut rel).await else {
                        continue;
                    };
                    // Picked up: out of the line without giving the slot back.
                    self.slots().queue.remove(id);
                    std::mem::forget(in_line);
                    return Ok(Lease {
                        node,
                        waited: began.elapsed(),
                        sched: self.clone(),
                        _shared: shared,
                    });
                }
                WaitState::Nobody => return Err(NoSlot::NoUsableHost),
                WaitState::Recovering(due) => {
                    if recovering_since.is_none() {
                        self.say_recovering(pool, now);
                    }
                    let since = *recovering_since.get_or_insert(now);
                    if now >= since + RECOVERY_WAIT {
                        return Err(NoSlot::AllCooling);
                    }
                    recovery_wake(due, now, since)
                }
                WaitState::Waiting => {
                    recovering_since = None;
                    if now < patience_at {
                        patience_at
                    } else {
                        now + Duration::from_secs(3600)
                    }
                }
            };
            if now >= deadline {
                return Err(NoSlot::Deadline);
            }
            if rel
                .wait(&wake, wake_at.min(deadline), || self.dispatch())
                .await
            {
                self.look_again(id);
            }
        }
    }

    /// With nobody in line, a free slot at once. None when the task must
    /// queue: others wait, no slot is free, or other instances hold every
    /// slot of the host picked (it joins `busy_elsewhere`). No usable host
    /// is an error.
    async fn take_at_once(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        busy_elsewhere: &mut HashSet<String>,
        rel: &mut Releases,
    ) -> Result<Option<Lease>, NoSlot> {
        match self.pick_at_once(pool, model, excluded, busy_elsewhere) {
            Some(Pick::Got(node)) => {
                let seen = rel.seen();
                match self.claim_shared(&node).await {
                    Ok(shared) => Ok(Some(Lease {
                        node,
                        waited: Duration::ZERO,
                        sched: self.clone(),
                        _shared: shared,
                    })),
                    Err(()) => {
                        self.release(&node);
                        busy_elsewhere.insert(node.host.clone());
                        rel.refused(seen);
                        Ok(None)
                    }
                }
            }
            Some(Pick::Nobody) => Err(NoSlot::NoUsableHost),
            _ => Ok(None),
        }
    }

    /// With nobody in line, a pick from `pool` at once (None when others
    /// wait: the newcomer queues behind them).
    fn pick_at_once(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        busy_elsewhere: &HashSet<String>,
    ) -> Option<Pick> {
        let mut reprobes = Vec::new();
        let picked = {
            let mut guard = self.slots();
            let slots = &mut *guard;
            slots.queue.waiters.is_empty().then(|| {
                pick(
                    &mut slots.counts,
                    pool,
                    model,
                    excluded,
                    busy_elsewhere,
                    false,
                    &mut reprobes,
                )
            })
        };
        for n in reprobes {
            self.reprobe(n);
        }
        picked
    }

    /// Waiter `id` was granted a slot on `node`: claim the host's shared
    /// lease (Redis). When other instances hold every slot of that host, the
    /// waiter waits again, counting it busy until a release, and the local
    /// slot is handed on.
    async fn claim_granted(
        self: &Arc<Self>,
        id: u64,
        node: &Arc<Node>,
        rel: &mut Releases,
    ) -> Result<Option<RemoteLease>, ()> {
        let seen = rel.seen();
        let claimed = self.claim_shared(node).await;
        if claimed.is_err() {
            self.refused_in_line(id, node);
            rel.refused(seen);
            self.release(node);
        }
        claimed
    }

    /// Take a place in line; its id. No usable host in the waiter's pool, or
    /// (when `bounded`) a line as long as the pool's queue limit, is refused.
    fn join_line(&self, w: Waiter, bounded: bool) -> Result<u64, NoSlot> {
        let mut slots = self.slots();
        if candidates(&w.pool, &w.model, &w.excluded).is_empty() {
            return Err(NoSlot::NoUsableHost);
        }
        if bounded
            && w.pool
                .queue_limit
                .is_some_and(|l| slots.queue.waiters.len() >= l)
        {
            return Err(NoSlot::QueueFull);
        }
        Ok(slots.queue.push(w))
    }

    /// Where waiter `id` stands (Nobody once it has left the line).
    fn wait_state(&self, id: u64) -> WaitState {
        let slots = self.slots();
        match slots.queue.position(id) {
            Some(i) => slots.queue.waiters[i].state.clone(),
            None => WaitState::Nobody,
        }
    }

    /// Other instances hold every slot of `node`'s host: waiter `id` waits
    /// again, counting that host busy until a release (the caller hands the
    /// local slot on).
    fn refused_in_line(&self, id: u64, node: &Node) {
        let mut slots = self.slots();
        if let Some(i) = slots.queue.position(id) {
            let w = &mut slots.queue.waiters[i];
            w.state = WaitState::Waiting;
            w.busy_elsewhere.insert(node.host.clone());
        }
    }

    /// Waiter `id` may use every host again (a slot was released somewhere):
    /// forget which were busy elsewhere and hand out slots.
    fn look_again(self: &Arc<Self>, id: u64) {
        {
            let mut slots = self.slots();
            if let Some(i) = slots.queue.position(id) {
                slots.queue.waiters[i].busy_elsewhere.clear();
            }
        }
        self.dispatch();
    }

    /// A slot on a free, healthy host other than `busy` and the `excluded`
    /// ones, for a hedge — only when no task is waiting for a slot.
    async fn take_idle(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
    ) -> Option<Lease> {
        if self.waiting() > 0 {
            return None;
        }
        let best = {
            let mut slots = self.slots();
            let best = candidates(pool, model, excluded)
                .into_iter()
                .filter(|n| {
                    let h = n.state().health;
                    !matches!(h, Health::Cooling | Health::Suspect) && slots.counts.free(&n.host)
                })
                .min_by(|a, b| cmp_rank(a, b, model, pool.policy))?;
            take(&mut slots.counts, &best);
            best
        };
        match self.claim_shared(&best).await {
            Ok(shared) => Some(Lease {
                node: best,
                waited: Duration::ZERO,
                sched: self.clone(),
                _shared: shared,
            }),
            Err(()) => {
                self.release(&best);
                None
            }
        }
    }

    #[cfg(test)]
    fn try_take(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        patience_over: bool,
    ) -> Pick {
        let mut reprobes = Vec::new();
        let p = pick(
            &mut self.slots().counts,
            pool,
            model,
            excluded,
            &HashSet::new(),
            patience_over,
            &mut reprobes,
        );
        for n in reprobes {
            self.reprobe(n);
        }
        p
    }

    /// One line when tasks start waiting for a cooling node to come back (not
    /// one per task, nor one per moment of the same outage).
    fn say_recovering(&self, pool: &Pool, now: Instant) {
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

    /// Probe a cooling node in the background; it rejoins the pool on success.
    fn reprobe(self: &Arc<Self>, node: Arc<Node>) {
        if tokio::runtime::Handle::try_current().is_err() {
            node.state().reprobing = false;
            return;
        }
        {
            let mut st = node.state();
            st.reprobing = true;
            st.reprobed_at = Some(Instant::now());
        }
        let sched = self.clone();
        tokio::spawn(async move {
            let r = health::probe(&sched.client, node.clone(), false).await;
            node.state().reprobing = false;
            if r.came_back {
                sched.share_recovery(&node);
                let health = node.state().health.word();
                sched.notify(format!(
                    "ℹ️  {} is answering again; back in the pool ({health})",
                    node.name()
                ));
            }
            sched.dispatch();
        });
    }

    /// How long a task waits for a healthy host before taking a suspect one:
    /// about one usual request on the pool's nodes.
    fn patience(&self, pool: &Pool) -> Duration {
        estimate::ClusterView::of(pool.nodes())
            .request_ms
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .unwrap_or(PRIOR_PATIENCE)
            .clamp(Duration::from_millis(200), Duration::from_secs(60))
    }

    /// Why `node` was a good choice for `model`, in words.
    fn reason(&self, node: &Node, model: &str, pool: &Pool, excluded: &HashSet<String>) -> String {
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
}

fn take(counts: &mut Counts, node: &Arc<Node>) {
    *counts.in_flight.entry(node.host.clone()).or_insert(0) += 1;
    node.state().in_flight += 1;
}

/// The best node of `pool` with a free slot for `model` (taken), or why there
/// is none. `busy_elsewhere` hosts count as having no free slot (other
/// instances hold them). Cooling nodes whose re-probe is due are added to `reprobes`.
fn pick(
    counts: &mut Counts,
    pool: &Pool,
    model: &str,
    excluded: &HashSet<String>,
    busy_elsewhere: &HashSet<String>,
    patience_over: bool,
    reprobes: &mut Vec<Arc<Node>>,
) -> Pick {
    let now = Instant::now();
    let all = candidates(pool, model, excluded);
    if all.is_empty() {
        return Pick::Nobody;
    }
    let (cooling, usable): (Vec<_>, Vec<_>) = all.into_iter().partition(|n| n.state().cooling());
    for n in &cooling {
        let mut st = n.state();
        // With no other host left, a cooling node is probed before its backoff ends.
        let due = if usable.is_empty() {
            st.urgent_reprobe_due(now)
        } else {
            st.reprobe_due(now)
        };
        if due {
            // Marked here so a second pick does not start a second probe.
            st.reprobing = true;
            reprobes.push(n.clone());
        }
    }
    if usable.is_empty() {
        let due = cooling
            .iter()
            .filter_map(|n| n.state().cooldown_until)
            .min();
        return Pick::Recovering(due);
    }
    let all_suspect = usable.iter().all(|n| n.state().health == Health::Suspect);
    let free: Vec<&Arc<Node>> = usable
        .iter()
        .filter(|n| counts.free(&n.host) && !busy_elsewhere.contains(&n.host))
        .collect();
    let trusted = free
        .iter()
        .filter(|n| n.state().health != Health::Suspect)
        .min_by(|a, b| cmp_rank(a, b, model, pool.policy));
    let best = match trusted {
        Some(n) => (*n).clone(),
        None if patience_over || all_suspect => match free
            .iter()
            .min_by(|a, b| cmp_rank(a, b, model, pool.policy))
        {
            Some(n) => (*n).clone(),
            None => return Pick::Wait,
        },
        None => return Pick::Wait,
    };
    take(counts, &best);
    Pick::Got(best)
}

/// What a waiter knows of slots released by other instances (Redis): a host
/// whose every slot they held is looked at again after a release.
struct Releases {
    leases: SharedLeases,
    released: tokio::sync::watch::Receiver<u64>,
    /// The release count seen before the first refusal since the last look.
    refused_at: Option<u64>,
}

impl Releases {
    fn of(leases: SharedLeases) -> Releases {
        Releases {
            released: leases.releases(),
            leases,
            refused_at: None,
        }
    }

    /// The release count now, marked seen.
    fn seen(&mut self) -> u64 {
        *self.released.borrow_and_update()
    }

    /// A claim made after `seen` releases was refused.
    fn refused(&mut self, seen: u64) {
        self.refused_at.get_or_insert(seen);
    }

    /// Wait to be woken, for `until` (then `on_time` runs) or for a release
    /// (Redis); whether to look at every host again.
    async fn wait(&mut self, wake: &Notify, until: Instant, on_time: impl FnOnce()) -> bool {
        // A release since a refusal (ours, still on its way when we asked,
        // or another instance's): look again at once.
        let released_since = self.refused_at.is_some_and(|v| *self.released.borrow() > v);
        let mut released_now = false;
        if !released_since {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until.into()) => on_time(),
                _ = self.leases.wait_for_release(&mut self.released), if self.leases.is_shared() => {
                    released_now = true;
                }
            }
        }
        // After a refusal, or whenever Redis says a slot was released (or its
        // poll says nothing did), look at every host again.
        self.refused_at.take().is_some() || released_since || released_now
    }
}

/// When a waiter whose hosts are all recovering (since `since`) looks
/// again: when an early re-probe may run or the backoff ends (`due`), at
/// least 50 ms on, at most when the recovery wait is over.
fn recovery_wake(due: Option<Instant>, now: Instant, since: Instant) -> Instant {
    let next_probe = now + crate::nodes::state::URGENT_EVERY;
    due.unwrap_or(next_probe)
        .min(next_probe)
        .max(now + Duration::from_millis(50))
        .min(since + RECOVERY_WAIT)
}

/// The pool's nodes on hosts not excluded, leaving out those known to lack the
/// model (a node whose models are not known yet stays) — unless that leaves none.
fn candidates(pool: &Pool, model: &str, excluded: &HashSet<String>) -> Vec<Arc<Node>> {
    let open: Vec<Arc<Node>> = pool
        .nodes
        .iter()
        .filter(|n| !excluded.contains(&n.host))
        .cloned()
        .collect();
    let may_have: Vec<Arc<Node>> = open
        .iter()
        .filter(|n| n.has_model(model))
        .cloned()
        .collect();
    if may_have.is_empty() {
        open
    } else {
        may_have
    }
}

/// Lower is better.
fn rank(n: &Node, model: &str, policy: Policy) -> (u8, u8, u8, i64, u32, f64) {
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
        u8::from(st.health == Health::Busy),
        u8::from(first),
        u8::from(loaded.is_none()),
        n.entry.priority,
        st.in_flight,
        st.recent_latency_ms.unwrap_or(0.0),
    )
}

fn cmp_rank(a: &Node, b: &Node, model: &str, policy: Policy) -> std::cmp::Ordering {
    let (x, y) = (rank(a, model, policy), rank(b, model, policy));
    (x.0, x.1, x.2, x.3, x.4)
        .cmp(&(y.0, y.1, y.2, y.3, y.4))
        .then(x.5.total_cmp(&y.5))
}

/// The preferred node: lowest priority number among those not cooling down.
pub(crate) fn preferred(nodes: &[Arc<Node>]) -> Option<Arc<Node>> {
    nodes
        .iter()
        .filter(|n| n.available())
        .min_by_key(|n| (!n.state().health.is_up(), n.entry.priority))
        .or_else(|| nodes.first())
        .cloned()
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

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[tokio::test]
    async fn one_request_per_host() {
        let a1 = node("http://a:1", "A", 0);
        let a2 = node("http://a:2", "A", 0);
        let b = node("http://b:1", "B", 5);
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![a1, a2, b], Policy::Pool);
        let l1 = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let l2 = s.acquire(&p, "m", &none(), far()).await.unwrap();
        assert_ne!(l1.node.host, l2.node.host);
        assert!(matches!(s.try_take(&p, "m", &none(), true), Pick::Wait));
        drop(l1);
        let l3 = s.acquire(&p, "m", &none(), far()).await.unwrap();
        assert_eq!(l3.node.host, "A");
    }

    #[tokio::test]
    async fn prefers_the_model_then_priority_and_avoids_excluded_hosts() {
        let a = node("http://a:1", "A", 0);
        let b = node("http://b:1", "B", 1);
        a.state().models = vec!["other:latest".into()];
        b.state().models = vec!["m:latest".into()];
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![a.clone(), b.clone()], Policy::Pool);
        assert_eq!(
            s.acquire(&p, "m", &none(), far()).await.unwrap().node.host,
            "B"
        );
        let no_b: HashSet<String> = ["B".to_string()].into();
        assert_eq!(
            s.acquire(&p, "m", &no_b, far()).await.unwrap().node.host,
            "A"
        );
        let single = Pool::new(vec![a, b], Policy::Single);
        assert_eq!(single.nodes().len(), 1);
        assert_eq!(single.nodes()[0].host, "A");
    }

    #[tokio::test]
    async fn capacity_raises_the_limit() {
        let s = Scheduler::new(Client::default());
        s.set_capacities(2, HashMap::new());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let _x = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let _y = s.acquire(&p, "m", &none(), far()).await.unwrap();
        assert!(matches!(s.try_take(&p, "m", &none(), true), Pick::Wait));
    }

    #[tokio::test]
    async fn a_suspect_node_waits_behind_a_busy_healthy_one_until_patience_runs_out() {
        let good = node("http://a:1", "A", 0);
        let shaky = node("http://b:1", "B", 0);
        good.state().record_success();
        shaky.state().record_fault(
            &crate::ollama::ClientError::new(
                "http://b:1",
                crate::ollama::ErrorKind::Http {
                    status: 500,
                    message: "x".into(),
                },
            ),
            true,
        );
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![good.clone(), shaky], Policy::Pool);
        let l = s.acquire(&p, "m", &none(), far()).await.unwrap();
        assert_eq!(l.node.host, "A");
        assert!(matches!(s.try_take(&p, "m", &none(), false), Pick::Wait));
        assert!(matches!(s.try_take(&p, "m", &none(), true), Pick::Got(n) if n.host == "B"));
    }

    #[tokio::test]
    async fn a_node_whose_models_are_unknown_is_not_left_out() {
        let known = node("http://a:1", "A", 5);
        let unknown = node("http://b:1", "B", 0);
        let lacking = node("http://c:1", "C", 0);
        known.state().models = vec!["m:latest".into()];
        lacking.state().models = vec!["other:latest".into()];
        let p = Pool::new(vec![known, unknown, lacking], Policy::Pool);
        let hosts: Vec<String> = candidates(&p, "m", &none())
            .iter()
            .map(|n| n.host.clone())
            .collect();
        assert_eq!(hosts, ["A", "B"]);
    }

    #[tokio::test]
    async fn a_request_too_large_is_retried_only_where_the_context_is_larger() {
        use crate::nodes::context::ModelContext;
        use crate::ollama::types::model_key;
        use crate::ollama::{ClientError, ErrorKind, Timeouts};
        let with_context = |url: &str, host: &str, priority: i64, ctx: Option<u64>| {
            let n = node(url, host, priority);
            if let Some(c) = ctx {
                n.state().contexts.insert(
                    model_key("m"),
                    ModelContext {
                        loaded: Some(c),
                        ..Default::default()
                    },
                );
            }
            n
        };
        let task = Task {
            label: "synthesis",
            model: "m",
            prompt_tokens: 10,
            limits: Timeouts::generation(Duration::from_secs(5)),
            own_bound: false,
        };
        // Every node refuses but C, which has the larger context.
        let run = |nodes: Vec<Arc<Node>>| async move {
            let s = Scheduler::new(Client::default());
            let pool = Pool::new(nodes, Policy::Pool);
            let tried = Mutex::new(Vec::new());
            let r = s
                .run(
                    &pool,
                    &task,
                    |a: Attempt| {
                        tried.lock().unwrap().push(a.node.host.clone());
                        let url = a.node.url().to_string();
                        let host = a.node.host.clone();
                        async move {
                            if host == "C" {
                                Ok(((), Measured::default()))
                            } else {
                                Err(ClientError::new(
                                    url,
                                    ErrorKind::TooLarge {
                                        message: "request (1794 tokens) exceeds the available context size (1024 tokens)".into(),
                                    },
                                ))
                            }
                        }
                    },
                    &|_| {},
                )
                .await;
            let tried = tried.into_inner().unwrap();
            (r.is_ok(), tried)
        };
        let a = || with_context("http://a:1", "A", 0, Some(1024));
        let b = || with_context("http://b:1", "B", 1, Some(1024));
        let c = || with_context("http://c:1", "C", 2, Some(4096));
        assert_eq!(
            run(vec![a(), b(), c()]).await,
            (true, vec!["A".into(), "C".into()])
        );
        assert_eq!(
            run(vec![a(), b()]).await,
            (false, vec!["A".into()]),
            "same context: not retried"
        );
        let unknown = with_context("http://a:1", "A", 0, None);
        assert_eq!(
            run(vec![unknown, c()]).await,
            (false, vec!["A".into()]),
            "nothing known about the refusing node: not retried"
        );
    }

    #[tokio::test]
    async fn every_host_excluded_means_nobody() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let no_a: HashSet<String> = ["A".to_string()].into();
        assert_eq!(
            s.acquire(&p, "m", &no_a, far()).await.err(),
            Some(NoSlot::NoUsableHost)
        );
    }

    /// Wait until `n` tasks are in line.
    async fn until_depth(s: &Arc<Scheduler>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.queue_depth() != n {
            assert!(
                Instant::now() < deadline,
                "queue depth {} != {n}",
                s.queue_depth()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Start waiters for `clients` in this order (each in line before the
    /// next); each sends its name when it gets the slot and holds it until told.
    async fn line_up(
        s: &Arc<Scheduler>,
        p: &Pool,
        clients: &[(&'static str, Option<&'static str>)],
    ) -> (
        tokio::sync::mpsc::UnboundedReceiver<(&'static str, Lease)>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for (i, (name, client)) in clients.iter().enumerate() {
            let (s2, tx) = (s.clone(), tx.clone());
            let p = p.clone().for_client(client.map(Arc::from));
            let name = *name;
            handles.push(tokio::spawn(async move {
                let l = s2.acquire(&p, "m", &none(), far()).await.unwrap();
                let _ = tx.send((name, l));
            }));
            until_depth(s, i + 1).await;
        }
        (rx, handles)
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_task_that_waited_longest() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let (mut rx, _h) = line_up(&s, &p, &[("w1", None), ("w2", None), ("w3", None)]).await;
        drop(first);
        let mut order = Vec::new();
        for _ in 0..3 {
            let (name, lease) = rx.recv().await.unwrap();
            order.push(name);
            assert_eq!(s.in_flight("A"), 1, "one at a time");
            drop(lease);
        }
        assert_eq!(order, ["w1", "w2", "w3"]);
        assert_eq!(s.queue_depth(), 0);
        assert_eq!(s.in_flight("A"), 0);
    }

    #[tokio::test]
    async fn a_waiting_task_of_higher_priority_takes_the_freed_slot_first() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, (name, priority)) in [("low", 5), ("high", 9), ("mid", 7)]
            .into_iter()
            .enumerate()
        {
            let (s2, tx) = (s.clone(), tx.clone());
            let p = p.clone().with_priority(priority);
            tokio::spawn(async move {
                let l = s2.acquire(&p, "m", &none(), far()).await.unwrap();
                let _ = tx.send((name, l));
            });
            until_depth(&s, i + 1).await;
        }
        drop(first);
        let mut order = Vec::new();
        for _ in 0..3 {
            let (name, lease) = rx.recv().await.unwrap();
            order.push(name);
            drop(lease);
        }
        assert_eq!(order, ["high", "mid", "low"]);
    }

    #[tokio::test]
    async fn clients_take_turns_each_in_arrival_order() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let (mut rx, _h) = line_up(
            &s,
            &p,
            &[
                ("x1", Some("key-x")),
                ("x2", Some("key-x")),
                ("x3", Some("key-x")),
                ("y1", Some("key-y")),
                ("y2", Some("key-y")),
            ],
        )
        .await;
        assert_eq!(
            s.queue_by_client(),
            vec![(Some(Arc::from("key-x")), 3), (Some(Arc::from("key-y")), 2)]
        );
        drop(first);
        let mut order = Vec::new();
        for _ in 0..5 {
            let (name, lease) = rx.recv().await.unwrap();
            order.push(name);
            drop(lease);
        }
        assert_eq!(order, ["x1", "y1", "x2", "y2", "x3"]);
    }

    #[tokio::test]
    async fn a_full_line_turns_new_tasks_away_and_keeps_the_admitted_ones() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool).with_queue_limit(2);
        let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
        let (mut rx, _h) = line_up(&s, &p, &[("w1", None), ("w2", None)]).await;
        assert_eq!(
            s.acquire(&p, "m", &none(), far()).await.err(),
            Some(NoSlot::QueueFull)
        );
        drop(first);
        for want in ["w1", "w2"] {
            let (name, lease) = rx.recv().await.unwrap();
            assert_eq!(name, want);
            drop(lease);
        }
        // An unbounded pool (the shell's) is never turned away.
        let q = Pool::new(p.nodes().to_vec(), Policy::Pool);
        let _x = s.acquire(&q, "m", &none(), far()).await.unwrap();
        let (_rx, _h2) = line_up(&s, &q, &[("a", None), ("b", None), ("c", None)]).await;
    }

    #[tokio::test]
    async fn a_task_that_gives_up_leaves_the_line_and_a_slot_it_was_given_goes_on() {
        let s = Scheduler::new(Client::default());
        let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
        let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
        // A waiter whose client goes away: out of the line at once.
        let gone = tokio::spawn({
            let (s, p) = (s.clone(), p.clone());
            async move { s.acquire(&p, "m", &none(), far()).await.map(|_| ()) }
        });
        until_depth(&s, 1).await;
        gone.abort();
        until_depth(&s, 0).await;
        // A waiter granted the slot but dropped before it picked it up: the
        // slot goes to the next in line.
        let (mut rx, handles) = line_up(&s, &p, &[("w1", None), ("w2", None)]).await;
        // On this single-threaded runtime w1 cannot run between the grant and
        // its cancellation, so it never picks the slot up.
        drop(first);
        assert!(matches!(
            s.slots().queue.waiters[0].state,
            WaitState::Granted(_)
        ));
        handles[0].abort();
        let (name, _lease) = rx.recv().await.unwrap();
        assert_eq!(name, "w2");
        assert_eq!(s.in_flight("A"), 1);
        assert_eq!(s.queue_depth(), 0);
    }

    #[tokio::test]
    async fn the_next_task_sees_a_failure_before_it_is_given_the_slot() {
        use crate::ollama::{ClientError, ErrorKind, Timeouts};
        let http500 = || {
            ClientError::new(
                "http://127.0.0.1:9",
                ErrorKind::Http {
                    status: 500,
                    message: "x".into(),
                },
            )
        };
        let s = Scheduler::new(Client::default());
        let a = node("http://127.0.0.1:9", "A", 0);
        a.state().record_fault(&http500(), true);
        let p = Pool::new(vec![a.clone()], Policy::Pool);
        let limits = Timeouts::new(
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        let task = Task {
            label: "t",
            model: "m",
            prompt_tokens: 0,
            limits,
            own_bound: false,
        };
        let quiet = |_: String| {};
        // The first task fails a second time on the suspect node: it cools down.
        let first = s.run(
            &p,
            &task,
            |_| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<((), Measured), _>(http500())
            },
            &quiet,
        );
        // The second waits for the slot meanwhile; it must not get it on a cooling node.
        let second = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            s.run(
                &p,
                &task,
                |at: Attempt| {
                    let cooling = at.node.state().cooling();
                    async move {
                        assert!(!cooling, "given a slot on a node that was cooling down");
                        Ok(((), Measured::default()))
                    }
                },
                &quiet,
            )
            .await
        };
        let (r1, r2) = tokio::join!(first, second);
        assert!(r1.is_err());
        assert!(r2.is_err(), "nothing left to run on in time");
        assert!(a.state().cooling());
    }
}
