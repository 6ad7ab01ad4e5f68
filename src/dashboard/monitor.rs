//! Background monitoring: probe the nodes every so often, keep their live state
//! fresh for the page, and report nodes going down and coming back.
//!
//! RPC backends and the coordinator are not probed here: the integrator can
//! check backends with [`tcp_reachable`] and the coordinator's `/health` with
//! its own client on the same schedule, then call `Hub::set_backends` /
//! `Hub::set_coordinator` (and `Hub::notice` on a change).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::hub::Hub;
use crate::nodes::health::probe_all;
use crate::nodes::{Health, Node};
use crate::ollama::Client;

/// Shortest interval the monitor accepts.
pub(crate) const MIN_EVERY: Duration = Duration::from_millis(10);

/// Probe `nodes` (tags and ps) at once every `every`, the first time at once.
/// A node that fails a probe after being up (or never seen) is reported as
/// "⚠️ node NAME is down (why)"; one that answers again after that as
/// "✅ node NAME is back". Each report goes to `hub.notice` and `on_change`.
/// The task runs until aborted (abort it and start another when the node
/// list changes).
pub fn spawn_monitor(
    hub: Arc<Hub>,
    client: Client,
    nodes: Vec<Arc<Node>>,
    every: Duration,
    on_change: impl Fn(String) + Send + Sync + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut up: Vec<Option<bool>> = nodes
            .iter()
            .map(|n| match n.state().health {
                Health::Healthy | Health::Busy(_) | Health::Suspect(_) => Some(true),
                Health::Cooling(_) => Some(false),
                Health::Unknown => None,
            })
            .collect();
        let mut tick = tokio::time::interval(every.max(MIN_EVERY));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let results = probe_all(&client, &nodes, true, &*hub).await;
            for (was, r) in up.iter_mut().zip(&results) {
                let line = match (*was, r.ok) {
                    (Some(true) | None, false) => {
                        Some(format!("⚠️ node {} is down ({})", r.node.name(), r.detail))
                    }
                    (Some(false), true) => Some(format!("✅ node {} is back", r.node.name())),
                    _ => None,
                };
                *was = Some(r.ok);
                if let Some(line) = line {
                    hub.notice(line.clone());
                    on_change(line);
                }
            }
            // Counters, models and loaded models may have changed.
            hub.touch();
        }
    })
}

/// True when a TCP connection to `addr` (`HOST:PORT`) opens within `timeout`:
/// the check for llama.cpp RPC backends, which speak no HTTP.
pub async fn tcp_reachable(addr: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
