//! `distributed task|model|both|off`, `rpc …`, the RPC backends in `nodes`,
//! and leaving (the coordinator itself is in `coordinator.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{App, Changes, CommandError, Handled, Outcome, Sink};
use crate::command::RpcCmd;
use crate::config::choices::Route;
use crate::config::settings::{Key, RpcBackendEntry};
use crate::nodes::discovery;
use crate::nodes::scan::{self, ScanOptions};
use crate::nodes::Node;
use crate::sharding::backends::{self, BackendStats};
use crate::sharding::coordinator::Coordinator;
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
        self.cfg.effective().coordinator_configured
    }

    /// Set the model the way the original did for this path, saying so.
    fn switch_model(&mut self, model: &str, synthesis: Option<&str>, ch: &mut Changes) {
        let before = self.model().to_string();
        if before != model {
            ch.detail(format!("   Model: {before} → {model} (as the original tool does for this path; `model NAME` changes it)"));
        } else {
            ch.detail(format!("   Model: {model}"));
        }
        self.cfg.set_flags(|f| f.model = None);
        self.cfg.settings_mut().model = model.to_string();
        let syn_before = self.cfg.settings().synthesis_model.clone();
        self.cfg.settings_mut().synthesis_model = synthesis.map(String::from);
        if syn_before.as_deref() != synthesis {
            ch.detail(format!(
                "   Synthesis model: {} → {}",
                syn_before.as_deref().unwrap_or("none"),
                synthesis.unwrap_or("none (same model)")
            ));
        }
    }

    pub(super) async fn distributed(&mut self, route: Route, out: &mut dyn Sink) -> Handled {
        if route.model_sharding()
            && self.cfg.settings().rpc_backends.is_empty()
            && !self.coordinator_configured()
        {
            return Err(CommandError::Refused {
                message: "No RPC backends or coordinator configured! Nothing changed.".into(),
                hint: Some("Add backends with `rpc add HOST[:PORT]` (or `rpc discover`), or set coordinator_url in ~/.synapticllamas.json.".into()),
                warning: true,
            });
        }
        let mut ch = Changes::default();
        let healthy = self
            .cluster
            .registry
            .nodes()
            .iter()
            .filter(|n| n.available())
            .count();
        self.cfg.settings_mut().set_route(route);
        match route {
            Route::Task => {
                ch.done("TASK DISTRIBUTION MODE");
                ch.detail(format!(
                    "   Using {healthy} Ollama node(s) for load balancing"
                ));
                self.switch_model(TASK_MODEL, None, &mut ch);
            }
            Route::Model => {
                ch.done("MODEL SHARDING MODE");
                ch.detail(format!(
                    "   Using {} RPC backend(s) through the llama.cpp coordinator",
                    self.cfg.settings().rpc_backends.len()
                ));
                self.switch_model(LARGE_MODEL, None, &mut ch);
                ch.detail("   ⚠️  The coordinator loads the whole model file: 13B fits in 16 GB of RAM, 70B needs 32 GB or more.");
            }
            Route::Both => {
                ch.done("HYBRID MODE (task distribution + model sharding)");
                ch.detail("   Models that name more than 8B parameters go to the coordinator; others to the Ollama pool.");
                self.switch_model(TASK_MODEL, Some(LARGE_MODEL), &mut ch);
            }
            Route::Off => {
                ch.done("ALL DISTRIBUTION DISABLED");
                ch.detail("   Everything runs on the preferred node, one request at a time.");
            }
        }
        ch.detail("   Applied now (no restart needed).");
        let saved = self
            .save_settings(
                &[Key::TaskDistributionEnabled, Key::ModelShardingEnabled],
                out,
            )
            .await;
        ch.report(out, saved);
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
        if self.cfg.settings().rpc_backends.is_empty() {
            sink.out("📡 No RPC backends configured");
            return;
        }
        sink.out(&format!(
            "📡 Configured RPC Backends ({}):",
            self.cfg.settings().rpc_backends.len()
        ));
        for b in &self.cfg.settings().rpc_backends {
            sink.out(&format!("   • {}", backends::addr(b)));
        }
    }

    fn has_backend(&self, a: &str) -> bool {
        self.cfg
            .settings()
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
        let st = self.cluster.sharding.stats.entry(a.clone()).or_default();
        st.up = Some(up);
        st.checked = Some(std::time::Instant::now());
        self.cfg.settings_mut().rpc_backends.push(b);
        let saved = self.save_settings(&[Key::RpcBackends], sink).await;
        super::confirm(sink, saved, &format!("Added RPC backend: {a}"));
        Ok(Outcome::from(saved))
    }

    async fn rpc_remove(&mut self, b: &RpcBackendEntry, sink: &mut dyn Sink) -> Handled {
        let a = backends::addr(b);
        if !self.has_backend(&a) {
            return Err(CommandError::NotFound(format!("Backend not found: {a}")));
        }
        self.cfg
            .settings_mut()
            .rpc_backends
            .retain(|x| backends::addr(x) != a);
        let saved = self.save_settings(&[Key::RpcBackends], sink).await;
        super::confirm(sink, saved, &format!("Removed RPC backend: {a}"));
        if self.cfg.settings().rpc_backends.is_empty() && self.cfg.settings().model_sharding_enabled
        {
            sink.warn("⚠️  No RPC backends remaining! Model sharding will fail.");
        }
        Ok(Outcome::from(saved))
    }

    async fn rpc_discover(&mut self, sink: &mut dyn Sink) -> Handled {
        let nets = discovery::subnets(None, self.cfg.env.subnets.as_deref()).map_err(|e| match e {
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
            connect_timeout: self.cfg.effective().discovery_connect,
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
                .cfg
                .settings()
                .rpc_backends
                .iter()
                .any(|x| backends::addr(x) == backends::addr(b))
            {
                sink.out(&format!("   ✅ Found: {}{note}", backends::addr(b)));
                self.cfg.settings_mut().rpc_backends.push(b.clone());
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
        let saved = self.save_settings(&[Key::RpcBackends], sink).await;
        super::confirm(
            sink,
            saved,
            &format!(
                "Added {added} new RPC backend(s); total {}",
                self.cfg.settings().rpc_backends.len()
            ),
        );
        Ok(Outcome::from(saved))
    }

    pub(super) async fn print_rpc_section(&mut self, sink: &mut dyn Sink) {
        sink.out("");
        sink.out("🔗 RPC BACKENDS (model sharding)");
        if self.cfg.settings().rpc_backends.is_empty() {
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
        for b in self.cfg.settings().rpc_backends.clone() {
            let a = backends::addr(&b);
            let up = backends::reachable(&b, Duration::from_millis(500)).await;
            let st = self.cluster.sharding.stats.entry(a.clone()).or_default();
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
        if let Some(d) = self.services.dashboard.take() {
            d.stop().await;
        }
        if let Some(mut c) = self.cluster.sharding.coordinator.take() {
            let ours = c.ours();
            c.stop().await;
            if ours {
                self.services.hub.set_coordinator(None);
            }
        }
        self.services
            .redis
            .events
            .flush(Duration::from_millis(500))
            .await;
    }
}
