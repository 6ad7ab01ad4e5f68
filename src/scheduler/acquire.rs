//! Taking a slot: at once when nobody waits and a host is free, else in
//! line (`line.rs`) until a freed slot is handed to the task, a re-probe
//! brings a cooling host back (`recovery.rs`), or the task's deadline
//! passes. A slot counts across instances too when the host rule is shared
//! (`shared.rs`): a host whose every slot other instances hold is busy for
//! the task until a release is seen.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::line::{WaitState, Waiter};
use super::pick::{self, pick, Picked};
use super::pool::Pool;
use super::recovery::{recovery_wake, RECOVERY_WAIT};
use super::shared::{Claim, HostLeases};
use super::{estimate, Scheduler};
use crate::nodes::Node;

/// How long a task waits for a healthy host before it takes a suspect one,
/// when nothing has been measured yet.
pub(crate) const PRIOR_PATIENCE: Duration = Duration::from_secs(10);

/// A slot on a node's host; dropping it frees the slot (here, and for other
/// instances when the host rule is shared) and hands it to the first waiting
/// task that can use it.
pub struct Lease {
    pub node: Arc<Node>,
    /// How long the task waited in line for this slot.
    pub waited: Duration,
    pub(super) sched: Arc<Scheduler>,
    /// The same slot counted across instances (a guard from `HostLeases`).
    _shared: Option<Box<dyn Send + Sync>>,
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
    /// The same error came from this many hosts: the request (or its model)
    /// is at fault, not the nodes.
    SameError { hosts: usize },
    /// Every node left refuses connections (nothing listens there): no
    /// waiting for one to come back.
    NothingAnswers,
    /// The model failed a whole task the same way on this many hosts before,
    /// and no request for it has answered since: not tried elsewhere.
    ModelBroken { hosts: usize },
}

impl std::fmt::Display for NoSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSlot::NoUsableHost => f.write_str("no node is available"),
            NoSlot::AllCooling => f.write_str(
                "every node left is cooling down after failures and none came back in time",
            ),
            NoSlot::Deadline => {
                f.write_str("the agent timeout passed while waiting for a free host")
            }
            NoSlot::QueueFull => f.write_str("too many requests are waiting for a free host"),
            NoSlot::NothingAnswers => {
                f.write_str("no node answers: every node left refuses connections")
            }
            NoSlot::SameError { hosts } => write!(
                f,
                "the same error came from {hosts} hosts, so the request (or its model) is at fault, not the nodes"
            ),
            NoSlot::ModelBroken { hosts } => write!(
                f,
                "the model failed the same way on {hosts} hosts before and has not answered since, so it was not tried on another host"
            ),
        }
    }
}

/// Other instances hold every slot of the host.
struct Full;

