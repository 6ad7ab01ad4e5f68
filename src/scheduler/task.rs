//! Running one task (an agent call, a chunk) on the pool: each attempt gets its
//! deadlines from the node's latency model; an attempt that is overdue or
//! slow is hedged on an idle host (the first reply wins, the other is
//! cancelled); a failed attempt is retried from scratch on a host that has not
//! failed this task, waiting for a free slot rather than failing. The task
//! fails only when every usable host has failed it or its deadline passed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::blame::{self, Deferred};
use super::estimate::{self, ClusterView};
use super::progress::Progress;
use super::{Lease, NoSlot, Pool, Scheduler};
use crate::nodes::context;
use crate::nodes::latency::Sample;
use crate::nodes::state::Transition;
use crate::nodes::Node;
use crate::ollama::{ClientError, ErrorKind, Timeouts};

/// How often a running task checks whether to hedge.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// What a successful attempt measured (for the node's latency model).
pub type Measured = Sample;

/// One task to run somewhere in the pool.
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    pub label: &'a str,
    pub model: &'a str,
    /// About how many tokens the prompt has (for the first-token deadline).
    pub prompt_tokens: usize,
    /// Connect, silence and total limits from the settings; `total` (the agent
    /// timeout) bounds the whole task, retries and waits included.
    pub limits: Timeouts,
    /// `total` is the caller's own bound (an agent file's `timeout_secs`):
    /// reaching it says nothing about the node, which is not blamed.
    pub own_bound: bool,
}

/// Why an attempt runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptKind {
    First,
    /// An earlier attempt failed (its error, in short).
    Retry {
        after: String,
    },
    /// A copy of a slow attempt, on an idle host (why it was started).
    Hedge {
        why: String,
    },
}

/// What an attempt gets: where to run, its deadlines, and a progress tracker
/// its stream callback must feed (`progress.piece(text)`).
pub struct Attempt {
    pub node: Arc<Node>,
    pub timeouts: Timeouts,
    pub progress: Arc<Progress>,
    pub kind: AttemptKind,
    /// How long this attempt waited in line for its slot.
    pub waited: Duration,
}

/// The slot of the attempt that won while its reply is still being relayed
/// (a streamed reply, passed on as it arrives): the slot stays taken until
/// `succeeded` or `failed` is called, or until it is dropped — the reader
/// went away, which is no fault of the node.
pub struct Held {
    lease: Option<Lease>,
    /// The lease's node (kept apart, as the lease goes when consumed).
    node: Arc<Node>,
    model: String,
    label: String,
    started: Instant,
    first: Measured,
}

impl Held {
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The whole reply arrived: the node did well (its latency model learns from `m`).
    pub fn succeeded(mut self, m: Measured) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let m = Measured {
            first_token_ms: m.first_token_ms.or(self.first.first_token_ms),
            tokens_per_sec: m.tokens_per_sec.or(self.first.tokens_per_sec),
            prompt_tokens_per_sec: m.prompt_tokens_per_sec.or(self.first.prompt_tokens_per_sec),
            load_ms: m.load_ms.or(self.first.load_ms),
            reply_tokens: m.reply_tokens.or(self.first.reply_tokens),
        };
        lease
            .sched
            .succeeded(&lease.node, &self.model, self.started.elapsed(), &m);
    }

    /// The reply broke after its first piece was passed on (no retry is
    /// possible): the node takes the blame; the line to show.
    pub fn failed(mut self, e: &ClientError) -> String {
        let Some(lease) = self.lease.take() else {
            return String::new();
        };
        lease.sched.failed(
            &lease.node,
            &self.label,
            e,
            self.started.elapsed(),
            "; the reply had begun, so the client was told",
            true,
        )
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            if let Some(ev) = lease.sched.events() {
                ev.finished(&lease.node, self.started.elapsed().as_secs_f64(), false);
            }
        }
    }
}

/// One attempt that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedAttempt {
    pub node: String,
    pub host: String,
    pub error: ClientError,
}

/// Why a task could not run anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailed {
    pub label: String,
    pub attempts: Vec<FailedAttempt>,
    /// Why no further attempt was made.
    pub stopped: NoSlot,
    /// The pool's nodes and their health when the task gave up waiting.
    pub pool_health: Option<String>,
}

