//! `distributed task|model|both|off`, `rpc …`, and the coordinator's life in the app.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{App, Captured, CommandError, Handled, Outcome, Sink};
use crate::blocking;
use crate::command::{Route, RpcCmd};
use crate::config::settings::RpcBackendEntry;
use crate::nodes::discovery;
use crate::nodes::scan::{self, ScanOptions};
use crate::nodes::Node;
use crate::sharding::backends::{self, BackendStats};
use crate::sharding::coordinator::{self, Coordinator, Health};
use crate::sharding::gguf;
use crate::sharding::route::{decide, Target};
use crate::sharding::ShardingError;
use crate::ui;

const TASK_MODEL: &str = "llama3.2";
const LARGE_MODEL: &str = "codellama:13b";

/// Sharding state the app keeps between commands.
#[derive(Default)]
pub struct ShardingState {
    pub coordinator: Option<Coordinator>,
    /// The coordinator as a node of the health view (kept while its URL is the same).
    pub node: Option<Arc<Node>>,
    pub stats: HashMap<String, BackendStats>,
}

impl App {
    fn coordinator_configured(&self) -> bool {
        coordinator::configured_url(self.settings.coordinator_url.as_deref()).1
    }

    /// Set the model the way the original did for this path, saying so.
    fn switch_model(&mut self, model: &str, synthesis: Option<&str>, sink: &mut dyn Sink) {
        let before = self.model().to_string();
        if before != model {
            sink.out(&format!("   Model: {before} → {model} (as the original tool does for this path; `model NAME` changes it)"));
        } else {
            sink.out(&format!("   Model: {model}"));
        }
        self.overrides.model = None;
        self.settings.model = model.to_string();
        let syn_before = self.settings.synthesis_model.clone();
        self.settings.synthesis_model = synthesis.map(String::from);
        if syn_before.as_deref() != synthesis {
            sink.out(&format!(
                "   Synthesis model: {} → {}",
                syn_before.as_deref().unwrap_or("none"),
                synthesis.unwrap_or("none (same model)")
            ));
        }
    }

    pub(super) async fn distributed(&mut self, route: Route, out: &mut dyn Sink) -> Handled {
        if route.model_sharding()
            && self.settings.rpc_backends.is_empty()
            && !self.coordinator_configured()
        {
            return Err(CommandError::Refused {
                message: "No RPC backends or coordinator configured! Nothing changed.".into(),
                hint: Some("Add backends with `rpc add HOST[:PORT]` (or `rpc discover`), or set coordinator_url in ~/.synapticllamas.json.".into()),
                warning: true,
            });
        }
        let mut buf = Captured::default();
        let sink = &mut buf;
        let healthy = self
            .registry
            .nodes()
            .iter()
            .filter(|n| n.available())
            .count();
        self.settings.set_route(route);
        match route {
            Route::Task => {
                sink.out("✅ TASK DISTRIBUTION MODE");
                sink.out(&format!(
                    "   Using {healthy} Ollama node(s) for load balancing"
                ));
                self.switch_model(TASK_MODEL, None, sink);
            }
            Route::Model => {
                sink.out("✅ MODEL SHARDING MODE");
                sink.out(&format!(
                    "   Using {} RPC backend(s) through the llama.cpp coordinator",
                    self.settings.rpc_backends.len()
                ));
                self.switch_model(LARGE_MODEL, None, sink);
                sink.out("   ⚠️  The coordinator loads the whole model file: 13B fits in 16 GB of RAM, 70B needs 32 GB or more.");
            }
            Route::Both => {
                sink.out("✅ HYBRID MODE (task distribution + model sharding)");
                sink.out("   Models that name more than 8B parameters go to the coordinator; others to the Ollama pool.");
                self.switch_model(TASK_MODEL, Some(LARGE_MODEL), sink);
            }
            Route::Off => {
                sink.out("✅ ALL DISTRIBUTION DISABLED");
                sink.out("   Everything runs on the preferred node, one request at a time.");
            }
        }
        sink.out("   Applied now (no restart needed).");
        let saved = self
            .save_settings(
                &["task_distribution_enabled", "model_sharding_enabled"],
                out,
            )
            .await;
        super::report_change(out, saved, buf);
        Ok(Outcome::from(saved))
    }

    pub(super) async fn rpc(&mut self, cmd: RpcCmd, sink: &mut dyn Sink) -> Handled {
        match cmd {
            RpcCmd::List => {
                self.rpc_list(sink);
                Ok(Outcome::OK)
            }
            RpcCmd::Add(b) => self.rpc_add(b, sink).await,
            RpcCmd::Remove(b) => self.rpc_remove(&b, sink).await,
            RpcCmd::Discover => self.rpc_discover(sink).await,
        }
    }

