//! One node's live state: its place in the session's health view (one
//! [`Health`] value whose variants carry what each state needs), its counters,
//! and its latency model. Every request outcome and every probe lands here,
//! and every pick reads it.
//!
//! Times are `tokio::time::Instant`: tests on a paused clock drive the
//! back-off and re-probe rules.

use std::time::Duration;

use tokio::time::Instant;

use super::context::ModelContext;
use super::latency::Latency;
use crate::ollama::types::LoadedModel;
use crate::ollama::{ClientError, ErrorKind};

/// The first cool-down; it doubles with every further failure up to `MAX_BACKOFF`.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// How often a task with no other host left may probe a cooling node early.
pub(crate) const URGENT_EVERY: Duration = Duration::from_secs(1);

/// Failures in a row, and the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct Failures {
    /// How many in a row.
    pub count: u32,
    /// The last one in short (None when only another instance saw them).
    pub last: Option<String>,
    /// The last came from a real request: a probe that answers then makes
    /// the node only suspect (answering `/api/tags` does not prove it can
    /// generate).
    pub on_request: bool,
    /// The last was a refused connection: nothing listens there (not a
    /// timeout, which a busy or distant host may give).
    pub refused: bool,
}

/// A cool-down: no requests until a re-probe succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooling {
    pub failures: Failures,
    /// When it began (a recovery another instance saw after this ends it).
    pub since: Instant,
    /// Its length: doubles with each failed re-probe, up to `MAX_BACKOFF`.
    pub backoff: Duration,
    /// When the next re-probe may run.
    pub until: Instant,
    /// A re-probe is running.
    pub reprobing: bool,
    /// ... and it started before the backoff ended (a task had no other
    /// host): its failure is no new failure in a row.
    pub early: bool,
}

/// A node's place in the health view.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Not probed or used yet.
    Unknown,
    /// Answers; no failure since it last did.
    Healthy,
    /// Failed recently: picked only when no healthy host can take the task soon.
    Suspect(Failures),
    /// Failed again: no requests until a re-probe succeeds (after `until`).
    Cooling(Cooling),
    /// Answers, but slowly (a probe timed out while it was working); the
    /// failures before it did, if any.
    Busy(Option<Failures>),
}

impl Health {
    /// One lower-case word (tables, JSON, the dashboard).
    pub fn word(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Suspect(_) => "suspect",
            Health::Cooling(_) => "cooling",
            Health::Busy(_) => "busy",
        }
    }

    /// Known to answer (healthy or busy working).
    pub(crate) fn is_up(&self) -> bool {
        matches!(self, Health::Healthy | Health::Busy(_))
    }

    pub(crate) fn is_suspect(&self) -> bool {
        matches!(self, Health::Suspect(_))
    }

    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Health::Busy(_))
    }

    /// The failures in a row that led here, if any.
    pub fn failures(&self) -> Option<&Failures> {
        match self {
            Health::Suspect(f) | Health::Busy(Some(f)) => Some(f),
            Health::Cooling(c) => Some(&c.failures),
            _ => None,
        }
    }

    /// The cool-down, while cooling.
    pub fn cooling(&self) -> Option<&Cooling> {
        match self {
            Health::Cooling(c) => Some(c),
            _ => None,
        }
    }
}

/// What a failure did to the node's place in the health view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Transition {
    /// Nothing changed worth saying (already suspect or cooling, or not a node fault).
    None,
    /// First failure: the node is now suspect.
    Suspect,
    /// The node is cooling down for this long before it is probed again.
    Cooled(Duration),
}

