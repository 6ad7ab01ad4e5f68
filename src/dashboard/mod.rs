//! The live web dashboard (SPEC §9 `dashboard`): one page with the Ollama
//! nodes, the coordinator and the RPC backends, the running query's tasks and
//! recent routing decisions, updated by server-sent events; JSON endpoints and
//! Prometheus text for scripts.
//!
//! Self-contained: the app owns an `Arc<Hub>` and tells it what happens;
//! `start` serves it; `spawn_monitor` keeps node health fresh.
//!
//! Wiring (what the app calls, and when):
//! - registry changed (start-up, `add`, `remove`, `load`, `discover`):
//!   `hub.set_nodes(registry.nodes().to_vec())` (and restart the monitor);
//! - each finished request attempt (where `Scheduler::run` calls
//!   `record_request`): `hub.observe_latency(node.name(), &node.host, secs)` —
//!   this also pushes the node's new counters to open pages;
//! - `Observer::started` / `finished`: `hub.task_started(task, node)` /
//!   `hub.task_finished(task)`; `Observer::notice`: `hub.notice(line)`;
//! - a routing choice (a node picked for a task, a fallback, Ollama pool vs
//!   coordinator): `hub.routing(decision, reason)`;
//! - a query finished: `hub.set_metrics(result.metrics.clone())`;
//! - coordinator / RPC backend state: `hub.set_coordinator(Some(CoordinatorView))`,
//!   `hub.set_backends(vec![BackendView, ...])` (the types in `view` are the
//!   JSON the page and the endpoints read);
//! - node state changed some other way (`health`, `nodes` probes): `hub.touch()`
//!   (open pages also notice such changes within a second by themselves).
//!
//! `dashboard [--port P] [--bind ADDR]`: `start(hub, bind, port)` (default
//! 127.0.0.1:8080), print `exposure_warning(bind)` if any, keep the
//! `Dashboard` in the app; `dashboard stop`: `dashboard.stop().await`.

mod hub;
mod monitor;
pub(crate) mod prom;
mod server;
mod view;

use std::net::IpAddr;

pub use hub::{GatewaySource, Histogram, Hub, HubTap, KEEP_RECENT, LATENCY_BUCKETS};
pub use monitor::{spawn_monitor, tcp_reachable};
pub use server::{loopback_host, routes, snapshots, start, Dashboard, KEEP_ALIVE, MIN_GAP, POLL};
pub use view::{
    BackendStatus, BackendView, CoordinatorProcess, CoordinatorStatus, CoordinatorView,
    GatewayRequest, GatewayView, LoadedView, NodeView, Notice, RoutingEntry, Snapshot, TaskView,
    WaitsView,
};

/// Default address and port of `dashboard`.
pub(crate) const DEFAULT_PORT: u16 = 8080;

/// The warning to print when the dashboard listens beyond this machine.
pub(crate) fn exposure_warning(bind: IpAddr) -> Option<String> {
    (!bind.is_loopback()).then(|| {
        format!(
            "⚠️  the dashboard listens on {bind}, not only on this machine: anyone who can \
             reach it sees your nodes, models and routing (there is no password); \
             use --bind 127.0.0.1 to keep it local"
        )
    })
}

/// The Prometheus text of `/metrics` for `hub`.
pub(crate) fn prometheus_text(hub: &Hub) -> String {
    prom::render(hub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_beyond_loopback() {
        assert!(exposure_warning("127.0.0.1".parse().unwrap()).is_none());
        assert!(exposure_warning("::1".parse().unwrap()).is_none());
        let w = exposure_warning("0.0.0.0".parse().unwrap()).unwrap();
        assert!(w.contains("0.0.0.0"), "{w}");
        assert!(exposure_warning("192.168.1.5".parse().unwrap()).is_some());
    }
}
