//! Events on Redis pub/sub in the shapes existing dashboards read:
//!
//! - the original's llama.cpp log events `{timestamp, component, level,
//!   message, event_type, details?}` on `synapticllamas:llama_cpp:logs`, and
//!   also on `:coordinator` or `:rpc_backends` by component and on `:metrics`
//!   for metric events;
//! - SOLLOL's routing events `{timestamp, instance_id, hostname, pid,
//!   event_type, model, backend, …}` on `sollol:routing_events`, each also
//!   appended to the stream `sollol:routing_stream` (capped near 10 000).
//!
//! Publishing never waits: events go through a bounded queue to one task; when
//! the queue is full or Redis is not connected they are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::instance;
use super::link::Link;

pub const LOGS_CHANNEL: &str = "synapticllamas:llama_cpp:logs";
pub const COORDINATOR_CHANNEL: &str = "synapticllamas:llama_cpp:coordinator";
pub const RPC_BACKENDS_CHANNEL: &str = "synapticllamas:llama_cpp:rpc_backends";
pub const METRICS_CHANNEL: &str = "synapticllamas:llama_cpp:metrics";
pub const ROUTING_CHANNEL: &str = "sollol:routing_events";
pub const ROUTING_STREAM: &str = "sollol:routing_stream";
/// The stream keeps about this many events (`XADD … MAXLEN ~`).
pub(crate) const STREAM_MAXLEN: u64 = 10_000;
/// Events waiting to go out at most; more are dropped.
pub const QUEUE: usize = 1024;
/// Limit for publishing one event.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Coordinator,
    RpcBackend,
    System,
    Model,
}