impl TaskFailed {
    /// The request could not fit any node's context (not a node fault).
    pub fn too_large(&self) -> bool {
        self.attempts
            .last()
            .is_some_and(|a| matches!(a.error.kind, ErrorKind::TooLarge { .. }))
    }
}

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let health = self
            .pool_health
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        if self.attempts.is_empty() {
            return write!(f, "{}: {}{health}", self.label, self.stopped);
        }
        let tried: Vec<String> = self
            .attempts
            .iter()
            .map(|a| format!("{} ({})", a.node, a.error.short()))
            .collect();
        write!(
            f,
            "{} failed on every node tried: {}",
            self.label,
            tried.join("; ")
        )?;
        match self.stopped {
            NoSlot::NoUsableHost => Ok(()),
            other => write!(f, "; {other}{health}"),
        }
    }
}

impl std::error::Error for TaskFailed {}

/// Where and how a task ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attribution {
    pub task: String,
    pub node: String,
    pub url: String,
    pub host: String,
    pub seconds: f64,
    pub tokens_per_sec: Option<f64>,
    /// Failed attempts before the one that answered.
    pub retries: usize,
    /// The answer came from a hedged copy of the request.
    pub hedged: bool,
    /// Copies of the request started on another host because the first was slow.
    pub hedges: usize,
}

/// An attempt in flight.
struct Running {
    lease: Lease,
    progress: Arc<Progress>,
    hedge: bool,
    /// Its time to first token is in the node's latency model already.
    ttft_recorded: bool,
}

impl Running {
    /// Put the time to first token into the node's model as soon as it is
    /// known, so other tasks' hedging decisions can use it at once.
    fn note_first_token(&mut self) {
        if self.ttft_recorded {
            return;
        }
        if let Some(first) = self.progress.first_token_at() {
            let ms = (first - self.progress.started).as_secs_f64() * 1000.0;
            self.lease.node.state().latency.record_ttft(ms);
            self.ttft_recorded = true;
        }
    }
}

/// A task's attempts so far: those that failed (and how often on each
/// host), those running, the hedges started.
struct Tries {
    failed: Vec<FailedAttempt>,
    failures: HashMap<String, u32>,
    /// Failures on a host after which the task avoids it.
    per_host: u32,
    /// Every attempt started, by index; None once it has ended.
    running: Vec<Option<Running>>,
    hedges: usize,
    /// After a "does not fit" refusal: the largest context known to be too small.
    too_small: Option<u64>,
    /// Failures that may be the request's: blamed on their nodes only once
    /// the task ends (`blame.rs`).
    deferred: Vec<Deferred>,
    /// When the task began.
    began: Instant,
}

impl Tries {
    fn new(pool: &Pool) -> Tries {
        Tries {
            deferred: Vec::new(),
            began: Instant::now(),
            failed: Vec::new(),
            failures: HashMap::new(),
            // A task may fail twice on a host only when the pool has no other host.
            per_host: if pool.hosts() == 1 { 2 } else { 1 },
            running: Vec::new(),
            hedges: 0,
            too_small: None,
        }
    }

    /// The hosts the next attempt must not use: those that failed the task
    /// too often and, after a "does not fit", those with no larger context.
    fn excluded(&self, pool: &Pool, model: &str) -> HashSet<String> {
        let mut excluded: HashSet<String> = self
            .failures
            .iter()
            .filter(|(_, n)| **n >= self.per_host)
            .map(|(h, _)| h.clone())
            .collect();
        if let Some(limit) = self.too_small {
            excluded.extend(no_larger_context(pool, model, limit));
        }
        excluded
    }

    /// The first attempt, or a retry after the last failure.
    fn next_kind(&self) -> AttemptKind {
        match self.failed.last() {
            None => AttemptKind::First,
            Some(f) => AttemptKind::Retry {
                after: f.error.short(),
            },
        }
    }

    /// Keep a started attempt; its index.
    fn start(&mut self, r: Running) -> usize {
        self.running.push(Some(r));
        self.running.len() - 1
    }

