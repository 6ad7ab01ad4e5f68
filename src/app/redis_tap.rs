//! What the dashboard hub hears, turned into Redis events: node picks and
//! metrics as they come, coordinator and RPC backend changes as differences
//! between the hub's old and new state. Glue between two subsystems that know
//! nothing of each other, so it lives in the app.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map};

use crate::dashboard::{BackendStatus, BackendView, CoordinatorProcess, CoordinatorView, HubTap};
use crate::nodes::registry::Api;
use crate::nodes::Node;
use crate::redis::events::{routing_event, Component, Level, LogEvent, Publisher};
use crate::report::Metrics;

/// Publishes hub changes; the model in use is set by the app before each command.
pub struct EventTap {
    events: Arc<Publisher>,
    model: Mutex<String>,
}

impl EventTap {
    pub fn new(events: Arc<Publisher>) -> Arc<EventTap> {
        Arc::new(EventTap {
            events,
            model: Mutex::new(String::new()),
        })
    }

    pub(crate) fn set_model(&self, model: &str) {
        *self.model.lock().unwrap_or_else(|e| e.into_inner()) = model.to_string();
    }

    fn model(&self) -> String {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn coordinator_started(&self, c: &CoordinatorView, p: &CoordinatorProcess, restart: bool) {
        let url = c.url.as_str();
        let port = port_of(url);
        let backends = &p.backends;
        let model_path = p.model.as_deref().unwrap_or_default();
        let mut details = json!({
            "model_path": model_path,
            "port": port,
            "rpc_backends": backends,
            "backend_count": backends.len(),
            "url": url,
            "pid": p.pid,
        });
        if restart {
            details["restart"] = json!(true);
        }
        self.events.log(
            LogEvent::new(
                Component::Coordinator,
                Level::Info,
                "start",
                format!("llama.cpp coordinator started on port {port}"),
            )
            .details(details),
        );
        if !model_path.is_empty() {
            let name = model_name(model_path);
            self.events.log(
                LogEvent::new(
                    Component::Model,
                    Level::Info,
                    "model_load",
                    format!("Model loaded: {name}"),
                )
                .details(json!({"model_name": name, "model_path": model_path})),
            );
        }
        let mut extra = Map::new();
        extra.insert("rpc_backends".into(), json!(backends.len()));
        extra.insert("url".into(), json!(url));
        self.events.routing(routing_event(
            "COORDINATOR_START",
            Some(&model_name(model_path)),
            Some("llamacpp"),
            extra,
        ));
    }

    fn coordinator_stopped(&self, c: &CoordinatorView, p: &CoordinatorProcess, reason: &str) {
        self.events.log(
            LogEvent::new(
                Component::Coordinator,
                Level::Warning,
                "stop",
                "llama.cpp coordinator stopped".into(),
            )
            .details(json!({"reason": reason, "url": c.url, "pid": p.pid})),
        );
        let mut extra = Map::new();
        extra.insert("reason".into(), json!(reason));
        self.events.routing(routing_event(
            "COORDINATOR_STOP",
            Some(&model_name(p.model.as_deref().unwrap_or_default())),
            Some("llamacpp"),
            extra,
        ));
    }

    fn backend(&self, address: &str, up: bool, reason: &str) {
        let event = if up {
            LogEvent::new(
                Component::RpcBackend,
                Level::Info,
                "connect",
                format!("RPC backend connected: {address}"),
            )
            .details(json!({"backend": address}))
        } else {
            LogEvent::new(
                Component::RpcBackend,
                Level::Warning,
                "disconnect",
                format!("RPC backend disconnected: {address}"),
            )
            .details(json!({"backend": address, "reason": reason}))
        };
        self.events.log(event);
    }
}

/// A coordinator this process runs, with its process fields (one found
/// already running has no pid here, and its start and stop are not ours to
/// announce).
fn running(c: Option<&CoordinatorView>) -> Option<(&CoordinatorView, &CoordinatorProcess)> {
    let c = c.filter(|c| c.ours())?;
    Some((c, c.process.as_ref()?))
}

fn port_of(url: &str) -> u64 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// `/models/codellama-13b.Q4_K_M.gguf` → `codellama-13b.Q4_K_M`.
fn model_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn statuses(list: &[BackendView]) -> BTreeMap<&str, BackendStatus> {
    list.iter()
        .map(|b| (b.address.as_str(), b.status))
        .collect()
}

impl HubTap for EventTap {
    fn node_picked(&self, task: &str, node: &Node, reason: &str) {
        // The llama.cpp coordinator speaks the OpenAI API; Ollama nodes their own.
        let (event, backend) = if node.api == Api::OpenAi {
            ("TASK_START", "llamacpp")
        } else {
            ("OLLAMA_NODE_SELECTED", "ollama")
        };
        let mut extra = Map::new();
        extra.insert("node_url".into(), json!(node.url()));
        extra.insert("node".into(), json!(node.name()));
        extra.insert("host".into(), json!(node.host));
        extra.insert("task".into(), json!(task));
        extra.insert("task_id".into(), json!(task));
        extra.insert("worker".into(), json!(node.url()));
        extra.insert("reason".into(), json!(reason));
        let model = self.model();
        self.events.routing(routing_event(
            event,
            Some(&model).filter(|m| !m.is_empty()).map(|m| m.as_str()),
            Some(backend),
            extra,
        ));
    }

