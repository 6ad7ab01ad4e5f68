//! What the gateway shares between requests: the process's scheduler and
//! client, the dashboard hub, its counters, and the app's current view of
//! the cluster, which the app replaces whenever it changes (a node added, the
//! routing path switched, the coordinator started).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics::Metrics;
use super::Config;
use crate::config::choices::Route;
use crate::config::effective::Effective;
use crate::dashboard::Hub;
use crate::nodes::Node;
use crate::ollama::{Client, Timeouts};
use crate::pipeline::agents::Agent;
use crate::scheduler::{Policy, Scheduler};

/// What a typed query would use right now (`/api/orchestrate` runs the same).
#[derive(Clone)]
pub struct QuerySetup {
    /// The nodes a query may use in the current mode.
    pub nodes: Vec<Arc<Node>>,
    pub agents: Vec<Agent>,
    /// The settings in force in the shell: the plan comes from them through
    /// `pipeline::plan::QueryPlan`, as the shell's does.
    pub effective: Arc<Effective>,
    /// The knowledge base the shell has loaded (shared: loaded once for both).
    pub rag: crate::rag::Cache,
}

/// The app's view of the cluster, as the gateway uses it.
#[derive(Clone)]
pub struct View {
    /// Every node requests may go to (the gateway's own address left out).
    pub nodes: Vec<Arc<Node>>,
    /// The llama.cpp coordinator, when one is running.
    pub coordinator: Option<Arc<Node>>,
    /// Model names the app routes to the coordinator (listed in `/api/tags`).
    pub coordinator_models: Vec<String>,
    pub query: QuerySetup,
}

impl View {
    /// How relayed requests use the nodes (the shell's strategy).
    pub fn policy(&self) -> Policy {
        let eff = &self.query.effective;
        crate::pipeline::plan::policy(eff.strategy, eff.route)
    }

    pub fn route(&self) -> Route {
        self.query.effective.route
    }

    /// `max_tokens` for requests to the coordinator that name none.
    pub fn num_predict(&self) -> u64 {
        self.query.effective.num_predict
    }

    /// Silence allowed once a reply has begun.
    pub fn idle(&self) -> Duration {
        self.query.effective.request_idle
    }
}

/// Everything a request handler can reach.
pub struct Shared {
    pub sched: Arc<Scheduler>,
    pub client: Client,
    pub hub: Arc<Hub>,
    pub metrics: Metrics,
    pub config: Config,
    /// Where the gateway listens (requests never go back to it).
    pub addr: SocketAddr,
    view: RwLock<Arc<View>>,
    /// Where request log lines go (stderr when headless; nowhere in the shell).
    log: Box<dyn Fn(&str) + Send + Sync>,
    /// When the model lists were last re-read because a model was not found.
    pub(super) tags_refreshed: Mutex<Option<Instant>>,
    /// Each node's last `/api/tags` entries (by URL): a node cooling down is
    /// not asked, and its models stay listed from here.
    pub(super) listed: Mutex<std::collections::HashMap<String, Vec<serde_json::Value>>>,
    /// Becomes true when the drain deadline passed: replies still running end
    /// with an error line.
    pub(super) cut: watch::Receiver<bool>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        sched: Arc<Scheduler>,
        client: Client,
        hub: Arc<Hub>,
        config: Config,
        addr: SocketAddr,
        view: View,
        log: Box<dyn Fn(&str) + Send + Sync>,
        cut: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            sched,
            client,
            hub,
            metrics: Metrics::default(),
            config,
            addr,
            view: RwLock::new(Arc::new(view)),
            log,
            tags_refreshed: Mutex::new(None),
            listed: Mutex::default(),
            cut,
            shutdown,
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_view(&self, v: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
    }

    pub fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// Limits for one relayed request: connect, silence once it began, and the
    /// outer bound (queue time included).
    pub(crate) fn limits(&self) -> Timeouts {
        let total = self.config.request_timeout;
        Timeouts::new(Duration::from_secs(3), self.view().idle().min(total), total)
    }

    /// A guess at how long a client turned away should wait: the queue ahead,
    /// spread over the hosts, times a usual request.
    pub(crate) fn retry_after(&self, nodes: &[Arc<Node>]) -> u64 {
        let view = crate::scheduler::estimate::ClusterView::of(nodes);
        let request_s = view.request_ms.unwrap_or(2000.0) / 1000.0;
        let hosts = nodes
            .iter()
            .map(|n| n.host.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            .max(1);
        let depth = self.sched.queue_depth() as f64;
        ((depth / hosts as f64) * request_s)
            .ceil()
            .clamp(1.0, 300.0) as u64
    }
}