    fn rpc_list(&self, sink: &mut dyn Sink) {
        if self.settings.rpc_backends.is_empty() {
            sink.out("📡 No RPC backends configured");
            return;
        }
        sink.out(&format!(
            "📡 Configured RPC Backends ({}):",
            self.settings.rpc_backends.len()
        ));
        for b in &self.settings.rpc_backends {
            sink.out(&format!("   • {}", backends::addr(b)));
        }
    }

    fn has_backend(&self, a: &str) -> bool {
        self.settings
            .rpc_backends
            .iter()
            .any(|x| backends::addr(x) == a)
    }

    async fn rpc_add(&mut self, b: RpcBackendEntry, sink: &mut dyn Sink) -> Handled {
        let a = backends::addr(&b);
        if self.has_backend(&a) {
            return Err(CommandError::Refused {
                message: format!("Backend already configured: {a}"),
                hint: None,
                warning: true,
            });
        }
        if let Some(w) = backends::exposure_warning(&b) {
            sink.warn(&w);
        }
        let up = backends::reachable(&b, Duration::from_millis(500)).await;
        if !up {
            sink.warn(&format!(
                "⚠️  {a} does not accept connections right now (added anyway)"
            ));
        }
        let st = self.sharding.stats.entry(a.clone()).or_default();
        st.up = Some(up);
        st.checked = Some(std::time::Instant::now());
        self.settings.rpc_backends.push(b);
        let saved = self.save_settings(&["rpc_backends"], sink).await;
        super::confirm(sink, saved, &format!("Added RPC backend: {a}"));
        Ok(Outcome::from(saved))
    }

    async fn rpc_remove(&mut self, b: &RpcBackendEntry, sink: &mut dyn Sink) -> Handled {
        let a = backends::addr(b);
        if !self.has_backend(&a) {
            return Err(CommandError::NotFound(format!("Backend not found: {a}")));
        }
        self.settings
            .rpc_backends
            .retain(|x| backends::addr(x) != a);
        let saved = self.save_settings(&["rpc_backends"], sink).await;
        super::confirm(sink, saved, &format!("Removed RPC backend: {a}"));
        if self.settings.rpc_backends.is_empty() && self.settings.model_sharding_enabled {
            sink.warn("⚠️  No RPC backends remaining! Model sharding will fail.");
        }
        Ok(Outcome::from(saved))
    }

    async fn rpc_discover(&mut self, sink: &mut dyn Sink) -> Handled {
        let nets = discovery::subnets(None).map_err(|e| match e {
            discovery::SubnetError::NoRoute => CommandError::network(format!(
                "rpc discover: {e}; name the subnets in SYNAPTICLLAMAS_SUBNETS (e.g. SYNAPTICLLAMAS_SUBNETS=10.0.0.0/24), or add a backend with `rpc add HOST[:PORT]`"
            )),
            e => CommandError::network(format!("rpc discover: {e}")),
        })?;
        let addrs = discovery::addresses(&nets)
            .map_err(|e| CommandError::network(format!("rpc discover: {e}")))?;
        let names: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        sink.err(&format!(
            "🔍 Scanning {} for RPC backends: {} addresses on port 50052 (TCP connect only) ...",
            names.join(", "),
            addrs.len()
        ));
        let opts = ScanOptions {
            port: crate::config::settings::default_rpc_port(),
            connect_timeout: Duration::from_millis(
                self.settings
                    .discovery_connect_timeout_ms
                    .unwrap_or(discovery::DEFAULT_CONNECT_MS),
            ),
            concurrency: scan::concurrency_limit(),
        };
        let bar = ui::progress::bar(addrs.len() as u64, "scanning");
        let report = scan::scan(addrs, &opts, |_| async { Some(()) }, || bar.inc(1)).await;
        bar.finish_and_clear();
        let mut found: Vec<(RpcBackendEntry, &str)> = report
            .found
            .iter()
            .map(|(addr, _)| {
                let b = RpcBackendEntry {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    extra: Default::default(),
                };
                (b, "")
            })
            .collect();
        for b in self.redis_registrations(sink).await {
            if !found
                .iter()
                .any(|(x, _)| backends::addr(x) == backends::addr(&b))
            {
                found.push((b, " (registered in Redis)"));
            }
        }
        let mut added = 0;
        for (b, note) in &found {
            if !self
                .settings
                .rpc_backends
                .iter()
                .any(|x| backends::addr(x) == backends::addr(b))
            {
                sink.out(&format!("   ✅ Found: {}{note}", backends::addr(b)));
                self.settings.rpc_backends.push(b.clone());
                added += 1;
            }
        }
        if found.is_empty() {
            sink.out("❌ No RPC backends found on the network");
            sink.out("   Start one on each machine that should hold layers: rpc-server --host <its LAN address> --port 50052");
            return Ok(Outcome::OK);
        }
        if added == 0 {
            sink.out("ℹ️  All discovered backends already configured");
            return Ok(Outcome::OK);
        }
        let saved = self.save_settings(&["rpc_backends"], sink).await;
        super::confirm(
            sink,
            saved,
            &format!(
                "Added {added} new RPC backend(s); total {}",
                self.settings.rpc_backends.len()
            ),
        );
        Ok(Outcome::from(saved))
    }