    fn coordinator_changed(
        &self,
        before: Option<&CoordinatorView>,
        after: Option<&CoordinatorView>,
    ) {
        match (running(before), running(after)) {
            (None, Some((c, p))) => self.coordinator_started(c, p, false),
            (Some((c, p)), None) => self.coordinator_stopped(c, p, "stopped"),
            (Some((bc, bp)), Some((ac, ap)))
                if bp.pid != ap.pid || bp.backends != ap.backends || bp.model != ap.model =>
            {
                self.coordinator_stopped(bc, bp, "restart");
                self.coordinator_started(ac, ap, true);
            }
            _ => {}
        }
    }

    fn backends_changed(&self, before: &[BackendView], after: &[BackendView]) {
        use BackendStatus::{Down, Up};
        let (old, new) = (statuses(before), statuses(after));
        for (address, status) in &new {
            match (old.get(address), status) {
                (Some(Up), Up) => {}
                (_, Up) => self.backend(address, true, ""),
                (Some(Up), Down) => self.backend(address, false, "not answering"),
                _ => {}
            }
        }
        for (address, status) in &old {
            if *status == Up && !new.contains_key(address) {
                self.backend(address, false, "removed from the configuration");
            }
        }
    }

    fn metrics(&self, metrics: &Metrics) {
        let secs = metrics.total_execution_time;
        self.events.log(
            LogEvent::new(
                Component::System,
                Level::Info,
                "metric",
                format!("Query finished in {secs:.2}s"),
            )
            .details(serde_json::to_value(metrics).unwrap_or_default()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports() {
        assert_eq!(port_of("http://127.0.0.1:18080"), 18080);
        assert_eq!(port_of("http://127.0.0.1:18080/"), 18080);
        assert_eq!(
            model_name("/m/codellama-13b.Q4_K_M.gguf"),
            "codellama-13b.Q4_K_M"
        );
        let backend = |address: &str, status| BackendView {
            address: address.into(),
            status,
            checked_ms: None,
            requests: 0,
            success_rate: None,
            avg_latency_ms: None,
        };
        let list = [
            backend("a:1", BackendStatus::Up),
            backend("b:2", BackendStatus::Unknown),
        ];
        let s = statuses(&list);
        assert_eq!(s.len(), 2);
        assert_eq!(s["a:1"], BackendStatus::Up);
        assert_eq!(s["b:2"], BackendStatus::Unknown);
    }
}
