//! The sharding coordinator in the app: brought up (reused, found, or
//! started over the backends that answer) when a query needs it, accounted
//! after it, and shown in `nodes`.

use std::sync::Arc;
use std::time::Duration;

use super::{App, Sink};
use crate::blocking;
use crate::nodes::Node;
use crate::sharding::backends;
use crate::sharding::coordinator::{self, Coordinator, Health};
use crate::sharding::gguf;
use crate::sharding::route::{decide, Target};
use crate::sharding::ShardingError;
use crate::ui;

impl App {
    /// The coordinator node for this query: reused if healthy and current,
    /// one already running at the configured URL, or one started over the
    /// backends that answer.
    pub(super) async fn ensure_coordinator(
        &mut self,
        sink: &mut dyn Sink,
    ) -> Result<Arc<Node>, ShardingError> {
        let (up, down) = self.check_backends(sink).await;
        if let Some(node) = self.reuse_coordinator(&up, sink).await {
            return Ok(node);
        }
        let eff = self.cfg.effective();
        let (url, configured) = (eff.coordinator_url.clone(), eff.coordinator_configured);
        if coordinator::health(&self.cluster.client, &url).await == Health::Ready {
            sink.err(&format!(
                "🎯 Using the coordinator already running at {url}"
            ));
            self.cluster.sharding.coordinator = Some(Coordinator::found(url.clone()));
            return Ok(self.coordinator_node(&url).await);
        }
        if !self.cfg.settings().rpc_backends.is_empty() && up.is_empty() {
            return Err(ShardingError::NoBackends(down));
        }
        if self.cfg.settings().rpc_backends.is_empty() && configured {
            return Err(ShardingError::CoordinatorDown(url));
        }
        let c = self.start_coordinator(&url, &up, sink).await?;
        let url = c.url.clone();
        self.cluster.sharding.coordinator = Some(c);
        Ok(self.coordinator_node(&url).await)
    }

    /// Probe every configured backend (recording what was seen); the
    /// addresses that answer and those that do not, the latter said.
    async fn check_backends(&mut self, sink: &mut dyn Sink) -> (Vec<String>, Vec<String>) {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for b in self.cfg.settings().rpc_backends.clone() {
            let ok = backends::reachable(&b, Duration::from_millis(500)).await;
            let a = backends::addr(&b);
            let st = self.cluster.sharding.stats.entry(a.clone()).or_default();
            st.up = Some(ok);
            st.checked = Some(std::time::Instant::now());
            if ok {
                up.push(a)
            } else {
                down.push(a)
            }
        }
        for d in &down {
            sink.warn(&format!("⚠️  RPC backend {d} is down"));
        }
        (up, down)
    }

    /// The coordinator from before, if it is still right for `up` and
    /// answering; otherwise it is stopped (ours is said to restart).
    async fn reuse_coordinator(&mut self, up: &[String], sink: &mut dyn Sink) -> Option<Arc<Node>> {
        let mut old = self.cluster.sharding.coordinator.take()?;
        let current = !old.ours() || (old.alive() && old.backends == up);
        let url = old.url.clone();
        if current
            && matches!(
                coordinator::health(&self.cluster.client, &url).await,
                Health::Ready | Health::Busy
            )
        {
            self.cluster.sharding.coordinator = Some(old);
            return Some(self.coordinator_node(&url).await);
        }
        if old.ours() {
            sink.err("🔁 Restarting the coordinator on the backends that answer ...");
        }
        old.stop().await;
        None
    }

    /// Start llama-server at `url`'s port over the `up` backends, with the
    /// model this route sends to it.
    async fn start_coordinator(
        &mut self,
        url: &str,
        up: &[String],
        sink: &mut dyn Sink,
    ) -> Result<Coordinator, ShardingError> {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(coordinator::DEFAULT_PORT);
        let eff = self.cfg.effective();
        let model = eff
            .synthesis_model
            .clone()
            .filter(|_| eff.route.task_distribution())
            .unwrap_or_else(|| eff.model.clone());
        let env = self.cfg.env;
        let (gguf, bin) = blocking::try_run(move || {
            Ok::<_, ShardingError>((gguf::resolve(&model, env)?, coordinator::binary(env)?))
        })
        .await?;
        let log = self
            .cfg
            .home
            .join(format!(".synapticllamas_coordinator-{port}.log"));
        let extra = self.cfg.effective().coordinator_args.clone();
        let wait = self.cfg.effective().coordinator_start;
        sink.err(&format!(
            "🚀 Starting llama-server on 127.0.0.1:{port} with {} over {} backend(s) (log: {}) ...",
            gguf.display(),
            up.len(),
            log.display()
        ));
        let spinner = ui::progress::spinner("loading the model across the RPC backends");
        let c = Coordinator::start(
            &self.cluster.client,
            &bin,
            &gguf,
            port,
            up,
            &extra,
            &log,
            wait,
            &mut |_| spinner.tick(),
        )
        .await;
        spinner.finish_and_clear();
        let c = c?;
        sink.err(&format!(
            "✅ Coordinator ready at {} (PID {})",
            c.url,
            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ));
        Ok(c)
    }

