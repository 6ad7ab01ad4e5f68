//! The dashboard and the background monitor, fed from the app's state.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{App, CommandError, Handled, Outcome, Sink};
use crate::dashboard::{
    self, spawn_monitor, BackendStatus, BackendView, CoordinatorProcess, CoordinatorStatus,
    CoordinatorView, Hub,
};
use crate::nodes::Node;
use crate::scheduler::Events;
use crate::sharding::backends;

/// An instant as Unix milliseconds.
fn unix_ms(t: std::time::Instant) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_sub(t.elapsed().as_millis() as u64)
}

/// Scheduler events go to the dashboard.
pub(crate) struct HubEvents(pub Arc<Hub>);

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
                for b in list.iter_mut().filter(|b| b.address == *a) {
                    b.status = if up {
                        BackendStatus::Up
                    } else {
                        BackendStatus::Down
                    };
                    b.checked_ms = Some(unix_ms(std::time::Instant::now()));
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

/// What the app last pushed to the hub: a view equal to it is not pushed
/// again, so the hub's version (and every open dashboard) moves only when
/// something it shows changed.
#[derive(Default)]
pub(crate) struct HubShown {
    nodes: Vec<Arc<Node>>,
    coordinator: Option<Option<CoordinatorView>>,
    backends: Option<Vec<BackendView>>,
}

impl App {
    /// Tell the dashboard hub what changed since the last push, and keep the
    /// background monitors watching the current nodes and backends. Cheap when
    /// nothing changed (it runs after every command).
    pub(super) fn sync_hub(&mut self) {
        self.push_nodes();
        let coordinator = self.coordinator_view();
        if self.services.shown.coordinator.as_ref() != Some(&coordinator) {
            self.services.hub.set_coordinator(coordinator.clone());
            self.services.shown.coordinator = Some(coordinator);
        }
        let backends = self.backends_view();
        if self.services.shown.backends.as_ref() != Some(&backends) {
            self.services.hub.set_backends(backends.clone());
            self.services.shown.backends = Some(backends);
        }
        self.keep_monitors();
    }

    /// The node list, when it is not the same nodes as last pushed.
    fn push_nodes(&mut self) {
        let nodes = self.cluster.registry.nodes();
        let same = nodes.len() == self.services.shown.nodes.len()
            && nodes
                .iter()
                .zip(&self.services.shown.nodes)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if !same {
            self.services.shown.nodes = nodes.to_vec();
            self.services.hub.set_nodes(nodes.to_vec());
        }
    }

    /// The coordinator as the page shows it.
    fn coordinator_view(&self) -> Option<CoordinatorView> {
        let shown = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match &self.cluster.sharding.coordinator {
            Some(c) => Some(CoordinatorView {
                url: c.url.clone(),
                status: CoordinatorStatus::Running,
                process: Some(CoordinatorProcess {
                    pid: c.pid,
                    model: shown(&c.model_path),
                    backends: c.backends.clone(),
                    log: shown(&c.log_path),
                }),
            }),
            None if self.cfg.settings().model_sharding_enabled => Some(CoordinatorView {
                url: self.cfg.effective().coordinator_url.clone(),
                status: CoordinatorStatus::NotStarted,
                process: None,
            }),
            None => None,
        }
    }

    /// The RPC backends as the page shows them: this app's observations, or
    /// the monitor's when they are newer.
    fn backends_view(&self) -> Vec<BackendView> {
        let shown = self.services.hub.backends();
        self.cfg
            .settings()
            .rpc_backends
            .iter()
            .map(|b| {
                let a = backends::addr(b);
                let st = self
                    .cluster
                    .sharding
                    .stats
                    .get(&a)
                    .cloned()
                    .unwrap_or_default();
                let mut status = match st.up {
                    Some(true) => BackendStatus::Up,
                    Some(false) => BackendStatus::Down,
                    None => BackendStatus::Unknown,
                };
                let mut checked_ms = st.checked.map(unix_ms);
                if let Some(p) = shown.iter().find(|p| p.address == a) {
                    if p.checked_ms.is_some() && p.checked_ms > checked_ms {
                        status = p.status;
                        checked_ms = p.checked_ms;
                    }
                }
                BackendView {
                    success_rate: st.success_rate(),
                    avg_latency_ms: st.avg_latency_ms(),
                    address: a,
                    status,
                    checked_ms,
                    requests: st.requests,
                }
            })
            .collect()
    }

    /// (Re)start the background monitors when what they should watch changed.
    /// By default they run for people (a terminal, or an open dashboard or
    /// gateway), not for scripts, whose output should not depend on timing.
    fn keep_monitors(&mut self) {
        let people = self.interactive
            || self.services.dashboard.is_some()
            || self.services.gateway.is_some();
        let every = self.cfg.effective().monitor_every(people);
        let nodes = self.cluster.registry.nodes().to_vec();
        let backend_addrs: Vec<String> = self
            .cfg
            .settings()
            .rpc_backends
            .iter()
            .map(backends::addr)
            .collect();
        let coordinator_url = self
            .cluster
            .sharding
            .coordinator
            .as_ref()
            .map(|c| c.url.clone());
        let mut watched: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
        watched.extend(backend_addrs.iter().cloned());
        watched.extend(coordinator_url.iter().cloned());
        let stale = self
            .services
            .monitor
            .as_ref()
            .is_none_or(|(u, _)| *u != watched);
        if every == 0 || !stale || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some((_, handles)) = self.services.monitor.take() {
            handles.iter().for_each(|h| h.abort());
        }
        let every = Duration::from_secs(every);
        let hub = &self.services.hub;
        let client = &self.cluster.client;
        let mut handles = vec![spawn_monitor(
            hub.clone(),
            client.clone(),
            nodes,
            every,
            self.services.say(),
        )];
        if !backend_addrs.is_empty() || coordinator_url.is_some() {
            handles.push(spawn_sharding_monitor(
                hub.clone(),
                client.clone(),
                backend_addrs,
                coordinator_url,
                every,
                self.services.say(),
            ));
        }
        self.services.monitor = Some((watched, handles));
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
                .services
                .dashboard
                .take()
                .ok_or_else(|| CommandError::NotFound("dashboard: not running".into()))?;
            d.stop().await;
            sink.out("✅ Dashboard stopped");
            return Ok(Outcome::OK);
        }
        if let Some(d) = &self.services.dashboard {
            sink.out(&format!("📊 Dashboard already running at {}", d.url()));
            return Ok(Outcome::OK);
        }
        let bind = bind.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if let Some(w) = dashboard::exposure_warning(bind) {
            sink.warn(&w);
        }
        self.sync_hub();
        let port = port.unwrap_or(dashboard::DEFAULT_PORT);
        let d = dashboard::start(self.services.hub.clone(), bind, port)
            .await
            .map_err(|e| CommandError::network(format!("dashboard: {e:#}")))?;
        sink.out(&format!(
            "🚀 Dashboard: {} (live; `dashboard stop` ends it)",
            d.url()
        ));
        self.services.dashboard = Some(d);
        Ok(Outcome::OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;
    use crate::config::settings::{RpcBackendEntry, Settings, SettingsStore};
    use crate::nodes::Registry;

    fn app() -> (tempfile::TempDir, App) {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::default();
        let store = SettingsStore::new(dir.path().join("s.json"), None, &settings);
        let app = App::new(settings, store, Registry::in_memory(), dir.path().into());
        (dir, app)
    }

    #[test]
    fn the_hub_moves_only_when_what_it_shows_changed() {
        let (_dir, mut app) = app();
        app.sync_hub();
        let v = app.services.hub.version();
        for _ in 0..3 {
            app.sync_hub();
        }
        assert_eq!(
            app.services.hub.version(),
            v,
            "nothing changed, nothing pushed"
        );
        app.cluster.registry.add(
            NodeEntry {
                url: "http://127.0.0.1:11500".into(),
                name: "a".into(),
                priority: 0,
                host_id: None,
                extra: Default::default(),
            },
            true,
        );
        app.sync_hub();
        let v2 = app.services.hub.version();
        assert!(v2 > v, "a new node is pushed");
        assert_eq!(app.services.hub.nodes().len(), 1);
        app.cfg.settings_mut().rpc_backends.push(RpcBackendEntry {
            host: "127.0.0.1".into(),
            port: 50052,
            extra: Default::default(),
        });
        app.sync_hub();
        assert!(app.services.hub.version() > v2, "a new backend is pushed");
        assert_eq!(app.services.hub.backends()[0].address, "127.0.0.1:50052");
        let v3 = app.services.hub.version();
        app.sync_hub();
        assert_eq!(app.services.hub.version(), v3);
    }
}