impl Component {
    pub fn word(self) -> &'static str {
        match self {
            Component::Coordinator => "coordinator",
            Component::RpcBackend => "rpc_backend",
            Component::System => "system",
            Component::Model => "model",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One llama.cpp log event (the original's `LlamaCppLogEvent`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub component: Component,
    pub level: Level,
    pub message: String,
    /// `start`, `stop`, `model_load`, `connect`, `disconnect`, `metric`, …
    pub event_type: String,
    pub details: Option<Value>,
}

impl LogEvent {
    pub fn new(component: Component, level: Level, event_type: &str, message: String) -> Self {
        LogEvent {
            component,
            level,
            message,
            event_type: event_type.to_string(),
            details: None,
        }
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The JSON the original publishes (no `details` key when there are none).
    pub fn to_json(&self, timestamp: f64) -> Value {
        let mut v = json!({
            "timestamp": timestamp,
            "component": self.component.word(),
            "level": self.level.word(),
            "message": self.message,
            "event_type": self.event_type,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    /// Every channel this event goes to.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut out = vec![LOGS_CHANNEL];
        match self.component {
            Component::Coordinator => out.push(COORDINATOR_CHANNEL),
            Component::RpcBackend => out.push(RPC_BACKENDS_CHANNEL),
            _ => {}
        }
        if matches!(self.event_type.as_str(), "metric" | "performance" | "stats") {
            out.push(METRICS_CHANNEL);
        }
        out
    }
}

/// SOLLOL's routing event: the common fields, then `extra`'s.
pub(crate) fn routing_event(
    event_type: &str,
    model: Option<&str>,
    backend: Option<&str>,
    extra: Map<String, Value>,
) -> Value {
    let mut v = Map::new();
    v.insert("timestamp".into(), json!(iso_timestamp(SystemTime::now())));
    v.insert("instance_id".into(), json!(instance::id()));
    v.insert("hostname".into(), json!(instance::hostname()));
    v.insert("pid".into(), json!(std::process::id()));
    v.insert("event_type".into(), json!(event_type));
    v.insert("model".into(), json!(model));
    v.insert("backend".into(), json!(backend));
    v.extend(extra);
    Value::Object(v)
}

/// `2025-01-31T12:00:00.123456` (UTC, no zone suffix: Python's `utcnow().isoformat()`).
pub(crate) fn iso_timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_micros(t).to_string();
    s.trim_end_matches('Z').to_string()
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

enum Outgoing {
    Log(Vec<&'static str>, String),
    Routing(String),
}

/// The queue and its counters.
pub struct Publisher {
    link: Arc<Link>,
    tx: OnceLock<mpsc::Sender<Outgoing>>,
    published: AtomicU64,
    dropped: AtomicU64,
    pending: Arc<AtomicU64>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("published", &self.published())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Publisher {
    pub fn new(link: Arc<Link>) -> Arc<Publisher> {
        Arc::new(Publisher {
            link,
            tx: OnceLock::new(),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: Arc::new(AtomicU64::new(0)),
        })
    }

    pub(crate) fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events not sent: the queue was full, Redis was away, or it refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publish a llama.cpp log event (never waits).
    pub fn log(self: &Arc<Self>, event: LogEvent) {
        let text = event.to_json(unix_seconds()).to_string();
        self.send(Outgoing::Log(event.channels(), text));
    }

    /// Publish a routing event made by [`routing_event`] (never waits).
    pub fn routing(self: &Arc<Self>, event: Value) {
        self.send(Outgoing::Routing(event.to_string()));
    }

    fn send(self: &Arc<Self>, item: Outgoing) {
        if !self.link.is_connected() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(tx) = self.sender() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if tx.try_send(item).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sender(self: &Arc<Self>) -> Option<&mpsc::Sender<Outgoing>> {
        if self.tx.get().is_none() && tokio::runtime::Handle::try_current().is_ok() {
            let (tx, rx) = mpsc::channel(QUEUE);
            if self.tx.set(tx).is_ok() {
                tokio::spawn(drain(Arc::downgrade(self), rx));
            }
        }
        self.tx.get()
    }

    /// Wait (at most `limit`) until every queued event has been handled.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn drain(publisher: std::sync::Weak<Publisher>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(item) = rx.recv().await {
        let Some(p) = publisher.upgrade() else { return };
        let sent = p
            .link
            .call(OP_TIMEOUT, |mut c| async move {
                let mut pipe = redis::pipe();
                match item {
                    Outgoing::Log(channels, text) => {
                        for ch in channels {
                            pipe.publish(ch, &text).ignore();
                        }
                    }
                    Outgoing::Routing(text) => {
                        pipe.publish(ROUTING_CHANNEL, &text).ignore();
                        pipe.cmd("XADD")
                            .arg(ROUTING_STREAM)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(STREAM_MAXLEN)
                            .arg("*")
                            .arg("event")
                            .arg(&text)
                            .ignore();
                    }
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        match sent {
            Ok(()) => p.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => p.dropped.fetch_add(1, Ordering::Relaxed),
        };
        p.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_event_shape_and_channels() {
        let e = LogEvent::new(
            Component::Coordinator,
            Level::Info,
            "start",
            "llama.cpp coordinator started on port 18080".into(),
        )
        .details(json!({"port": 18080}));
        let v = e.to_json(12.5);
        assert_eq!(v["timestamp"], 12.5);
        assert_eq!(v["component"], "coordinator");
        assert_eq!(v["level"], "info");
        assert_eq!(v["event_type"], "start");
        assert_eq!(v["details"]["port"], 18080);
        assert_eq!(e.channels(), vec![LOGS_CHANNEL, COORDINATOR_CHANNEL]);

        let m = LogEvent::new(Component::System, Level::Info, "metric", "m".into());
        assert!(m.to_json(1.0).get("details").is_none());
        assert_eq!(m.channels(), vec![LOGS_CHANNEL, METRICS_CHANNEL]);
        let b = LogEvent::new(
            Component::RpcBackend,
            Level::Warning,
            "disconnect",
            "x".into(),
        );
        assert_eq!(b.channels(), vec![LOGS_CHANNEL, RPC_BACKENDS_CHANNEL]);
    }

    #[test]
    fn routing_event_shape() {
        let mut extra = Map::new();
        extra.insert("reason".into(), json!("free host"));
        let v = routing_event(
            "OLLAMA_NODE_SELECTED",
            Some("llama3.2"),
            Some("ollama"),
            extra,
        );
        assert_eq!(v["event_type"], "OLLAMA_NODE_SELECTED");
        assert_eq!(v["instance_id"], instance::id());
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["reason"], "free host");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys[..7],
            [
                "timestamp",
                "instance_id",
                "hostname",
                "pid",
                "event_type",
                "model",
                "backend"
            ]
        );
    }

    #[test]
    fn timestamps_look_like_pythons_isoformat() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(iso_timestamp(t), "2023-11-14T22:13:20.123456");
    }
}