    /// The coordinator node for this query: reused if healthy and current,
    /// otherwise (re)started over the backends that answer.
    pub(super) async fn ensure_coordinator(
        &mut self,
        sink: &mut dyn Sink,
    ) -> Result<Arc<Node>, ShardingError> {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for b in self.settings.rpc_backends.clone() {
            let ok = backends::reachable(&b, Duration::from_millis(500)).await;
            let st = self.sharding.stats.entry(backends::addr(&b)).or_default();
            st.up = Some(ok);
            st.checked = Some(std::time::Instant::now());
            if ok {
                up.push(backends::addr(&b))
            } else {
                down.push(backends::addr(&b))
            }
        }
        for d in &down {
            sink.warn(&format!("⚠️  RPC backend {d} is down"));
        }
        if let Some(mut old) = self.sharding.coordinator.take() {
            let current = !old.ours() || (old.alive() && old.backends == up);
            let url = old.url.clone();
            if current
                && matches!(
                    coordinator::health(&self.client, &url).await,
                    Health::Ready | Health::Busy
                )
            {
                self.sharding.coordinator = Some(old);
                return Ok(self.coordinator_node(&url).await);
            }
            if old.ours() {
                sink.err("🔁 Restarting the coordinator on the backends that answer ...");
            }
            old.stop().await;
        }
        let (url, configured) =
            coordinator::configured_url(self.settings.coordinator_url.as_deref());
        if coordinator::health(&self.client, &url).await == Health::Ready {
            sink.err(&format!(
                "🎯 Using the coordinator already running at {url}"
            ));
            self.sharding.coordinator = Some(Coordinator::found(url.clone()));
            return Ok(self.coordinator_node(&url).await);
        }
        if !self.settings.rpc_backends.is_empty() && up.is_empty() {
            return Err(ShardingError::NoBackends(down));
        }
        if self.settings.rpc_backends.is_empty() && configured {
            return Err(ShardingError::CoordinatorDown(url));
        }
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(coordinator::DEFAULT_PORT);
        let model = self
            .settings
            .synthesis_model
            .clone()
            .filter(|_| self.settings.task_distribution_enabled)
            .unwrap_or_else(|| self.model().to_string());
        let (gguf, bin) = blocking::try_run(move || {
            Ok::<_, ShardingError>((gguf::resolve(&model)?, coordinator::binary()?))
        })
        .await?;
        let log = self
            .home
            .join(format!(".synapticllamas_coordinator-{port}.log"));
        let extra = self.settings.coordinator_args.clone().unwrap_or_default();
        let wait = Duration::from_secs(self.settings.coordinator_start_timeout_secs.unwrap_or(600));
        sink.err(&format!(
            "🚀 Starting llama-server on 127.0.0.1:{port} with {} over {} backend(s) (log: {}) ...",
            gguf.display(),
            up.len(),
            log.display()
        ));
        let spinner = ui::progress::spinner("loading the model across the RPC backends");
        let c = Coordinator::start(
            &self.client,
            &bin,
            &gguf,
            port,
            &up,
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
        let url = c.url.clone();
        self.sharding.coordinator = Some(c);
        Ok(self.coordinator_node(&url).await)
    }

    /// The coordinator's node (one per URL, so its health and latency history
    /// last), with its host's capacity set to llama-server's slot count.
    async fn coordinator_node(&mut self, url: &str) -> Arc<Node> {
        let node = match &self.sharding.node {
            Some(n) if n.url() == url => n.clone(),
            _ => {
                let n = Arc::new(Node::coordinator(url));
                self.sharding.node = Some(n.clone());
                n
            }
        };
        if let Some(slots) = coordinator::slots(&self.client, url).await {
            self.sched.set_capacity(&node.host, slots);
        }
        node
    }

    /// Whether this query needs the coordinator, with the routing lines to show.
    pub(super) fn routing(&self) -> (bool, Vec<String>) {
        let route = self.route();
        if !self.settings.model_sharding_enabled {
            return (false, Vec::new());
        }
        let mut models = vec![self.model().to_string()];
        if let Some(s) = &self.settings.synthesis_model {
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
            self.redis.route_decision(&m, backend, &why);
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
        let Some(c) = &self.sharding.coordinator else {
            return None;
        };
        let backends: Vec<String> = c.backends.clone();
        for a in &backends {
            self.sharding
                .stats
                .entry(a.clone())
                .or_default()
                .record(ok, Duration::from_secs_f64(seconds));
        }
        if ok {
            return None;
        }
        let mut dead = Vec::new();
        for b in self.settings.rpc_backends.clone() {
            let up = backends::reachable(&b, Duration::from_millis(500)).await;
            let st = self.sharding.stats.entry(backends::addr(&b)).or_default();
            st.up = Some(up);
            st.checked = Some(std::time::Instant::now());
            if !up {
                dead.push(backends::addr(&b));
            }
        }
        (!dead.is_empty()).then(|| format!("RPC backend {} is down", dead.join(", ")))
    }

    pub(super) async fn print_coordinator_section(&mut self, sink: &mut dyn Sink) {
        if !self.settings.model_sharding_enabled
            && self.sharding.coordinator.is_none()
            && self.settings.coordinator_url.is_none()
        {
            return;
        }
        sink.out("🎯 COORDINATOR (llama.cpp model sharding)");
        let (url, _) = match &self.sharding.coordinator {
            Some(c) => (c.url.clone(), true),
            None => coordinator::configured_url(self.settings.coordinator_url.as_deref()),
        };
        let status = match coordinator::health(&self.client, &url).await {
            Health::Ready => "✅ HEALTHY".to_string(),
            Health::Loading => "⏳ LOADING".to_string(),
            Health::Busy => "⏳ BUSY (connected, answering slowly while it works)".to_string(),
            Health::Down => "❌ OFFLINE".to_string(),
        };
        sink.out(&format!("   URL: {url}"));
        sink.out(&format!("   Status: {status}"));
        if let Some(n) = self.sharding.node.as_ref().filter(|n| n.url() == url) {
            sink.out(&format!(
                "   Slots: {} ({} in flight)",
                self.sched.capacity(&n.host),
                self.sched.in_flight(&n.host)
            ));
        }
        match &self.sharding.coordinator {
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

    pub(super) async fn print_rpc_section(&mut self, sink: &mut dyn Sink) {
        sink.out("");
        sink.out("🔗 RPC BACKENDS (model sharding)");
        if self.settings.rpc_backends.is_empty() {
            sink.out("   No RPC backends configured (`rpc add HOST[:PORT]`)");
            return;
        }
        let mut t = ui::table(&[
            "Address",
            "Status",
            "Requests",
            "Success rate",
            "Avg latency",
        ]);
        for b in self.settings.rpc_backends.clone() {
            let a = backends::addr(&b);
            let up = backends::reachable(&b, Duration::from_millis(500)).await;
            let st = self.sharding.stats.entry(a.clone()).or_default();
            st.up = Some(up);
            st.checked = Some(std::time::Instant::now());
            t.add_row(vec![
                a,
                if up {
                    "✅ up".into()
                } else {
                    "❌ down".into()
                },
                st.requests.to_string(),
                st.success_rate()
                    .map(|r| format!("{:.0}%", r * 100.0))
                    .unwrap_or_else(|| "-".into()),
                st.avg_latency_ms()
                    .map(|l| format!("{l:.0} ms"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        sink.out(&t.to_string());
    }

    /// Leaving: stop the dashboard, and the coordinator if this process started
    /// it; let queued Redis events go out.
    pub async fn shutdown(&mut self) {
        self.stop_gateway(None).await;
        if let Some(d) = self.dashboard.take() {
            d.stop().await;
        }
        if let Some(mut c) = self.sharding.coordinator.take() {
            let ours = c.ours();
            c.stop().await;
            if ours {
                self.hub.set_coordinator(serde_json::Value::Null);
            }
        }
        self.redis.events.flush(Duration::from_millis(500)).await;
    }
}
