//! Deadlines and hedging decisions derived from the nodes' latency models.
//!
//! - A request's first-token deadline (past it, the request is stalled and the
//!   node gets the blame) is generous: ten times the node's usual time to first
//!   token, plus the time to load the model when the node does not have it in
//!   memory, plus the prompt's evaluation time, never under `FIRST_TOKEN_FLOOR`.
//!   A suspect node is on probation: three usual times, plus a model load only
//!   when one was measured there, never under `PROBATION_FLOOR`.
//! - Its stall deadline (silence once tokens flow) is thirty token gaps, never
//!   under `STALL_FLOOR`.
//! - Hedging is eager, because it only ever uses a host that is idle: a request
//!   with no first token after `HEDGE_FACTOR` × the cluster's usual time to first
//!   token, or one streaming so slowly that a fresh start elsewhere would finish
//!   well before it, is started again on a free host; the first reply wins.
//!
//! The agent timeout stays the outer bound of everything.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::progress::Progress;
use crate::nodes::latency::{self, median};
use crate::nodes::Node;

pub(crate) const FIRST_TOKEN_FLOOR: Duration = Duration::from_secs(10);
/// A suspect node is on probation: it gets a much shorter first-token deadline.
pub(crate) const PROBATION_FLOOR: Duration = Duration::from_secs(2);
pub(crate) const STALL_FLOOR: Duration = Duration::from_secs(5);
/// Hedge a request still without a first token after this many usual first-token times.
pub(crate) const HEDGE_FACTOR: f64 = 3.0;
/// Never hedge sooner than this.
pub(crate) const HEDGE_FLOOR: Duration = Duration::from_millis(300);
/// A streaming request is hedged only when a fresh start elsewhere would take
/// less than its remaining time divided by this.
pub(crate) const SLOW_MARGIN: f64 = 2.0;
/// ... and would save at least this much.
pub(crate) const MIN_SAVING: Duration = Duration::from_secs(1);

/// What the cluster (the nodes of a pool) usually does, as medians of the
/// nodes' models, with the priors where nothing was measured yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterView {
    pub ttft_ms: f64,
    pub tokens_per_sec: f64,
    pub reply_tokens: f64,
    /// Median time of a whole request on nodes that answered (ms).
    pub request_ms: Option<f64>,
    /// Prompt tokens evaluated per second, where nodes report it.
    pub prompt_tokens_per_sec: Option<f64>,
}

impl ClusterView {
    pub fn of(nodes: &[Arc<Node>]) -> ClusterView {
        let mut ttft = Vec::new();
        let mut tps = Vec::new();
        let mut reply = Vec::new();
        let mut req = Vec::new();
        let mut prompt = Vec::new();
        for n in nodes {
            let st = n.state();
            prompt.extend(st.latency.prompt_tokens_per_sec.get());
            ttft.extend(st.latency.ttft_p95_ms());
            tps.extend(st.latency.tokens_per_sec.get());
            reply.extend(st.latency.reply_tokens.get());
            req.extend(st.recent_latency_ms);
        }
        ClusterView {
            ttft_ms: median(ttft).unwrap_or(latency::PRIOR_TTFT.as_secs_f64() * 1000.0),
            tokens_per_sec: median(tps).unwrap_or(latency::PRIOR_TOKENS_PER_SEC),
            reply_tokens: median(reply).unwrap_or(latency::PRIOR_REPLY_TOKENS),
            request_ms: median(req),
            prompt_tokens_per_sec: median(prompt),
        }
    }

    /// Usual time to the first token for a prompt of this size (ms).
    pub(crate) fn ttft_for(&self, prompt_tokens: usize) -> f64 {
        self.ttft_ms
            + self
                .prompt_tokens_per_sec
                .map(|r| prompt_tokens as f64 / r.max(1.0) * 1000.0)
                .unwrap_or(0.0)
    }
}

/// Usual time to first token on `node` (its own p95, else the cluster's).
fn ttft_ms(node: &Node, cluster: &ClusterView) -> f64 {
    node.state()
        .latency
        .ttft_p95_ms()
        .unwrap_or(cluster.ttft_ms)
}

