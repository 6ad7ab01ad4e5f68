//! The hub: everything the dashboard shows, updated by the app. Per-node
//! counters are not copied here: they are read from the shared `Arc<Node>`s
//! whenever a snapshot is taken, so they are never stale.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::view::{
    BackendView, CoordinatorView, GatewayView, NodeView, Notice, RoutingEntry, Snapshot, TaskView,
};
use crate::nodes::health::Load;
use crate::nodes::registry::NodeState;
use crate::nodes::{Health, Node};
use crate::report::Metrics;

/// Routing decisions (and notices) kept for the page.
pub const KEEP_RECENT: usize = 50;

/// Upper bounds (seconds) of the request-latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// One node's request-latency histogram (Prometheus style, cumulative on output).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub host: String,
    /// Per-bucket counts (not cumulative); the last entry is the `+Inf` bucket.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Cumulative counts, one per bucket of `LATENCY_BUCKETS` then `+Inf`.
    pub(crate) fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Inner {
    nodes: Vec<Arc<Node>>,
    coordinator: Option<CoordinatorView>,
    backends: Vec<BackendView>,
    metrics: Option<Arc<Metrics>>,
    /// Running tasks: label → (node, started at, unix ms).
    tasks: BTreeMap<String, (String, u64)>,
    routing: VecDeque<RoutingEntry>,
    notices: VecDeque<Notice>,
    latency: BTreeMap<String, Histogram>,
}

/// Something else that wants to hear what the hub hears (the Redis event
/// publisher). Called after the hub changed, outside its lock; must not block.
pub trait HubTap: Send + Sync {
    /// A task of a query got a node, and why that one.
    fn node_picked(&self, _task: &str, _node: &Node, _reason: &str) {}
    /// The coordinator changed (`None` = there is none).
    fn coordinator_changed(
        &self,
        _before: Option<&CoordinatorView>,
        _after: Option<&CoordinatorView>,
    ) {
    }
    /// The RPC backend list changed.
    fn backends_changed(&self, _before: &[BackendView], _after: &[BackendView]) {}
    /// A query finished with these metrics.
    fn metrics(&self, _metrics: &Metrics) {}
}

/// The shared state the dashboard shows. Every change bumps a version that
/// subscribers (the page's event streams) watch.
pub struct Hub {
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
    tap: RwLock<Option<Arc<dyn HubTap>>>,
    /// The gateway's traffic, read when a snapshot is taken.
    gateway: RwLock<Option<GatewaySource>>,
    /// Who knows the requests in flight per node (the scheduler's slot table).
    load: RwLock<Option<Weak<dyn Load>>>,
}