    /// No slot for another attempt (`stopped` says why): the task fails with
    /// the attempts so far and, when it gave up waiting, the pool's health.
    fn no_slot(self, pool: &Pool, task: &Task<'_>, stopped: NoSlot) -> TaskFailed {
        let waited = matches!(
            stopped,
            NoSlot::AllCooling | NoSlot::Deadline | NoSlot::QueueFull | NoSlot::NothingAnswers
        );
        let pool_health = waited.then(|| {
            pool.nodes()
                .iter()
                .map(|n| format!("{}: {}", n.name(), n.state().describe()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        TaskFailed {
            label: task.label.to_string(),
            attempts: self.failed,
            stopped,
            pool_health,
        }
    }
}

impl Scheduler {
    /// Run `task`: `attempt` is called once per try with a node and its
    /// deadlines. `notice` gets one line per retry, hedge and abandoned copy.
    pub async fn run<T, F, Fut>(
        self: &Arc<Self>,
        pool: &Pool,
        task: &Task<'_>,
        attempt: F,
        notice: &(dyn Fn(String) + Sync),
    ) -> Result<(T, Attribution), TaskFailed>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<(T, Measured), ClientError>>,
    {
        self.run_inner(pool, task, attempt, notice, false)
            .await
            .map(|(v, a, _)| (v, a))
    }

    /// Like `run`, for a reply relayed as it streams: an attempt returns as soon
    /// as its reply has begun (its first piece decides which copy wins; retries
    /// and hedges happen only before that), and the winner's slot is returned
    /// as `Held` while the caller reads the rest.
    pub(crate) async fn run_held<T, F, Fut>(
        self: &Arc<Self>,
        pool: &Pool,
        task: &Task<'_>,
        attempt: F,
        notice: &(dyn Fn(String) + Sync),
    ) -> Result<(T, Attribution, Held), TaskFailed>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<(T, Measured), ClientError>>,
    {
        let (v, a, held) = self.run_inner(pool, task, attempt, notice, true).await?;
        // `run_inner` returns the slot whenever it is asked to hold it: only a
        // bug there could land on this expect, nothing a node or user sends.
        Ok((v, a, held.expect("run_inner holds the slot when asked")))
    }

    /// `run` and `run_held`: attempts until one answers; a failed one is
    /// retried on another host, a slow one hedged while it is the only one.
    async fn run_inner<T, F, Fut>(
        self: &Arc<Self>,
        pool: &Pool,
        task: &Task<'_>,
        mut attempt: F,
        notice: &(dyn Fn(String) + Sync),
        hold: bool,
    ) -> Result<(T, Attribution, Option<Held>), TaskFailed>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<(T, Measured), ClientError>>,
    {
        let deadline = Instant::now() + task.limits.total;
        let mut tries = Tries::new(pool);
        let mut futs = FuturesUnordered::new();
        loop {
            let excluded = tries.excluded(pool, task.model);
            if futs.is_empty() {
                // Only the first wait counts against the queue limit: an
                // admitted task is never turned away later.
                let first = tries.running.is_empty();
                let lease = match self
                    .acquire_with(pool, task.model, &excluded, deadline, first)
                    .await
                {
                    Ok(l) => l,
                    Err(stopped) => return Err(self.give_up(tries, pool, task, stopped, notice)),
                };
                let reason = super::pick::reason(&lease.node, task.model, pool, &excluded);
                let kind = tries.next_kind();
                let (a, r) = self.prepare(pool, task, lease, deadline, kind, &reason);
                let fut = attempt(a);
                futs.push(tagged(tries.start(r), fut));
            }
            let can_hedge = futs.len() == 1 && tries.hedges == 0;
            tokio::select! {
                biased;
                Some((i, result)) = futs.next() => {
                    let Some(done) = tries.running[i].take() else { continue };
                    match result {
                        Ok((value, measured)) => {
                            let (a, held) = self.answered(&mut tries, done, measured, task, hold, notice);
                            return Ok((value, a, held));
                        }
                        Err(e) => {
                            let still_running = !futs.is_empty();
                            if let Err(stopped) = self.attempt_failed(&mut tries, done, e, still_running, pool, task, notice) {
                                return Err(self.give_up(tries, pool, task, stopped, notice));
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    for r in tries.running.iter_mut().flatten() {
                        r.note_first_token();
                    }
                    if !can_hedge {
                        continue;
                    }
                    let hedge = self.hedge(&mut tries, pool, task, &excluded, deadline, notice);
                    if let Some((a, r)) = hedge.await {
                        let fut = attempt(a);
                        futs.push(tagged(tries.start(r), fut));
                    }
                }
            }
        }
    }

    /// An attempt answered: the node's success is recorded and its slot
    /// handed on (or, with `hold`, kept in the `Held` while the reply is
    /// relayed); the other copies are given up. Where and how it ran.
    fn answered(
        &self,
        tries: &mut Tries,
        done: Running,
        mut measured: Measured,
        task: &Task<'_>,
        hold: bool,
        notice: &(dyn Fn(String) + Sync),
    ) -> (Attribution, Option<Held>) {
        let node = done.lease.node.clone();
        let elapsed = done.progress.started.elapsed();
        if done.ttft_recorded {
            measured.first_token_ms = None;
        }
        let held = if hold {
            Some(Held {
                node: done.lease.node.clone(),
                lease: Some(done.lease),
                model: task.model.to_string(),
                label: task.label.to_string(),
                started: done.progress.started,
                first: measured,
            })
        } else {
            // Recorded before the slot is handed on, so the
            // next task sees the node as it is now.
            self.succeeded(&node, task.model, elapsed, &measured);
            drop(done.lease);
            None
        };
        for other in tries.running.iter().flatten() {
            self.abandon(other, &node, task.label, notice);
        }
        // The request works: the nodes that failed it are to blame.
        self.models.answered(task.model);
        for d in std::mem::take(&mut tries.deferred) {
            let t = self.blame(&d);
            if t != Transition::None {
                notice(format!(
                    "⚠️  {}: {} answered what {} failed ({}){}",
                    task.label,
                    node.name(),
                    d.node.name(),
                    d.error.short(),
                    transition_words(&d.node, t)
                ));
            }
        }
        let attribution = Attribution {
            task: task.label.to_string(),
            node: node.name().to_string(),
            url: node.url().to_string(),
            host: node.host.clone(),
            seconds: elapsed.as_secs_f64(),
            tokens_per_sec: measured.tokens_per_sec,
            retries: tries.failed.len(),
            hedged: done.hedge,
            hedges: tries.hedges,
        };
        (attribution, held)
    }

    /// An attempt failed with `e`: recorded before its slot is handed on,
    /// and said. An error that may be the request's waits for the task's end
    /// before it counts against the node when the pool has another host to
    /// compare with (`blame.rs`); one the model is
    /// known to give (it failed a whole task that way on several hosts)
    /// never does, and ends the task. A model the node does not have rules
    /// the host out for the task. A request too large for the node goes on
    /// only to a node known to give the model a larger context. `Err`: no
    /// further attempt, and why.
    #[allow(clippy::too_many_arguments)]
    fn attempt_failed(
        &self,
        tries: &mut Tries,
        done: Running,
        e: ClientError,
        still_running: bool,
        pool: &Pool,
        task: &Task<'_>,
        notice: &(dyn Fn(String) + Sync),
    ) -> Result<(), NoSlot> {
        let node = done.lease.node.clone();
        let elapsed = done.progress.started.elapsed();
        let too_large = matches!(e.kind, ErrorKind::TooLarge { .. });
        let known = self.models.broken(task.model).filter(|b| b.error == e.kind);
        // With one host there is no second to compare with: the node's at once.
        let defer = known.is_none() && blame::request_error(&e) && pool.hosts() > 1;
        let callers_bound = task.own_bound && matches!(e.kind, ErrorKind::Deadline { .. });
        let blame_now = !(known.is_some() || defer || callers_bound);
        // A node without the model is not tried again for this task.
        let count = if e.is_missing_model() {
            tries.per_host
        } else {
            1
        };
        *tries.failures.entry(node.host.clone()).or_insert(0) += count;
        let mut line = self.failed(&node, task.label, &e, elapsed, "", blame_now);
        // What follows, once the failure is recorded.
        line.push_str(&if too_large {
            "; the request does not fit that node's context for the model".to_string()
        } else if still_running {
            "; the copy on another host goes on".to_string()
        } else if let Some(b) = &known {
            format!(
                "; {} failed the same way on {} hosts before and has not answered since: not retried",
                task.model, b.hosts
            )
        } else {
            next_step(tries, pool, task.model, &node)
        });
        // The failure is recorded before the slot is handed on (a
        // freed slot goes straight to the next waiter).
        drop(done.lease);
        if defer {
            tries.deferred.push(Deferred {
                node: node.clone(),
                error: e.clone(),
            });
        }
        tries.failed.push(FailedAttempt {
            node: node.name().to_string(),
            host: node.host.clone(),
            error: e,
        });
        if let (Some(b), false) = (&known, still_running) {
            notice(line);
            return Err(NoSlot::ModelBroken { hosts: b.hosts });
        }
        if too_large && !still_running {
            // Never again on a node with the same or a smaller
            // context: only one known to give the model more.
            let limit =
                context::usable(&node, task.model).map(|l| tries.too_small.map_or(l, |t| t.max(l)));
            let elsewhere =
                limit.is_some_and(|l| no_larger_context(pool, task.model, l).len() < pool.hosts());
            if !elsewhere {
                notice(line);
                return Err(NoSlot::NoUsableHost);
            }
            tries.too_small = limit;
            line.push_str("; trying a node with a larger context");
        }
        notice(line);
        Ok(())
    }

    /// The task fails (`stopped` says why no further attempt was made): the
    /// failures that waited for its end are settled — the same error from
    /// two hosts or more is the request's (and, when no request for the
    /// model answered meanwhile, the model is broken), any other is its node's.
    fn give_up(
        &self,
        mut tries: Tries,
        pool: &Pool,
        task: &Task<'_>,
        mut stopped: NoSlot,
        notice: &(dyn Fn(String) + Sync),
    ) -> TaskFailed {
        let (shared, nodes) = blame::split(std::mem::take(&mut tries.deferred));
        // Another task may have found the model broken meanwhile: its error is
        // then no node's fault either.
        let known = self.models.broken(task.model).map(|b| b.error);
        for d in nodes
            .iter()
            .filter(|d| known.as_ref() != Some(&d.error.kind))
        {
            let t = self.blame(d);
            if t != Transition::None {
                notice(format!(
                    "⚠️  {}: no other host gave the error {} gave ({}){}",
                    task.label,
                    d.node.name(),
                    d.error.short(),
                    transition_words(&d.node, t)
                ));
            }
        }
        if let Some((error, hosts)) = shared.into_iter().max_by_key(|(_, h)| *h) {
            if !self.models.answered_since(task.model, tries.began) {
                self.models.broke(task.model, error, hosts);
            }
            if stopped == NoSlot::NoUsableHost {
                stopped = NoSlot::SameError { hosts };
            }
        }
        // Every host it could use refused the connection: nothing answers.
        if stopped == NoSlot::NoUsableHost
            && !tries.failed.is_empty()
            && tries.failed.iter().all(|f| f.error.is_refused())
        {
            stopped = NoSlot::NothingAnswers;
        }
        tries.no_slot(pool, task, stopped)
    }

    /// A failure that waited for its task's end is its node's after all.
    fn blame(&self, d: &Deferred) -> Transition {
        let t = d.node.state().record_fault(&d.error, true);
        self.share_health(&d.node, t);
        t
    }

    /// A copy of the running attempt on an idle host (not one of `excluded`)
    /// when it is slow there, said by `notice`; the attempt to start.
    async fn hedge(
        self: &Arc<Self>,
        tries: &mut Tries,
        pool: &Pool,
        task: &Task<'_>,
        excluded: &HashSet<String>,
        deadline: Instant,
        notice: &(dyn Fn(String) + Sync),
    ) -> Option<(Attempt, Running)> {
        let current = tries.running.iter().flatten().next()?;
        let mut avoid = excluded.clone();
        avoid.insert(current.lease.node.host.clone());
        let (lease, why) = self.hedge_slot(pool, task, current, &avoid).await?;
        notice(format!(
            "⚡ {}: also started on {} — {} on {}",
            task.label,
            lease.node.name(),
            why,
            current.lease.node.name()
        ));
        tries.hedges += 1;
        let reason = format!("hedge: {why}");
        let kind = AttemptKind::Hedge { why };
        Some(self.prepare(pool, task, lease, deadline, kind, &reason))
    }

    /// Deadlines for an attempt on the lease's node, and its bookkeeping.
    fn prepare(
        &self,
        pool: &Pool,
        task: &Task<'_>,
        lease: Lease,
        deadline: Instant,
        kind: AttemptKind,
        reason: &str,
    ) -> (Attempt, Running) {
        let hedge = matches!(kind, AttemptKind::Hedge { .. });
        let waited = lease.waited;
        let node = lease.node.clone();
        if let Some(ev) = self.events() {
            ev.picked(task.label, &node, reason);
        }
        let cluster = ClusterView::of(pool.nodes());
        let left = deadline.saturating_duration_since(Instant::now());
        let timeouts = Timeouts {
            connect: task.limits.connect.min(left),
            first_token: estimate::first_token_deadline(
                &node,
                task.model,
                task.prompt_tokens,
                &cluster,
            )
            .min(task.limits.first_token)
            .min(left),
            idle: estimate::stall_deadline(&node, &cluster).min(task.limits.idle),
            total: left,
        };
        let progress = Arc::new(Progress::new());
        (
            Attempt {
                node,
                timeouts,
                progress: progress.clone(),
                kind,
                waited,
            },
            Running {
                lease,
                progress,
                hedge,
                ttft_recorded: false,
            },
        )
    }

    /// A free idle host worth hedging `current` on, and why.
    async fn hedge_slot(
        self: &Arc<Self>,
        pool: &Pool,
        task: &Task<'_>,
        current: &Running,
        avoid: &HashSet<String>,
    ) -> Option<(Lease, String)> {
        let cluster = ClusterView::of(pool.nodes());
        let lease = self.take_idle(pool, task.model, avoid).await?;
        // With no hedge the lease is dropped, which gives the slot back.
        estimate::should_hedge(
            &current.progress,
            task.prompt_tokens,
            &lease.node,
            &cluster,
            Instant::now(),
        )
        .map(|why| (lease, why))
    }

    fn succeeded(&self, node: &Node, model: &str, elapsed: Duration, m: &Measured) {
        if let Some(ev) = self.events() {
            ev.finished(node, elapsed.as_secs_f64(), true);
        }
        let mut st = node.state();
        if st.consecutive_failures() > 0 {
            self.share_recovery(node);
        }
        st.record_success();
        st.record_request(elapsed, true, m.tokens_per_sec);
        st.latency.record(m);
        if !st
            .loaded
            .iter()
            .any(|l| crate::ollama::types::same_model(&l.name, model))
        {
            st.loaded.push(crate::ollama::types::LoadedModel {
                name: model.to_string(),
                ..Default::default()
            });
        }
    }

    /// Record a failed attempt; the line to show (ending with `then`).
    fn failed(
        &self,
        node: &Node,
        label: &str,
        e: &ClientError,
        elapsed: Duration,
        then: &str,
        blame_node: bool,
    ) -> String {
        if let Some(ev) = self.events() {
            ev.finished(node, elapsed.as_secs_f64(), false);
        }
        let transition = {
            let mut st = node.state();
            st.record_request(elapsed, false, None);
            if blame_node {
                st.record_fault(e, true)
            } else {
                Transition::None
            }
        };
        self.share_health(node, transition);
        let mut line = format!("⚠️  {label} failed on {} ({})", node.name(), e.short());
        line.push_str(&transition_words(node, transition));
        line.push_str(then);
        line
    }

    /// Another copy answered first: give this one up (dropping it closes the
    /// connection). A copy that never produced a token counts against its node.
    fn abandon(&self, r: &Running, winner: &Node, label: &str, notice: &(dyn Fn(String) + Sync)) {
        let node = &r.lease.node;
        let secs = r.progress.started.elapsed().as_secs_f64();
        if r.progress.first_token_at().is_none() {
            let e = ClientError::new(node.url(), ErrorKind::NoFirstToken { secs });
            let t = node.state().record_fault(&e, true);
            self.share_health(node, t);
            notice(format!(
                "⚠️  {label}: gave up on {} (no first token after {secs:.1}s; {} answered){}",
                node.name(),
                winner.name(),
                transition_words(node, t)
            ));
        } else {
            notice(format!(
                "ℹ️  {label}: dropped the slower copy on {} ({} answered first)",
                node.name(),
                winner.name()
            ));
        }
    }
}

/// What follows a failed attempt, in words: a retry on another host, on the
/// same one (the only one left), or none.
fn next_step(tries: &Tries, pool: &Pool, model: &str, node: &Node) -> String {
    let excluded = tries.excluded(pool, model);
    let left = pool.candidates(model, &excluded);
    if left.is_empty() {
        "; no other host left to try".to_string()
    } else if left.iter().all(|n| n.state().refusing().is_some()) {
        "; every node left refuses connections".to_string()
    } else if left.iter().any(|n| n.host != node.host) {
        "; retrying from scratch on another host".to_string()
    } else if let [only] = left.as_slice() {
        format!(
            "; retrying from scratch on {} (the only node that can take it)",
            only.name()
        )
    } else {
        format!(
            "; retrying from scratch on {} (no other host can take it)",
            node.host
        )
    }
}

/// Hosts none of whose nodes is known to give `model` more than `limit`
/// tokens of context.
fn no_larger_context(pool: &Pool, model: &str, limit: u64) -> HashSet<String> {
    let larger: HashSet<&str> = pool
        .nodes()
        .iter()
        .filter(|n| context::usable(n, model).is_some_and(|c| c > limit))
        .map(|n| n.host.as_str())
        .collect();
    pool.nodes()
        .iter()
        .filter(|n| !larger.contains(n.host.as_str()))
        .map(|n| n.host.clone())
        .collect()
}

/// What a failure did to a node, as the end of a notice.
fn transition_words(node: &Node, t: Transition) -> String {
    match t {
        Transition::None => String::new(),
        Transition::Suspect => format!("; {} is suspect", node.name()),
        Transition::Cooled(d) => format!(
            "; {} cooled down (re-probe in {:.0}s)",
            node.name(),
            d.as_secs_f64()
        ),
    }
}

async fn tagged<F: Future>(i: usize, f: F) -> (usize, F::Output) {
    (i, f.await)
}

#[cfg(test)]
mod retry_words {
    use super::super::tests::node;
    use super::*;
    use crate::scheduler::Policy;

    fn failed_once(tries: &mut Tries, n: &Node) {
        *tries.failures.entry(n.host.clone()).or_insert(0) += 1;
    }

    #[test]
    fn a_retry_says_where_it_goes() {
        let (a, b) = (node("http://a:1", "A", 0), node("http://b:1", "B", 0));
        let two = Pool::new(vec![a.clone(), b.clone()], Policy::Pool);
        let mut tries = Tries::new(&two);
        failed_once(&mut tries, &a);
        assert_eq!(
            next_step(&tries, &two, "m", &a),
            "; retrying from scratch on another host"
        );
        failed_once(&mut tries, &b);
        assert_eq!(
            next_step(&tries, &two, "m", &b),
            "; no other host left to try"
        );

        let one = Pool::new(vec![a.clone()], Policy::Pool);
        let mut tries = Tries::new(&one);
        // One host: a node gets a second try there.
        assert_eq!(tries.per_host, 2);
        failed_once(&mut tries, &a);
        assert_eq!(
            next_step(&tries, &one, "m", &a),
            "; retrying from scratch on http://a:1 (the only node that can take it)"
        );
        failed_once(&mut tries, &a);
        assert_eq!(
            next_step(&tries, &one, "m", &a),
            "; no other host left to try"
        );

        let a2 = node("http://a:2", "A", 0);
        let one_host = Pool::new(vec![a.clone(), a2], Policy::Pool);
        let mut tries = Tries::new(&one_host);
        failed_once(&mut tries, &a);
        assert_eq!(
            next_step(&tries, &one_host, "m", &a),
            "; retrying from scratch on A (no other host can take it)"
        );
    }
}
