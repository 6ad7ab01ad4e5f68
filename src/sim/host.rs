//! A simulated Ollama host: a real HTTP server speaking Ollama's API on its own
//! listeners, with token pacing, per-host contention, faults and counters.
//! This file is the host's life (start, kill, revive) and state; `api.rs`
//! answers the requests, `inference.rs` and `reply.rs` generate, and
//! `embeddings.rs` embeds.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::serve::ListenerExt;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::config::{Fault, SimConfig};
use super::embeddings::EmbedLog;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SimStats {
    /// Every HTTP request, probes included.
    pub http_requests: u64,
    /// Inference requests (`/api/generate`, `/api/chat`).
    pub requests: u64,
    pub completed: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub dead: bool,
    /// Embedding requests (`/api/embed`, `/api/embeddings`) and the inputs they held.
    pub embed_requests: u64,
    pub embed_inputs: u64,
    /// Times a request asked for another `num_ctx` than the model was loaded
    /// with, so the model was loaded again (as Ollama does).
    pub reloads: u64,
    /// Requests refused with HTTP 400 because they did not fit the context.
    pub too_large: u64,
}

pub struct SimHost {
    pub name: String,
    config: Mutex<SimConfig>,
    addrs: Vec<SocketAddr>,
    pub(super) http_requests: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    dead: AtomicBool,
    pub(super) loaded: Mutex<Vec<String>>,
    /// The context each loaded model was loaded with.
    pub(super) loaded_ctx: Mutex<std::collections::HashMap<String, u64>>,
    reloads: AtomicU64,
    pub(super) too_large: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(super) embeds: EmbedLog,
    /// The bodies of the last `RECENT` inference requests, oldest first.
    recent: Mutex<VecDeque<Value>>,
}

/// Inference request bodies a host keeps for tests to look at.
const RECENT: usize = 64;

/// A lock on part of the host's state. A panic while one was held (a bug in
/// the simulator) leaves plain data behind, still fit to use, so the host
/// carries on rather than fail every later request.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a request in flight for as long as it lives.
pub(super) struct InFlight(Arc<SimHost>);

impl InFlight {
    pub(super) fn new(host: &Arc<SimHost>) -> InFlight {
        let n = host.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        host.max_in_flight.fetch_max(n, Ordering::SeqCst);
        InFlight(host.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SimHost {
    /// Start a host listening on `bind` at each of `ports` (0 = any free port).
    pub async fn start(
        name: impl Into<String>,
        bind: IpAddr,
        ports: &[u16],
        config: SimConfig,
    ) -> std::io::Result<Arc<SimHost>> {
        let mut listeners = Vec::new();
        for &p in ports {
            listeners.push(tokio::net::TcpListener::bind(SocketAddr::new(bind, p)).await?);
        }
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        // With a context length the models are loaded from the start, with it.
        let preloaded: Vec<String> = match config.context_length {
            Some(_) => config.models.clone(),
            None => Vec::new(),
        };
        let preloaded_ctx = preloaded
            .iter()
            .map(|m| (m.clone(), config.context_length.unwrap_or(DEFAULT_CTX)))
            .collect();
        let host = Arc::new(SimHost {
            name: name.into(),
            config: Mutex::new(config),
            addrs,
            http_requests: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            loaded: Mutex::new(preloaded),
            loaded_ctx: Mutex::new(preloaded_ctx),
            reloads: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            embeds: EmbedLog::default(),
            recent: Mutex::new(VecDeque::new()),
        });
        host.serve(listeners);
        Ok(host)
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Base URLs, one per listener (`http://127.0.0.1:PORT`).
    pub fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    pub fn url(&self) -> String {
        self.urls().remove(0)
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            http_requests: self.http_requests.load(Ordering::SeqCst),
            requests: self.requests.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            dead: self.dead.load(Ordering::SeqCst),
            embed_requests: self.embeds.requests.load(Ordering::SeqCst),
            embed_inputs: self.embeds.inputs.load(Ordering::SeqCst),
            reloads: self.reloads.load(Ordering::SeqCst),
            too_large: self.too_large.load(Ordering::SeqCst),
        }
    }

    /// The bodies of the last 64 inference requests (`/api/generate`,
    /// `/api/chat`) as JSON, oldest first: what the host was asked, `format`
    /// included (also at `GET /sim/requests`).
    pub fn recent_requests(&self) -> Vec<Value> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// Keep an inference request's body (a body that is not JSON is kept as
    /// a string).
    pub(super) fn record(&self, body: &[u8]) {
        let v = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(v);
    }

    /// When each embedding request that was answered started and ended.
    pub fn embed_spans(&self) -> Vec<(Instant, Instant)> {
        lock(&self.embeds.spans).clone()
    }

    pub fn config(&self) -> SimConfig {
        lock(&self.config).clone()
    }

    pub fn set_config(&self, c: SimConfig) {
        *lock(&self.config) = c;
    }

    pub fn set_fault(&self, fault: Fault, after: u64) {
        let mut c = lock(&self.config);
        c.fault = fault;
        c.fault_after = after;
    }

    /// The host goes away: no new connections, open ones break.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// A host that went away comes back on the same addresses (the machine rebooted).
    pub async fn revive(self: &Arc<Self>) -> std::io::Result<()> {
        let mut listeners = Vec::new();
        for a in &self.addrs {
            listeners.push(tokio::net::TcpListener::bind(a).await?);
        }
        self.serve(listeners);
        self.dead.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn serve(self: &Arc<Self>, listeners: Vec<tokio::net::TcpListener>) {
        let app = super::api::router(self.clone());
        let mut tasks = lock(&self.tasks);
        for l in listeners {
            let app = app.clone();
            // Like Ollama's Go server: no Nagle delay on small NDJSON lines.
            let l = l.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            }));
        }
    }

    /// Load `model` for a request that asked for `num_ctx` (capped at the
    /// model's context length): a different size than it is loaded with
    /// loads it again. Returns the context it is loaded with.
    pub(super) fn load(&self, model: &str, num_ctx: Option<u64>, trained: Option<u64>) -> u64 {
        let cap = |n: u64| trained.map_or(n, |t| n.min(t));
        {
            let mut loaded = lock(&self.loaded);
            if !loaded.iter().any(|m| m == model) {
                loaded.push(model.to_string());
            }
        }
        let mut ctx = lock(&self.loaded_ctx);
        match (ctx.get(model).copied(), num_ctx.map(cap)) {
            (Some(cur), None) => cur,
            (Some(cur), Some(asked)) => {
                if asked != cur {
                    self.reloads.fetch_add(1, Ordering::SeqCst);
                    ctx.insert(model.to_string(), asked);
                }
                asked
            }
            (None, asked) => {
                let n = asked.or(trained).unwrap_or(DEFAULT_CTX);
                ctx.insert(model.to_string(), n);
                n
            }
        }
    }
}

/// The context a model is loaded with when neither the request nor the
/// configuration says (Ollama's default).
pub(super) const DEFAULT_CTX: u64 = 4096;

impl Drop for SimHost {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}