/// Something that describes the gateway's traffic on demand (`None`: it has stopped).
pub type GatewaySource = Arc<dyn Fn() -> Option<GatewayView> + Send + Sync>;

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("version", &self.version())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn push_recent<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    while q.len() > KEEP_RECENT {
        q.pop_front();
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            inner: Mutex::new(Inner::default()),
            version: watch::channel(0).0,
            tap: RwLock::new(None),
            gateway: RwLock::new(None),
            load: RwLock::new(None),
        }
    }

    /// Read the requests in flight per node from `load` (the scheduler).
    pub(crate) fn set_load(&self, load: Weak<dyn Load>) {
        *self.load.write().unwrap_or_else(|e| e.into_inner()) = Some(load);
    }

    /// Show the gateway's traffic (`None`: no gateway runs).
    pub(crate) fn set_gateway(&self, source: Option<GatewaySource>) {
        *self.gateway.write().unwrap_or_else(|e| e.into_inner()) = source;
        self.touch();
    }

    /// Tell `tap` about changes from now on (`None` stops it).
    pub fn set_tap(&self, tap: Option<Arc<dyn HubTap>>) {
        *self.tap.write().unwrap_or_else(|e| e.into_inner()) = tap;
    }

    pub fn tap(&self) -> Option<Arc<dyn HubTap>> {
        self.tap.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the state and tell every subscriber.
    fn update(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.lock());
        self.touch();
    }

    /// Tell subscribers something changed that the hub cannot see by itself
    /// (e.g. a node's counters after a probe made outside the monitor).
    pub(crate) fn touch(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver that wakes on every change (changes coalesce while unread).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The nodes to show; their live state is read at request time.
    pub fn set_nodes(&self, nodes: Vec<Arc<Node>>) {
        self.update(|s| s.nodes = nodes);
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.lock().nodes.clone()
    }

    /// The llama.cpp coordinator (`None` when there is none).
    pub fn set_coordinator(&self, coordinator: Option<CoordinatorView>) {
        let mut before = None;
        self.update(|s| before = std::mem::replace(&mut s.coordinator, coordinator.clone()));
        if let Some(t) = self.tap().filter(|_| before != coordinator) {
            t.coordinator_changed(before.as_ref(), coordinator.as_ref());
        }
    }

    /// The RPC backends.
    pub fn set_backends(&self, backends: Vec<BackendView>) {
        let mut before = Vec::new();
        self.update(|s| before = std::mem::replace(&mut s.backends, backends.clone()));
        if let Some(t) = self.tap().filter(|_| before != backends) {
            t.backends_changed(&before, &backends);
        }
    }

    /// The last query's metrics (`QueryResult::metrics`).
    pub fn set_metrics(&self, metrics: impl Into<Arc<Metrics>>) {
        let metrics = metrics.into();
        if let Some(t) = self.tap() {
            t.metrics(&metrics);
        }
        self.update(|s| s.metrics = Some(metrics));
    }

    /// A task of the running query started (or was retried) on `node`.
    pub fn task_started(&self, task: &str, node: &str) {
        self.update(|s| {
            s.tasks
                .insert(task.to_string(), (node.to_string(), now_ms()));
        });
    }

    pub fn task_finished(&self, task: &str) {
        self.update(|s| {
            s.tasks.remove(task);
        });
    }

    /// A routing decision and why it was made; the last `KEEP_RECENT` are kept.
    pub fn routing(&self, decision: impl Into<String>, reason: impl Into<String>) {
        let v = RoutingEntry {
            at_ms: now_ms(),
            decision: decision.into(),
            reason: reason.into(),
        };
        self.update(|s| push_recent(&mut s.routing, v));
    }

    /// A line worth showing (a node went down, came back…); the last `KEEP_RECENT` are kept.
    pub fn notice(&self, line: impl Into<String>) {
        let v = Notice {
            at_ms: now_ms(),
            line: line.into(),
        };
        self.update(|s| push_recent(&mut s.notices, v));
    }

    /// Record one request's latency for the `/metrics` histogram.
    pub fn observe_latency(&self, node: &str, host: &str, seconds: f64) {
        self.update(|s| {
            let h = s.latency.entry(node.to_string()).or_default();
            if h.host.is_empty() {
                h.host = host.to_string();
            }
            h.observe(seconds.max(0.0));
        });
    }

    /// The latency histograms by node name.
    pub fn latency(&self) -> BTreeMap<String, Histogram> {
        self.lock().latency.clone()
    }

    pub fn coordinator(&self) -> Option<CoordinatorView> {
        self.lock().coordinator.clone()
    }

    pub fn backends(&self) -> Vec<BackendView> {
        self.lock().backends.clone()
    }

    /// The last query's metrics (`None` before the first).
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.lock().metrics.clone()
    }

    /// Every node as the page and `/api/nodes` show it.
    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes()
            .iter()
            .map(|n| NodeView::of(n, self.in_flight(n)))
            .collect()
    }

    /// Everything at once: what the event stream sends.
    pub fn snapshot(&self) -> Snapshot {
        let version = self.version();
        let nodes = self.node_views();
        let gateway = self
            .gateway
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .and_then(|f| f());
        let s = self.lock();
        let tasks = s
            .tasks
            .iter()
            .map(|(t, (node, at))| TaskView {
                task: t.clone(),
                node: node.clone(),
                started_at_ms: *at,
            })
            .collect();
        Snapshot {
            version,
            nodes,
            coordinator: s.coordinator.clone(),
            backends: s.backends.clone(),
            metrics: s.metrics.clone(),
            tasks,
            routing: s.routing.iter().cloned().collect(),
            notices: s.notices.iter().cloned().collect(),
            gateway,
        }
    }
}