fn tokens_per_sec(node: &Node, cluster: &ClusterView) -> f64 {
    node.state()
        .latency
        .tokens_per_sec
        .get()
        .unwrap_or(cluster.tokens_per_sec)
        .max(0.1)
}

/// How long `node` may take to start replying before the request counts as stalled.
pub(crate) fn first_token_deadline(
    node: &Node,
    model: &str,
    prompt_tokens: usize,
    cluster: &ClusterView,
) -> Duration {
    let st = node.state();
    let loaded = st
        .loaded
        .iter()
        .any(|m| crate::ollama::types::same_model(&m.name, model));
    let measured_load = st.latency.load_ms.get();
    let load_ms = if loaded {
        0.0
    } else {
        measured_load.unwrap_or(latency::PRIOR_LOAD.as_secs_f64() * 1000.0)
    };
    let prompt_ms = st
        .latency
        .prompt_tokens_per_sec
        .get()
        .map(|r| prompt_tokens as f64 / r.max(1.0) * 1000.0 * 2.0)
        .unwrap_or(0.0);
    let own = st.latency.ttft_p95_ms().unwrap_or(cluster.ttft_ms);
    let probation = st.health.is_suspect();
    drop(st);
    if probation {
        // It failed recently: as patient as a hedge would be, no more; a
        // model load only when one was seen there (not the prior).
        let load_ms = if loaded {
            0.0
        } else {
            measured_load.unwrap_or(0.0)
        };
        let ms = HEDGE_FACTOR * cluster.ttft_ms.max(own) + load_ms + prompt_ms;
        return Duration::from_secs_f64(ms / 1000.0).max(PROBATION_FLOOR);
    }
    let ms = 10.0 * own + load_ms + prompt_ms;
    Duration::from_secs_f64(ms / 1000.0).max(FIRST_TOKEN_FLOOR)
}

/// The longest silence allowed on `node` once its reply has started.
pub(crate) fn stall_deadline(node: &Node, cluster: &ClusterView) -> Duration {
    Duration::from_secs_f64(30.0 / tokens_per_sec(node, cluster)).max(STALL_FLOOR)
}

/// Expected time for a fresh start of a request on `node`.
fn fresh_ms(node: &Node, cluster: &ClusterView) -> f64 {
    ttft_ms(node, cluster) + cluster.reply_tokens / tokens_per_sec(node, cluster) * 1000.0
}

/// Whether an attempt that has been running as `progress` shows should be
/// started again on `free` (an idle node of another host); the reason if so.
pub(crate) fn should_hedge(
    progress: &Progress,
    prompt_tokens: usize,
    free: &Node,
    cluster: &ClusterView,
    now: Instant,
) -> Option<String> {
    let elapsed = now.saturating_duration_since(progress.started);
    match progress.first_token_at() {
        None => {
            let usual = cluster.ttft_for(prompt_tokens);
            let after = Duration::from_secs_f64(HEDGE_FACTOR * usual / 1000.0).max(HEDGE_FLOOR);
            (elapsed > after).then(|| {
                format!(
                    "no first token after {} (usually {})",
                    human(elapsed.as_secs_f64() * 1000.0),
                    human(usual)
                )
            })
        }
        Some(first) => {
            let streaming = now.saturating_duration_since(first).as_secs_f64();
            let pieces = progress.pieces() as f64;
            if streaming < 0.5 || pieces < 5.0 {
                return None;
            }
            let rate = pieces / streaming;
            let left = (cluster.reply_tokens - pieces).max(cluster.reply_tokens * 0.1);
            let remaining_ms = left / rate * 1000.0;
            let fresh = fresh_ms(free, cluster);
            (remaining_ms > SLOW_MARGIN * fresh
                && remaining_ms - fresh > MIN_SAVING.as_secs_f64() * 1000.0)
                .then(|| {
                    format!(
                        "streaming at {rate:.1} tokens/s: about {} left, {} elsewhere",
                        human(remaining_ms),
                        human(fresh)
                    )
                })
        }
    }
}