    /// The coordinator's node (one per URL, so its health and latency history
    /// last), with its host's capacity set to llama-server's slot count.
    async fn coordinator_node(&mut self, url: &str) -> Arc<Node> {
        let node = match &self.cluster.sharding.node {
            Some(n) if n.url() == url => n.clone(),
            _ => {
                let n = Arc::new(Node::coordinator(url));
                self.cluster.sharding.node = Some(n.clone());
                n
            }
        };
        if let Some(slots) = coordinator::slots(&self.cluster.client, url).await {
            self.cluster.sched.set_capacity(&node.host, slots);
        }
        node
    }

    /// Whether this query needs the coordinator, with the routing lines to show.
    pub(super) fn routing(&self) -> (bool, Vec<String>) {
        let eff = self.cfg.effective();
        let route = eff.route;
        if !route.model_sharding() {
            return (false, Vec::new());
        }
        let mut models = vec![eff.model.clone()];
        if let Some(s) = &eff.synthesis_model {
            if !models.contains(s) {
                models.push(s.clone());
            }
        }
        let mut need = false;
        let mut lines = Vec::new();
        for m in models {
            let (t, why) = decide(route, &m);
            need |= t == Target::Coordinator;
            let backend = if t == Target::Coordinator {
                "llamacpp"
            } else {
                "ollama"
            };
            self.services.redis.route_decision(&m, backend, &why);
            lines.push(format!(
                "🔀 {m} → {}: {why}",
                if t == Target::Coordinator {
                    "coordinator"
                } else {
                    "Ollama pool"
                }
            ));
        }
        (need, lines)
    }

    /// After a query that used the coordinator: account it to the backends; on
    /// failure, name the backends that are down.
    pub(super) async fn after_coordinator_query(
        &mut self,
        ok: bool,
        seconds: f64,
    ) -> Option<String> {
        let Some(c) = &self.cluster.sharding.coordinator else {
            return None;
        };
        let backends: Vec<String> = c.backends.clone();
        for a in &backends {
            self.cluster
                .sharding
                .stats
                .entry(a.clone())
                .or_default()
                .record(ok, Duration::from_secs_f64(seconds));
        }
        if ok {
            return None;
        }
        let mut dead = Vec::new();
        for b in self.cfg.settings().rpc_backends.clone() {
            let up = backends::reachable(&b, Duration::from_millis(500)).await;
            let st = self
                .cluster
                .sharding
                .stats
                .entry(backends::addr(&b))
                .or_default();
            st.up = Some(up);
            st.checked = Some(std::time::Instant::now());
            if !up {
                dead.push(backends::addr(&b));
            }
        }
        (!dead.is_empty()).then(|| format!("RPC backend {} is down", dead.join(", ")))
    }

    pub(super) async fn print_coordinator_section(&mut self, sink: &mut dyn Sink) {
        if !self.cfg.settings().model_sharding_enabled
            && self.cluster.sharding.coordinator.is_none()
            && self.cfg.settings().coordinator_url.is_none()
        {
            return;
        }
        sink.out("🎯 COORDINATOR (llama.cpp model sharding)");
        let (url, _) = match &self.cluster.sharding.coordinator {
            Some(c) => (c.url.clone(), true),
            None => (self.cfg.effective().coordinator_url.clone(), true),
        };
        let status = match coordinator::health(&self.cluster.client, &url).await {
            Health::Ready => "✅ HEALTHY".to_string(),
            Health::Loading => "⏳ LOADING".to_string(),
            Health::Busy => "⏳ BUSY (connected, answering slowly while it works)".to_string(),
            Health::Down => "❌ OFFLINE".to_string(),
        };
        sink.out(&format!("   URL: {url}"));
        sink.out(&format!("   Status: {status}"));
        if let Some(n) = self
            .cluster
            .sharding
            .node
            .as_ref()
            .filter(|n| n.url() == url)
        {
            sink.out(&format!(
                "   Slots: {} ({} in flight)",
                self.cluster.sched.capacity(&n.host),
                self.cluster.sched.in_flight(&n.host)
            ));
        }
        match &self.cluster.sharding.coordinator {
            Some(c) => {
                if let Some(p) = c.pid {
                    sink.out(&format!(
                        "   PID: {p} (started by this shell; stopped when it exits)"
                    ));
                } else {
                    sink.out("   PID: - (found running; left alone)");
                }
                if let Some(m) = &c.model_path {
                    sink.out(&format!("   Model: {}", m.display()));
                }
                sink.out(&format!(
                    "   Backends: {}",
                    if c.backends.is_empty() {
                        "-".into()
                    } else {
                        c.backends.join(", ")
                    }
                ));
                if let Some(l) = &c.log_path {
                    sink.out(&format!("   Log: {}", l.display()));
                }
            }
            None => sink.out("   Not started yet: it starts with the first query that needs it."),
        }
        sink.out("");
    }
}
