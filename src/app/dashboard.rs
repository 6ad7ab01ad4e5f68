//! The dashboard and the background monitor, fed from the app's state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::dashboard::{self, spawn_monitor, Hub};
use crate::nodes::Node;
use crate::scheduler::Events;
use crate::sharding::backends;

/// Default seconds between background probes of the nodes.
pub const MONITOR_EVERY_SECS: u64 = 30;

/// An instant as Unix milliseconds.
fn unix_ms(t: std::time::Instant) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_sub(t.elapsed().as_millis() as u64)
}

/// Scheduler events go to the dashboard.
pub struct HubEvents(pub Arc<Hub>);

impl Events for HubEvents {
    fn picked(&self, task: &str, node: &Node, reason: &str) {
        self.0.routing(
            format!("{task} → {} ({})", node.name(), node.host),
            reason.to_string(),
        );
        if let Some(tap) = self.0.tap() {
            tap.node_picked(task, node, reason);
        }
    }
    fn finished(&self, node: &Node, seconds: f64, _ok: bool) {
        self.0.observe_latency(node.name(), &node.host, seconds);
    }
}

/// Watch the RPC backends (TCP connect) and the coordinator (`/health`) every
/// `every`; report changes as notices and keep the page's status fields current.
fn spawn_sharding_monitor(
    hub: Arc<Hub>,
    client: crate::ollama::Client,
    backends: Vec<String>,
    coordinator: Option<String>,
    every: Duration,
    notify: impl Fn(String) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Vec<Option<bool>> = vec![None; backends.len()];
        let mut last_coord: Option<bool> = None;
        loop {
            for (i, a) in backends.iter().enumerate() {
                let up = dashboard::tcp_reachable(a, Duration::from_millis(500)).await;
                if last[i].is_some_and(|was| was != up) {
                    let line = if up {
                        format!("✅ RPC backend {a} is back")
                    } else {
                        format!("⚠️  RPC backend {a} is down")
                    };
                    hub.notice(line.clone());
                    notify(line);
                }
                last[i] = Some(up);
                let mut list = hub.backends();
                for b in list.iter_mut().filter(|b| b["address"] == a.as_str()) {
                    b["status"] = json!(if up { "up" } else { "down" });
                    b["checked_ms"] = json!(unix_ms(std::time::Instant::now()));
                }
                hub.set_backends(list);
            }
            if let Some(url) = &coordinator {
                let up = crate::sharding::coordinator::health(&client, url).await
                    != crate::sharding::coordinator::Health::Down;
                if last_coord.is_some_and(|was| was != up) {
                    let line = if up {
                        format!("✅ coordinator {url} is healthy again")
                    } else {
                        format!("⚠️  coordinator {url} is not answering")
                    };
                    hub.notice(line.clone());
                    notify(line);
                }
                last_coord = Some(up);
            }
            tokio::time::sleep(every).await;
        }
    })
}