/// A node's status word: up, suspect (one recent failure), cooling (down,
/// re-probed with a growing backoff), busy (answering slowly while it works)
/// or unknown.
pub(crate) fn status_word(st: &NodeState) -> &'static str {
    match st.health {
        Health::Healthy => "up",
        Health::Suspect(_) => "suspect",
        Health::Cooling(_) => "cooling",
        Health::Busy(_) => "busy",
        Health::Unknown => "unknown",
    }
}

/// The hub answers with its scheduler's slot table (0 before one is set, or
/// once it is gone).
impl Load for Hub {
    fn in_flight(&self, node: &Node) -> u32 {
        let load = self
            .load
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        load.map_or(0, |l| l.in_flight(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;
    use crate::ollama::types::LoadedModel;
    use std::time::Duration;

    fn node(url: &str, name: &str) -> Arc<Node> {
        Arc::new(Node::new(
            NodeEntry {
                url: url.into(),
                name: name.into(),
                priority: 0,
                host_id: None,
                extra: Default::default(),
            },
            true,
        ))
    }

    #[test]
    fn every_change_bumps_the_version_and_wakes_subscribers() {
        let hub = Hub::new();
        let mut rx = hub.subscribe();
        assert!(!rx.has_changed().unwrap());
        hub.notice("x");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        hub.routing("a", "b");
        hub.task_started("t", "n");
        assert_eq!(hub.version(), 3);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn keeps_the_last_fifty_routing_decisions() {
        let hub = Hub::new();
        for i in 0..60 {
            hub.routing(format!("d{i}"), "r");
        }
        let r = hub.snapshot().routing;
        assert_eq!(r.len(), KEEP_RECENT);
        assert_eq!(r[0].decision, "d10");
        assert_eq!(r[49].decision, "d59");
    }

    #[test]
    fn node_stats_are_read_live() {
        let hub = Hub::new();
        let n = node("http://127.0.0.1:1", "alpha");
        hub.set_nodes(vec![n.clone()]);
        assert_eq!(hub.node_views()[0].requests, 0);
        {
            let mut st = n.state();
            st.record_success();
            st.record_request(Duration::from_millis(200), true, Some(42.0));
            st.record_request(Duration::from_millis(10), false, None);
            st.loaded = vec![LoadedModel {
                name: "m".into(),
                size: 400,
                size_vram: 100,
                ..Default::default()
            }];
        }
        let j = &hub.node_views()[0];
        assert_eq!(j.status, "up");
        assert_eq!(j.requests, 2);
        assert_eq!(j.errors, 1);
        assert_eq!(j.avg_latency_ms, Some(200.0));
        assert_eq!(j.tokens_per_sec, Some(42.0));
        assert_eq!(j.vram_share, Some(0.25));
        assert_eq!(j.loaded[0].vram_share, 0.25);
    }

    #[test]
    fn tasks_come_and_go() {
        let hub = Hub::new();
        hub.task_started("Researcher", "alpha");
        hub.task_started("Critic", "beta");
        hub.task_started("Researcher", "gamma"); // a retry elsewhere
        hub.task_finished("Critic");
        let t = hub.snapshot().tasks;
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].node, "gamma");
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        h.observe(0.01);
        h.observe(0.3);
        h.observe(1000.0);
        let c = h.cumulative();
        assert_eq!(c[0], 1); // le 0.01
        assert_eq!(c[4], 1); // le 0.25
        assert_eq!(c[5], 2); // le 0.5
        assert_eq!(c[LATENCY_BUCKETS.len() - 1], 2);
        assert_eq!(*c.last().unwrap(), 3); // +Inf
        assert_eq!(h.count, 3);
    }
}