/// Milliseconds as a person reads them: "40 ms", "2.5s".
pub(crate) fn human(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;
    use crate::nodes::latency::Sample;

    fn node() -> Node {
        Node::new(
            NodeEntry {
                url: "http://a:1".into(),
                name: "a".into(),
                priority: 0,
                host_id: Some("A".into()),
                extra: Default::default(),
            },
            false,
        )
    }

    fn cluster(ttft_ms: f64, tps: f64) -> ClusterView {
        ClusterView {
            ttft_ms,
            tokens_per_sec: tps,
            reply_tokens: 100.0,
            request_ms: None,
            prompt_tokens_per_sec: None,
        }
    }

    #[test]
    fn an_unknown_node_gets_a_generous_first_token_deadline() {
        let n = node();
        let c = ClusterView::of(&[]);
        // 10 × the 1 s prior + 30 s to load the model.
        assert_eq!(
            first_token_deadline(&n, "m", 0, &c),
            Duration::from_secs(40)
        );
        n.state().latency.record(&Sample {
            first_token_ms: Some(50.0),
            tokens_per_sec: Some(100.0),
            ..Default::default()
        });
        n.state().loaded.push(crate::ollama::types::LoadedModel {
            name: "m:latest".into(),
            ..Default::default()
        });
        assert_eq!(first_token_deadline(&n, "m", 0, &c), FIRST_TOKEN_FLOOR);
        assert_eq!(stall_deadline(&n, &c), STALL_FLOOR);
        n.state().record_fault(
            &crate::ollama::ClientError::new("u", crate::ollama::ErrorKind::Stall { secs: 1.0 }),
            true,
        );
        assert_eq!(
            first_token_deadline(&n, "m", 0, &cluster(50.0, 100.0)),
            PROBATION_FLOOR
        );
    }

    #[test]
    fn a_suspect_node_gets_no_model_load_allowance_it_never_saw() {
        let n = node();
        let c = ClusterView::of(&[]);
        n.state().record_fault(
            &crate::ollama::ClientError::new(
                "u",
                crate::ollama::ErrorKind::NoFirstToken { secs: 40.0 },
            ),
            true,
        );
        // Nothing measured, the model not loaded: 3 × the 1 s prior, not
        // 3 s + the 30 s prior for loading the model.
        assert_eq!(first_token_deadline(&n, "m", 0, &c), Duration::from_secs(3));
        // A load measured there is allowed for.
        n.state().latency.record(&Sample {
            load_ms: Some(2000.0),
            ..Default::default()
        });
        assert_eq!(first_token_deadline(&n, "m", 0, &c), Duration::from_secs(5));
    }

    #[test]
    fn hedge_a_missing_first_token_after_three_usual_times() {
        let p = Progress::new();
        let free = node();
        let c = cluster(200.0, 50.0);
        assert!(should_hedge(&p, 0, &free, &c, p.started + Duration::from_millis(500)).is_none());
        assert!(should_hedge(&p, 0, &free, &c, p.started + Duration::from_millis(700)).is_some());
    }

    #[test]
    fn hedge_a_slow_stream_only_when_a_fresh_start_wins_clearly() {
        let p = Progress::new();
        let c = cluster(100.0, 50.0);
        let free = node();
        p.piece_at(p.started + Duration::from_millis(100));
        for _ in 0..9 {
            p.piece_at(p.started + Duration::from_millis(200));
        }
        // 10 tokens in 1 s: 90 left at 10/s = 9 s; fresh elsewhere: 0.1 + 2 s.
        let now = p.started + Duration::from_millis(1100);
        assert!(should_hedge(&p, 0, &free, &c, now).is_some());
        // At 50 tokens/s the stream is as fast as a fresh start: no hedge.
        let q = Progress::new();
        q.piece_at(q.started + Duration::from_millis(100));
        for _ in 0..49 {
            q.piece_at(q.started + Duration::from_millis(900));
        }
        assert!(should_hedge(&q, 0, &free, &c, q.started + Duration::from_millis(1100)).is_none());
    }
}