/// Takes a waiter out of the line however its wait ends (even when its future
/// is dropped); a slot granted to it but not picked up goes to the next one.
struct InLine<'a> {
    sched: &'a Arc<Scheduler>,
    id: u64,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let left = self.sched.slots().line.remove(self.id);
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
    /// A slot on `node`'s host is free again: count it and hand it on.
    pub(super) fn release(self: &Arc<Self>, node: &Arc<Node>) {
        self.slots().table.give_back(node);
        self.dispatch();
    }

    /// Hand free slots to waiters, in fair order; wake those whose state
    /// changed, and start the re-probes the picks asked for.
    pub(super) fn dispatch(self: &Arc<Self>) {
        let mut reprobes = Vec::new();
        let mut wake = Vec::new();
        {
            let mut guard = self.slots();
            let slots = &mut *guard;
            if slots.line.waiters.is_empty() {
                return;
            }
            let now = Instant::now();
            for i in slots.line.fair_order() {
                let w = &slots.line.waiters[i];
                if matches!(w.state, WaitState::Granted(_) | WaitState::Nobody) {
                    continue;
                }
                if !w.pool.nodes.iter().any(|n| slots.table.free(&n.host))
                    && matches!(w.state, WaitState::Waiting)
                {
                    continue;
                }
                let Picked { state, reprobe } = pick(
                    &mut slots.table,
                    &w.pool,
                    &w.model,
                    &w.excluded,
                    &w.busy_elsewhere,
                    now >= w.patience_at,
                );
                reprobes.extend(reprobe);
                let w = &mut slots.line.waiters[i];
                let changed = std::mem::discriminant(&state) != std::mem::discriminant(&w.state);
                w.state = state;
                if changed {
                    wake.push(w.wake.clone());
                }
                if matches!(w.state, WaitState::Granted(_)) {
                    let client = w.client.clone();
                    slots.line.served(client);
                }
            }
        }
        self.start_reprobes(reprobes);
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
    pub(super) async fn acquire_with(
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
                    self.slots().line.remove(id);
                    std::mem::forget(in_line);
                    return Ok(self.lease(node, began.elapsed(), shared));
                }
                WaitState::Nobody => return Err(NoSlot::NoUsableHost),
                WaitState::Recovering(due) => {
                    // Nothing listens on any of them: no use waiting, once
                    // the re-probes running have said so too.
                    let refusing = all_refuse(pool, model, excluded);
                    if refusing == Some(false) {
                        return Err(NoSlot::NothingAnswers);
                    }
                    if recovering_since.is_none() && refusing.is_none() {
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

    fn lease(
        self: &Arc<Self>,
        node: Arc<Node>,
        waited: Duration,
        shared: Option<Box<dyn Send + Sync>>,
    ) -> Lease {
        Lease {
            node,
            waited,
            sched: self.clone(),
            _shared: shared,
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
        let picked = {
            let mut guard = self.slots();
            let slots = &mut *guard;
            slots.line.waiters.is_empty().then(|| {
                pick(
                    &mut slots.table,
                    pool,
                    model,
                    excluded,
                    busy_elsewhere,
                    false,
                )
            })
        };
        let Some(Picked { state, reprobe }) = picked else {
            return Ok(None);
        };
        self.start_reprobes(reprobe);
        match state {
            WaitState::Granted(node) => {
                let seen = rel.seen();
                match self.claim(&node).await {
                    Ok(shared) => Ok(Some(self.lease(node, Duration::ZERO, shared))),
                    Err(Full) => {
                        self.release(&node);
                        busy_elsewhere.insert(node.host.clone());
                        rel.refused(seen);
                        Ok(None)
                    }
                }
            }
            WaitState::Nobody => Err(NoSlot::NoUsableHost),
            _ => Ok(None),
        }
    }

    /// Wake the tasks waiting for a cooling node to come back: a re-probe
    /// ended (perhaps saying that nothing answers there).
    pub(super) fn wake_recovering(&self) {
        let slots = self.slots();
        for w in &slots.line.waiters {
            if matches!(w.state, WaitState::Recovering(_)) {
                w.wake.notify_one();
            }
        }
    }

    /// The host's slot across instances: `Ok(None)` when the rule is local,
    /// `Err(Full)` when other instances hold every slot.
    async fn claim(&self, node: &Node) -> Result<Option<Box<dyn Send + Sync>>, Full> {
        let leases = self.shared().leases;
        match leases.claim(&node.host, self.capacity(&node.host)).await {
            Claim::Granted(guard) => Ok(Some(guard)),
            Claim::Local => Ok(None),
            Claim::Full => Err(Full),
        }
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
    ) -> Result<Option<Box<dyn Send + Sync>>, Full> {
        let seen = rel.seen();
        let claimed = self.claim(node).await;
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
        if w.pool.candidates(&w.model, &w.excluded).is_empty() {
            return Err(NoSlot::NoUsableHost);
        }
        if bounded
            && w.pool
                .queue_limit
                .is_some_and(|l| slots.line.waiters.len() >= l)
        {
            return Err(NoSlot::QueueFull);
        }
        Ok(slots.line.push(w))
    }

    /// Where waiter `id` stands (Nobody once it has left the line).
    fn wait_state(&self, id: u64) -> WaitState {
        let slots = self.slots();
        match slots.line.position(id) {
            Some(i) => slots.line.waiters[i].state.clone(),
            None => WaitState::Nobody,
        }
    }

    /// Other instances hold every slot of `node`'s host: waiter `id` waits
    /// again, counting that host busy until a release (the caller hands the
    /// local slot on).
    fn refused_in_line(&self, id: u64, node: &Node) {
        let mut slots = self.slots();
        if let Some(i) = slots.line.position(id) {
            let w = &mut slots.line.waiters[i];
            w.state = WaitState::Waiting;
            w.busy_elsewhere.insert(node.host.clone());
        }
    }

    /// Waiter `id` may use every host again (a slot was released somewhere):
    /// forget which were busy elsewhere and hand out slots.
    fn look_again(self: &Arc<Self>, id: u64) {
        {
            let mut slots = self.slots();
            if let Some(i) = slots.line.position(id) {
                slots.line.waiters[i].busy_elsewhere.clear();
            }
        }
        self.dispatch();
    }

    /// A slot on a free, healthy host other than the `excluded` ones, for a
    /// hedge — only when no task is waiting for a slot.
    pub(super) async fn take_idle(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
    ) -> Option<Lease> {
        let best = {
            let mut slots = self.slots();
            if !slots.line.waiters.is_empty() {
                return None;
            }
            let idle: Vec<Arc<Node>> = pool
                .candidates(model, excluded)
                .into_iter()
                .filter(|n| {
                    let st = n.state();
                    !st.cooling() && !st.health.is_suspect() && slots.table.free(&n.host)
                })
                .collect();
            let idle: Vec<&Arc<Node>> = idle.iter().collect();
            let best = pick::best(&slots.table, &idle, model, pool.policy)?;
            slots.table.take(&best);
            best
        };
        match self.claim(&best).await {
            Ok(shared) => Some(self.lease(best, Duration::ZERO, shared)),
            Err(Full) => {
                self.release(&best);
                None
            }
        }
    }

    /// What a pick would find for a task of `pool` now (a slot it finds is taken).
    #[cfg(test)]
    pub(super) fn try_take(
        self: &Arc<Self>,
        pool: &Pool,
        model: &str,
        excluded: &HashSet<String>,
        patience_over: bool,
    ) -> WaitState {
        let Picked { state, reprobe } = pick(
            &mut self.slots().table,
            pool,
            model,
            excluded,
            &HashSet::new(),
            patience_over,
        );
        self.start_reprobes(reprobe);
        state
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
}

/// Whether every node of `pool` a task for `model` may use (not on an
/// `excluded` host) is cooling because it refused connections: `Some(true)`
/// while a re-probe of one still runs, `Some(false)` when none does; None
/// when one of them may still come back.
fn all_refuse(pool: &Pool, model: &str, excluded: &HashSet<String>) -> Option<bool> {
    let mut probing = false;
    for n in pool.candidates(model, excluded) {
        probing |= n.state().refusing()?;
    }
    Some(probing)
}

/// What a waiter knows of slots released by other instances (Redis): a host
/// whose every slot they held is looked at again after a release.
struct Releases {
    leases: Arc<dyn HostLeases>,
    released: watch::Receiver<u64>,
    /// The release count seen before the first refusal since the last look.
    refused_at: Option<u64>,
}

impl Releases {
    fn of(leases: Arc<dyn HostLeases>) -> Releases {
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
            let shared = self.leases.is_shared();
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => on_time(),
                _ = self.leases.next_release(&mut self.released), if shared => {
                    released_now = true;
                }
            }
        }
        // After a refusal, or whenever Redis says a slot was released (or its
        // poll says nothing did), look at every host again.
        self.refused_at.take().is_some() || released_since || released_now
    }
}