impl App {
    /// Tell the dashboard hub what the app knows now; restart the monitor when
    /// the set of nodes changed.
    pub(super) fn sync_hub(&mut self) {
        let nodes = self.registry.nodes().to_vec();
        let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
        self.hub.set_nodes(nodes.clone());
        let coordinator = match &self.sharding.coordinator {
            Some(c) => json!({
                "url": c.url, "status": "running", "pid": c.pid,
                "model": c.model_path.as_ref().map(|p| p.display().to_string()),
                "backends": c.backends, "log": c.log_path.as_ref().map(|p| p.display().to_string()),
            }),
            None if self.settings.model_sharding_enabled => {
                json!({"url": crate::sharding::coordinator::configured_url(self.settings.coordinator_url.as_deref()).0, "status": "not started"})
            }
            None => serde_json::Value::Null,
        };
        self.hub.set_coordinator(coordinator);
        let shown = self.hub.backends();
        let backends: Vec<serde_json::Value> = self
            .settings
            .rpc_backends
            .iter()
            .map(|b| {
                let a = backends::addr(b);
                let st = self.sharding.stats.get(&a).cloned().unwrap_or_default();
                let mut status = json!(match st.up { Some(true) => "up", Some(false) => "down", None => "unknown" });
                let mut checked_ms = st.checked.map(unix_ms);
                // The monitor's observation wins when it is the newer one.
                if let Some(p) = shown.iter().find(|p| p["address"] == a.as_str()) {
                    let seen = p["checked_ms"].as_u64();
                    if seen.is_some() && seen > checked_ms {
                        status = p["status"].clone();
                        checked_ms = seen;
                    }
                }
                json!({"address": a, "status": status, "checked_ms": checked_ms,
                       "requests": st.requests, "success_rate": st.success_rate(), "avg_latency_ms": st.avg_latency_ms()})
            })
            .collect();
        self.hub.set_backends(backends);
        // By default the monitor runs for people (a terminal, or an open dashboard),
        // not for scripts, whose output should not depend on timing.
        let default = if self.interactive || self.dashboard.is_some() || self.gateway.is_some() {
            MONITOR_EVERY_SECS
        } else {
            0
        };
        let every = self.settings.monitor_interval_secs.unwrap_or(default);
        let mut watched = urls;
        let backend_addrs: Vec<String> = self
            .settings
            .rpc_backends
            .iter()
            .map(backends::addr)
            .collect();
        let coordinator_url = self.sharding.coordinator.as_ref().map(|c| c.url.clone());
        watched.extend(backend_addrs.iter().cloned());
        watched.extend(coordinator_url.iter().cloned());
        let stale = self.monitor.as_ref().is_none_or(|(u, _)| *u != watched);
        if every > 0 && stale && tokio::runtime::Handle::try_current().is_ok() {
            if let Some((_, handles)) = self.monitor.take() {
                handles.iter().for_each(|h| h.abort());
            }
            let say = |notify: super::Notifier| {
                move |line: String| {
                    let f = notify.read().map(|f| f.clone());
                    if let Ok(f) = f {
                        f(line)
                    }
                }
            };
            let every = Duration::from_secs(every);
            let mut handles = vec![spawn_monitor(
                self.hub.clone(),
                self.client.clone(),
                nodes,
                every,
                say(self.notifier.clone()),
            )];
            if !backend_addrs.is_empty() || coordinator_url.is_some() {
                handles.push(spawn_sharding_monitor(
                    self.hub.clone(),
                    self.client.clone(),
                    backend_addrs,
                    coordinator_url,
                    every,
                    say(self.notifier.clone()),
                ));
            }
            self.monitor = Some((watched, handles));
        }
    }

    pub(super) async fn dashboard_cmd(
        &mut self,
        stop: bool,
        port: Option<u16>,
        bind: Option<IpAddr>,
        sink: &mut dyn Sink,
    ) -> Handled {
        if stop {
            let d = self
                .dashboard
                .take()
                .ok_or_else(|| CommandError::NotFound("dashboard: not running".into()))?;
            d.stop().await;
            sink.out("✅ Dashboard stopped");
            return Ok(Outcome::OK);
        }
        if let Some(d) = &self.dashboard {
            sink.out(&format!("📊 Dashboard already running at {}", d.url()));
            return Ok(Outcome::OK);
        }
        let bind = bind.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if let Some(w) = dashboard::exposure_warning(bind) {
            sink.warn(&w);
        }
        self.sync_hub();
        let port = port.unwrap_or(dashboard::DEFAULT_PORT);
        let d = dashboard::start(self.hub.clone(), bind, port)
            .await
            .map_err(|e| CommandError::network(format!("dashboard: {e:#}")))?;
        sink.out(&format!(
            "🚀 Dashboard: {} (live; `dashboard stop` ends it)",
            d.url()
        ));
        self.dashboard = Some(d);
        Ok(Outcome::OK)
    }
}
