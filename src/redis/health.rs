//! Node health shared by every orchestrator on the same Redis: a node one
//! instance cooled is cooling for all (until the same moment, with the larger
//! failure count), and a recovery one instance saw is seen by all.
//!
//! One hash per node, `synapticllamas:health:<node>`, with `state`
//! (`cooling` or `up`), `failures`, `by` (instance id) and `reason`. A cooling
//! entry expires when the cooling ends (its TTL *is* the time left, in Redis
//! server time); a recovery is kept for [`RECOVERED_KEEP`] so instances that
//! still have the node cooling locally learn about it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::instance;
use super::link::Link;
use crate::scheduler::HealthReports;
pub use crate::scheduler::NodeView;

/// How long a recovery stays visible.
pub(crate) const RECOVERED_KEEP: Duration = Duration::from_secs(60);
/// Limit for one read; past it the answer is "unknown".
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) fn health_key(node: &str) -> String {
    format!("synapticllamas:health:{node}")
}

/// KEYS[1]; ARGV = ms, failures, by, reason. Keeps the later end and the larger count.
static COOL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ms = tonumber(ARGV[1])
local f = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'state') == 'cooling' then
  local old = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') or 0
  if old > f then f = old end
  local left = redis.call('PTTL', KEYS[1])
  if left > ms then ms = left end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'cooling', 'failures', f, 'by', ARGV[3], 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ms)
return f
",
    )
});

/// KEYS[1]; ARGV = keep ms, by.
static RECOVERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'up', 'failures', 0, 'by', ARGV[2], 'reason', '')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
",
    )
});

enum Job {
    Cool {
        node: String,
        for_: Duration,
        failures: u32,
        reason: String,
    },
    Recovered {
        node: String,
    },
}

/// Publish and read shared node health; cheap to clone. Writes are queued
/// (they never wait on Redis); reads take one round trip or answer `Unknown`.
#[derive(Clone)]
pub struct SharedHealth {
    link: Arc<Link>,
    jobs: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for SharedHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHealth")
            .field("link", &self.link.state())
            .finish()
    }
}

impl SharedHealth {
    pub fn new(link: Arc<Link>) -> SharedHealth {
        SharedHealth {
            link,
            jobs: Arc::new(OnceLock::new()),
        }
    }

    /// Health that is never shared (no Redis).
    pub fn local() -> SharedHealth {
        SharedHealth::new(Link::off())
    }

    /// `node` (its URL) is cooling for `for_` after `failures` failures in a
    /// row. Instances that already had it cooling keep the later end and the
    /// larger count.
    pub fn report_cooling(&self, node: &str, for_: Duration, failures: u32, reason: &str) {
        self.submit(Job::Cool {
            node: node.to_string(),
            for_,
            failures,
            reason: reason.to_string(),
        });
    }

    /// `node` answered again: every instance may use it now.
    pub fn report_recovered(&self, node: &str) {
        self.submit(Job::Recovered {
            node: node.to_string(),
        });
    }

    fn submit(&self, job: Job) {
        if !self.link.is_connected() {
            return;
        }
        if self.jobs.get().is_none() && tokio::runtime::Handle::try_current().is_ok() {
            let (tx, rx) = mpsc::unbounded_channel();
            if self.jobs.set(tx).is_ok() {
                tokio::spawn(write(self.link.clone(), rx));
            }
        }
        if let Some(tx) = self.jobs.get() {
            let _ = tx.send(job);
        }
    }

    /// What the other instances say about `node`.
    pub async fn view(&self, node: &str) -> NodeView {
        self.views(&[node.to_string()])
            .await
            .remove(node)
            .unwrap_or(NodeView::Unknown)
    }

    /// The views of several nodes in one round trip (missing = `Unknown`).
    pub(crate) async fn views(&self, nodes: &[String]) -> HashMap<String, NodeView> {
        let keys: Vec<String> = nodes.iter().map(|n| health_key(n)).collect();
        let asked = Instant::now();
        let answer = self
            .link
            .call(OP_TIMEOUT, |mut c| async move {
                let mut p = redis::pipe();
                for k in &keys {
                    p.hgetall(k).pttl(k);
                }
                p.query_async::<Vec<redis::Value>>(&mut c).await
            })
            .await;
        let Ok(values) = answer else {
            return HashMap::new();
        };
        let mut values = values.into_iter();
        let mut out = HashMap::new();
        for n in nodes {
            let (Some(h), Some(t)) = (values.next(), values.next()) else {
                break;
            };
            let fields: HashMap<String, String> = redis::from_redis_value(h).unwrap_or_default();
            let pttl: i64 = redis::from_redis_value(t).unwrap_or(-2);
            out.insert(n.clone(), parse_view(&fields, pttl, asked));
        }
        out
    }
}

/// The scheduler's health view, shared through Redis.
impl HealthReports for SharedHealth {
    fn is_shared(&self) -> bool {
        self.link.is_connected()
    }

    fn report_cooling(&self, node: &str, for_: Duration, failures: u32, reason: &str) {
        SharedHealth::report_cooling(self, node, for_, failures, reason);
    }

    fn report_recovered(&self, node: &str) {
        SharedHealth::report_recovered(self, node);
    }

    fn views<'a>(&'a self, nodes: &'a [String]) -> BoxFuture<'a, HashMap<String, NodeView>> {
        Box::pin(SharedHealth::views(self, nodes))
    }
}

fn parse_view(fields: &HashMap<String, String>, pttl: i64, now: Instant) -> NodeView {
    let by = fields.get("by").cloned().unwrap_or_default();
    match fields.get("state").map(String::as_str) {
        Some("cooling") if pttl > 0 => NodeView::Cooling {
            until: now + Duration::from_millis(pttl as u64),
            failures: fields
                .get("failures")
                .and_then(|f| f.parse().ok())
                .unwrap_or(1),
            by,
            reason: fields.get("reason").cloned().unwrap_or_default(),
        },
        Some("up") if pttl > 0 => NodeView::Recovered {
            ago: RECOVERED_KEEP.saturating_sub(Duration::from_millis(pttl as u64)),
            by,
        },
        _ => NodeView::Unknown,
    }
}

async fn write(link: Arc<Link>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let _ = match job {
            Job::Cool {
                node,
                for_,
                failures,
                reason,
            } => {
                link.call(OP_TIMEOUT, |mut c| async move {
                    COOL.key(health_key(&node))
                        .arg(for_.as_millis().max(1) as u64)
                        .arg(failures)
                        .arg(instance::id())
                        .arg(reason)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await
            }
            Job::Recovered { node } => {
                link.call(OP_TIMEOUT, |mut c| async move {
                    RECOVERED
                        .key(health_key(&node))
                        .arg(RECOVERED_KEEP.as_millis() as u64)
                        .arg(instance::id())
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn views_from_the_hash_and_its_ttl() {
        let now = Instant::now();
        let v = parse_view(
            &fields(&[("state", "cooling"), ("failures", "3"), ("by", "a")]),
            1500,
            now,
        );
        assert_eq!(
            v,
            NodeView::Cooling {
                until: now + Duration::from_millis(1500),
                failures: 3,
                by: "a".into(),
                reason: String::new()
            }
        );
        let v = parse_view(&fields(&[("state", "up"), ("by", "b")]), 50_000, now);
        assert_eq!(
            v,
            NodeView::Recovered {
                ago: Duration::from_secs(10),
                by: "b".into()
            }
        );
        assert_eq!(parse_view(&fields(&[]), -2, now), NodeView::Unknown);
        assert_eq!(
            parse_view(&fields(&[("state", "cooling")]), -1, now),
            NodeView::Unknown
        );
    }
}
