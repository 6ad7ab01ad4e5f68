//! One node's live state: its place in the session's health view (healthy,
//! suspect, cooling, busy), its counters, and its latency model. Every request
//! outcome and every probe lands here, and every pick reads it.

use std::time::{Duration, Instant};

use super::context::ModelContext;
use super::latency::Latency;
use crate::ollama::types::LoadedModel;
use crate::ollama::{ClientError, ErrorKind};

/// The first cool-down; it doubles with every further failure up to `MAX_BACKOFF`.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// How often a task with no other host left may probe a cooling node early.
pub(crate) const URGENT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed or used yet.
    Unknown,
    Healthy,
    /// One recent failure: picked only when no healthy host can take the task soon.
    Suspect,
    /// Failures in a row: no requests until a re-probe succeeds (after `cooldown_until`).
    Cooling,
    /// Answers, but slowly (a probe timed out while it was working).
    Busy,
}

impl Health {
    /// One lower-case word (tables, JSON, the dashboard).
    pub fn word(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Suspect => "suspect",
            Health::Cooling => "cooling",
            Health::Busy => "busy",
        }
    }

    /// Known to answer (healthy or busy working).
    pub(crate) fn is_up(self) -> bool {
        matches!(self, Health::Healthy | Health::Busy)
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
    pub consecutive_failures: u32,
    /// While cooling: when the next re-probe may run.
    pub cooldown_until: Option<Instant>,
    /// The current cool-down length (doubles per failure while cooling).
    pub backoff: Duration,
    /// A re-probe of this node is running.
    pub reprobing: bool,
    /// When the last re-probe started.
    pub reprobed_at: Option<Instant>,
    /// When it last began cooling.
    pub cooled_at: Option<Instant>,
    /// The last failure came from a real request (a probe success alone does
    /// not make such a node healthy again, only suspect).
    failed_on_request: bool,
    pub last_error: Option<String>,
    pub models: Vec<String>,
    pub loaded: Vec<LoadedModel>,
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u32,
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
            consecutive_failures: 0,
            cooldown_until: None,
            backoff: FIRST_BACKOFF,
            reprobing: false,
            reprobed_at: None,
            cooled_at: None,
            failed_on_request: false,
            last_error: None,
            models: Vec::new(),
            loaded: Vec::new(),
            requests: 0,
            errors: 0,
            in_flight: 0,
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
        self.health == Health::Cooling
    }

    /// Cooling, and its next re-probe is due.
    pub(crate) fn reprobe_due(&self, now: Instant) -> bool {
        self.cooling() && !self.reprobing && self.cooldown_until.is_none_or(|t| now >= t)
    }

    /// Cooling, and worth probing now although its backoff has not passed: a
    /// task has no other host left (at most one such probe per `URGENT_EVERY`).
    pub(crate) fn urgent_reprobe_due(&self, now: Instant) -> bool {
        self.cooling()
            && !self.reprobing
            && self
                .reprobed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= URGENT_EVERY)
    }

    /// A real request succeeded: the node is healthy.
    pub(crate) fn record_success(&mut self) {
        self.health = Health::Healthy;
        self.consecutive_failures = 0;
        self.cooldown_until = None;
        self.backoff = FIRST_BACKOFF;
        self.failed_on_request = false;
        self.last_error = None;
    }

    /// A probe answered. Returns true when this re-admits a cooling node. A node
    /// whose last failure was a real request comes back as suspect: answering
    /// `/api/tags` does not prove it can generate.
    pub(crate) fn record_probe_ok(&mut self) -> bool {
        let was_cooling = self.cooling();
        if self.failed_on_request && self.consecutive_failures > 0 {
            self.health = Health::Suspect;
            self.cooldown_until = None;
        } else {
            self.record_success();
        }
        was_cooling
    }

    /// Another instance cooled this node until `until` after `failures`
    /// failures: cool it here too (the later end and the larger count win).
    pub(crate) fn cool_until(&mut self, until: Instant, failures: u32) {
        self.consecutive_failures = self.consecutive_failures.max(failures);
        let now = Instant::now();
        if !self.cooling() {
            self.health = Health::Cooling;
            self.cooled_at = Some(now);
        }
        self.backoff = until.saturating_duration_since(now).max(self.backoff);
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |t| t.max(until)));
    }

    /// Another instance saw this node answer `ago` ago: a cooling that began
    /// before that ends here too (as suspect: this instance has not seen it).
    pub(crate) fn recovered_elsewhere(&mut self, ago: Duration) {
        let seen = Instant::now().checked_sub(ago);
        let cooled_before = match (self.cooled_at, seen) {
            (Some(c), Some(s)) => c < s,
            _ => false,
        };
        if self.cooling() && cooled_before {
            self.health = Health::Suspect;
            self.cooldown_until = None;
        }
    }

    /// A probe got no answer in time while the node was working: busy, not down.
    pub(crate) fn record_probe_slow(&mut self) {
        if !self.cooling() {
            self.health = Health::Busy;
        }
    }

    /// A request or probe failed. `refused` failures (nothing listening) cool the
    /// node at once; others make it suspect first and cool it on the second in a row.
    pub(crate) fn record_fault(&mut self, err: &ClientError, from_request: bool) -> Transition {
        if !err.is_node_fault() {
            return Transition::None;
        }
        self.last_error = Some(err.short());
        self.failed_on_request = from_request;
        self.consecutive_failures += 1;
        let refused = matches!(err.kind, ErrorKind::Refused { .. });
        if self.cooling() {
            // A failed re-probe: wait longer before the next one.
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.cooldown_until = Some(Instant::now() + self.backoff);
            return Transition::None;
        }
        if refused || self.consecutive_failures >= 2 {
            self.health = Health::Cooling;
            self.cooled_at = Some(Instant::now());
            // A node that keeps failing after each re-admission waits longer each time.
            let doublings = self.consecutive_failures.saturating_sub(2).min(8);
            self.backoff = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
            self.cooldown_until = Some(Instant::now() + self.backoff);
            return Transition::Cooled(self.backoff);
        }
        let was = self.health;
        self.health = Health::Suspect;
        if was == Health::Suspect {
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
        match self.health {
            Health::Cooling => format!(
                "cooling ({} failures; backoff {:.0}s)",
                self.consecutive_failures,
                self.backoff.as_secs_f64()
            ),
            Health::Suspect => match &self.last_error {
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

    #[test]
    fn one_failure_is_suspect_two_cool_and_backoff_doubles() {
        let mut s = NodeState::default();
        assert_eq!(s.record_fault(&reset(), true), Transition::Suspect);
        assert_eq!(s.health, Health::Suspect);
        assert_eq!(
            s.record_fault(&reset(), true),
            Transition::Cooled(FIRST_BACKOFF)
        );
        assert!(s.cooling());
        assert_eq!(s.record_fault(&reset(), false), Transition::None);
        assert_eq!(s.backoff, FIRST_BACKOFF * 2);
        for _ in 0..10 {
            s.record_fault(&reset(), false);
        }
        assert_eq!(s.backoff, MAX_BACKOFF);
        s.record_success();
        assert_eq!(s.health, Health::Healthy);
        assert_eq!(s.backoff, FIRST_BACKOFF);
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
        assert_eq!(s.health, Health::Suspect);
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
        assert_eq!(s.health, Health::Suspect);
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
        assert_eq!(s.consecutive_failures, 0);
    }
}