#[derive(Debug, Clone)]
pub struct NodeState {
    pub health: Health,
    /// When its last re-probe started, whatever its health since: a task with
    /// no other host left probes a cooling node at most once per
    /// `URGENT_EVERY`, across cool-downs too.
    reprobed_at: Option<Instant>,
    pub models: Vec<String>,
    pub loaded: Vec<LoadedModel>,
    pub requests: u64,
    pub errors: u64,
    latency_sum_ms: f64,
    latency_count: u64,
    /// Exponentially weighted recent latency (ms).
    pub recent_latency_ms: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub latency: Latency,
    /// What is known of each model's context window here, by model key.
    pub contexts: std::collections::HashMap<String, ModelContext>,
    /// The server's release (Ollama's `/api/version`), once asked.
    pub version: Option<String>,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            health: Health::Unknown,
            reprobed_at: None,
            models: Vec::new(),
            loaded: Vec::new(),
            requests: 0,
            errors: 0,
            latency_sum_ms: 0.0,
            latency_count: 0,
            recent_latency_ms: None,
            tokens_per_sec: None,
            latency: Latency::default(),
            contexts: Default::default(),
            version: None,
        }
    }
}

impl NodeState {
    pub fn avg_latency_ms(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| self.latency_sum_ms / self.latency_count as f64)
    }

    /// Out of the pool until a re-probe succeeds.
    pub fn cooling(&self) -> bool {
        matches!(self.health, Health::Cooling(_))
    }

    /// Cooling because nothing listens there (its last failure was a refused
    /// connection): whether a re-probe is running. None otherwise.
    pub(crate) fn refusing(&self) -> Option<bool> {
        self.health
            .cooling()
            .filter(|c| c.failures.refused)
            .map(|c| c.reprobing)
    }

    /// Failures in a row (0 once it answered).
    pub fn consecutive_failures(&self) -> u32 {
        self.health.failures().map_or(0, |f| f.count)
    }

    /// The last failure in short, until the node answers again.
    pub fn last_error(&self) -> Option<&str> {
        self.health.failures().and_then(|f| f.last.as_deref())
    }

    /// Cooling with no re-probe running, and its next re-probe is due.
    pub(crate) fn reprobe_due(&self, now: Instant) -> bool {
        self.health
            .cooling()
            .is_some_and(|c| !c.reprobing && now >= c.until)
    }

    /// Cooling, and worth probing now although its backoff has not passed: a
    /// task has no other host left (at most one such probe per `URGENT_EVERY`).
    pub(crate) fn urgent_reprobe_due(&self, now: Instant) -> bool {
        self.health.cooling().is_some_and(|c| !c.reprobing)
            && self
                .reprobed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= URGENT_EVERY)
    }

    /// A re-probe of this cooling node starts now (a second pick does not
    /// start another while it runs).
    pub(crate) fn reprobe_started(&mut self, now: Instant) {
        if let Health::Cooling(c) = &mut self.health {
            c.reprobing = true;
            c.early = now < c.until;
            self.reprobed_at = Some(now);
        }
    }

    /// The re-probe ended (its outcome is recorded apart).
    pub(crate) fn reprobe_ended(&mut self) {
        if let Health::Cooling(c) = &mut self.health {
            c.reprobing = false;
            c.early = false;
        }
    }

    /// A real request succeeded: the node is healthy.
    pub(crate) fn record_success(&mut self) {
        self.health = Health::Healthy;
    }

    /// A probe answered. Returns true when this re-admits a cooling node. A node
    /// whose last failure was a real request comes back as suspect: answering
    /// `/api/tags` does not prove it can generate.
    pub(crate) fn record_probe_ok(&mut self) -> bool {
        let was_cooling = self.cooling();
        match self.health.failures() {
            Some(f) if f.on_request && f.count > 0 => self.health = Health::Suspect(f.clone()),
            _ => self.record_success(),
        }
        was_cooling
    }

    /// Another instance cooled this node until `until` after `failures`
    /// failures: cool it here too (the later end and the larger count win).
    pub(crate) fn cool_until(&mut self, until: Instant, failures: u32) {
        let now = Instant::now();
        let left = until.saturating_duration_since(now);
        match &mut self.health {
            Health::Cooling(c) => {
                c.failures.count = c.failures.count.max(failures);
                c.backoff = left.max(c.backoff);
                c.until = c.until.max(until);
            }
            h => {
                let mut f = h.failures().cloned().unwrap_or(Failures {
                    count: 0,
                    last: None,
                    on_request: false,
                    refused: false,
                });
                f.count = f.count.max(failures);
                *h = Health::Cooling(Cooling {
                    failures: f,
                    since: now,
                    backoff: left.max(FIRST_BACKOFF),
                    until,
                    reprobing: false,
                    early: false,
                });
            }
        }
    }

    /// Another instance saw this node answer `ago` ago: a cooling that began
    /// before that ends here too (as suspect: this instance has not seen it).
    pub(crate) fn recovered_elsewhere(&mut self, ago: Duration) {
        let Health::Cooling(c) = &self.health else {
            return;
        };
        let seen = Instant::now().checked_sub(ago);
        if seen.is_some_and(|s| c.since < s) {
            self.health = Health::Suspect(c.failures.clone());
        }
    }

    /// A probe got no answer in time while the node was working: busy, not down.
    pub(crate) fn record_probe_slow(&mut self) {
        if !self.cooling() {
            self.health = Health::Busy(self.health.failures().cloned());
        }
    }

    /// A request or probe failed. `refused` failures (nothing listening) cool the
    /// node at once; others make it suspect first and cool it on the second in a row.
    /// While it cools, a failed probe doubles the backoff — except the
    /// scheduler's early re-probes (a task with no other host probes once a
    /// second before the backoff ends): those are no new failure in a row and
    /// leave the backoff as it was said when the node cooled.
    pub(crate) fn record_fault(&mut self, err: &ClientError, from_request: bool) -> Transition {
        if !err.is_node_fault() {
            return Transition::None;
        }
        let now = Instant::now();
        let failures = Failures {
            count: self.consecutive_failures() + 1,
            last: Some(err.short()),
            on_request: from_request,
            refused: err.is_refused(),
        };
        if let Health::Cooling(c) = &mut self.health {
            if c.early && !from_request {
                // An early re-probe: the same failure, seen again.
                c.failures.last = failures.last;
                c.failures.refused = failures.refused;
                return Transition::None;
            }
            // A failed probe: wait longer before the next one.
            c.failures = failures;
            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            c.until = now + c.backoff;
            return Transition::None;
        }
        let refused = matches!(err.kind, ErrorKind::Refused { .. });
        if refused || failures.count >= 2 {
            // A node that keeps failing after each re-admission waits longer each time.
            let doublings = failures.count.saturating_sub(2).min(8);
            let backoff = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
            self.health = Health::Cooling(Cooling {
                failures,
                since: now,
                backoff,
                until: now + backoff,
                reprobing: false,
                early: false,
            });
            return Transition::Cooled(backoff);
        }
        let was_suspect = self.health.is_suspect();
        self.health = Health::Suspect(failures);
        if was_suspect {
            Transition::None
        } else {
            Transition::Suspect
        }
    }

    /// Count a finished request and, when it succeeded, its latency.
    pub fn record_request(&mut self, latency: Duration, ok: bool, tokens_per_sec: Option<f64>) {
        self.requests += 1;
        if !ok {
            self.errors += 1;
            return;
        }
        let ms = latency.as_secs_f64() * 1000.0;
        self.latency_sum_ms += ms;
        self.latency_count += 1;
        self.recent_latency_ms = Some(match self.recent_latency_ms {
            Some(prev) => prev * 0.7 + ms * 0.3,
            None => ms,
        });
        if tokens_per_sec.is_some() {
            self.tokens_per_sec = tokens_per_sec;
        }
    }

    /// How the node's health reads in one phrase, with the detail a user needs.
    pub fn describe(&self) -> String {
        match &self.health {
            Health::Cooling(c) => format!(
                "cooling ({} failure{}; backoff {:.0}s)",
                c.failures.count,
                if c.failures.count == 1 { "" } else { "s" },
                c.backoff.as_secs_f64()
            ),
            Health::Suspect(f) => match &f.last {
                Some(e) => format!("suspect ({e})"),
                None => "suspect".into(),
            },
            h => h.word().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> ClientError {
        ClientError::new("http://n:1", kind)
    }

    fn reset() -> ClientError {
        err(ErrorKind::Reset {
            after_first_token: true,
            detail: String::new(),
        })
    }

    fn backoff(s: &NodeState) -> Option<Duration> {
        s.health.cooling().map(|c| c.backoff)
    }

    #[test]
    fn one_failure_is_suspect_two_cool_and_backoff_doubles() {
        let mut s = NodeState::default();
        assert_eq!(s.record_fault(&reset(), true), Transition::Suspect);
        assert!(s.health.is_suspect());
        assert_eq!(
            s.record_fault(&reset(), true),
            Transition::Cooled(FIRST_BACKOFF)
        );
        assert!(s.cooling());
        assert_eq!(s.record_fault(&reset(), false), Transition::None);
        assert_eq!(backoff(&s), Some(FIRST_BACKOFF * 2));
        for _ in 0..10 {
            s.record_fault(&reset(), false);
        }
        assert_eq!(backoff(&s), Some(MAX_BACKOFF));
        s.record_success();
        assert_eq!(s.health, Health::Healthy);
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.last_error(), None);
    }

    /// On a paused clock: each failed re-probe doubles the wait before the
    /// next (5 s, 10 s, 20 s, … capped at 120 s), and the re-probe is due
    /// exactly when it ends, not a moment before.
    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_per_failed_reprobe_up_to_the_cap_and_the_reprobe_waits_for_it() {
        let mut s = NodeState::default();
        s.record_fault(&reset(), true);
        s.record_fault(&reset(), true);
        let mut want = FIRST_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let start = Instant::now();
            assert_eq!(backoff(&s), Some(want));
            assert_eq!(s.health.cooling().unwrap().until, start + want);
            tokio::time::advance(want - Duration::from_millis(1)).await;
            assert!(!s.reprobe_due(Instant::now()), "due before {want:?}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(s.reprobe_due(Instant::now()), "not due after {want:?}");
            seen.push(want.as_secs());
            // The re-probe runs and fails.
            s.reprobe_started(Instant::now());
            assert!(
                !s.reprobe_due(Instant::now()),
                "a second probe while one runs"
            );
            s.record_fault(&reset(), false);
            s.reprobe_ended();
            want = (want * 2).min(MAX_BACKOFF);
        }
        assert_eq!(seen, [5, 10, 20, 40, 80, 120, 120, 120]);
    }

    /// On a paused clock: with no other host left, a cooling node may be
    /// probed before its backoff ends, but at most once per `URGENT_EVERY`.
    #[tokio::test(start_paused = true)]
    async fn an_urgent_reprobe_runs_at_most_once_per_second() {
        let mut s = NodeState::default();
        s.record_fault(
            &err(ErrorKind::Refused {
                reason: "refused".into(),
            }),
            false,
        );
        let now = Instant::now();
        assert!(s.urgent_reprobe_due(now) && !s.reprobe_due(now));
        s.reprobe_started(now);
        s.record_fault(&reset(), false);
        s.reprobe_ended();
        tokio::time::advance(URGENT_EVERY - Duration::from_millis(1)).await;
        assert!(!s.urgent_reprobe_due(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.urgent_reprobe_due(Instant::now()));
    }

    /// On a paused clock: the scheduler's early re-probes (a task with no
    /// other host probes once a second) count no new failure and keep the
    /// backoff said when the node cooled; a request that fails meanwhile
    /// counts; the re-probe once the backoff has passed doubles it.
    #[tokio::test(start_paused = true)]
    async fn early_reprobes_neither_count_nor_lengthen_the_backoff() {
        let mut s = NodeState::default();
        let refused = err(ErrorKind::Refused {
            reason: "Connection refused (os error 111)".into(),
        });
        assert_eq!(
            s.record_fault(&refused, true),
            Transition::Cooled(FIRST_BACKOFF)
        );
        for _ in 0..4 {
            tokio::time::advance(URGENT_EVERY).await;
            s.reprobe_started(Instant::now());
            s.record_fault(&refused, false);
            s.reprobe_ended();
        }
        assert_eq!(s.describe(), "cooling (1 failure; backoff 5s)");
        s.record_fault(&reset(), true);
        assert_eq!(s.describe(), "cooling (2 failures; backoff 10s)");
        tokio::time::advance(FIRST_BACKOFF * 2).await;
        s.reprobe_started(Instant::now());
        s.record_fault(&refused, false);
        s.reprobe_ended();
        assert_eq!(s.describe(), "cooling (3 failures; backoff 20s)");
    }

    #[test]
    fn a_node_that_fails_after_each_readmission_waits_longer_each_time() {
        let mut s = NodeState::default();
        s.record_fault(&reset(), true);
        assert_eq!(
            s.record_fault(&reset(), true),
            Transition::Cooled(FIRST_BACKOFF)
        );
        s.record_probe_ok();
        assert!(s.health.is_suspect());
        assert_eq!(
            s.record_fault(&reset(), true),
            Transition::Cooled(FIRST_BACKOFF * 2)
        );
        s.record_probe_ok();
        assert_eq!(
            s.record_fault(&reset(), true),
            Transition::Cooled(FIRST_BACKOFF * 4)
        );
    }

    #[test]
    fn refused_cools_at_once_and_a_probe_readmits() {
        let mut s = NodeState::default();
        let t = s.record_fault(
            &err(ErrorKind::Refused {
                reason: "refused".into(),
            }),
            false,
        );
        assert_eq!(t, Transition::Cooled(FIRST_BACKOFF));
        assert!(s.record_probe_ok());
        assert_eq!(s.health, Health::Healthy);
    }

    #[test]
    fn a_probe_after_request_failures_only_makes_a_node_suspect() {
        let mut s = NodeState::default();
        s.record_fault(&reset(), true);
        s.record_fault(&reset(), true);
        assert!(s.record_probe_ok());
        assert!(s.health.is_suspect());
        assert_eq!(s.consecutive_failures(), 2);
    }

    #[test]
    fn a_busy_node_keeps_its_failures_and_a_cooling_one_stays_cooling() {
        let mut s = NodeState::default();
        s.record_fault(&reset(), true);
        s.record_probe_slow();
        assert_eq!(s.health.word(), "busy");
        assert_eq!(s.last_error(), Some(reset().short().as_str()));
        // The next failure is the second in a row.
        assert!(matches!(
            s.record_fault(&reset(), true),
            Transition::Cooled(_)
        ));
        s.record_probe_slow();
        assert!(s.cooling());
    }

    #[tokio::test(start_paused = true)]
    async fn another_instances_cooling_and_recovery() {
        let mut s = NodeState::default();
        s.record_success();
        let until = Instant::now() + Duration::from_secs(30);
        s.cool_until(until, 3);
        assert_eq!(s.describe(), "cooling (3 failures; backoff 30s)");
        // A shorter report keeps the later end and the larger count.
        s.cool_until(Instant::now() + Duration::from_secs(1), 1);
        let c = s.health.cooling().unwrap();
        assert_eq!((c.until, c.failures.count), (until, 3));
        // A recovery seen before the cooling began does not end it; one after does.
        tokio::time::advance(Duration::from_secs(2)).await;
        s.recovered_elsewhere(Duration::from_secs(3));
        assert!(s.cooling());
        s.recovered_elsewhere(Duration::from_secs(1));
        assert_eq!(s.describe(), "suspect");
    }

    #[test]
    fn too_large_is_not_a_node_fault() {
        let mut s = NodeState::default();
        let t = s.record_fault(
            &err(ErrorKind::TooLarge {
                message: "x".into(),
            }),
            true,
        );
        assert_eq!(t, Transition::None);
        assert_eq!(s.health, Health::Unknown);
        assert_eq!(s.consecutive_failures(), 0);
    }
}
