//! The cluster as one endpoint (`serve`): Ollama's API, OpenAI's (chat and
//! text completions, the Responses API) and Anthropic's Messages API, every
//! request scheduled by the process's one host-aware queue — the same queue
//! the shell's queries use — so the host rule (one request per physical host
//! unless its capacity says more) holds across every client.
//!
//! - `ollama_api.rs`, `openai_api.rs`, `responses_api.rs`, `anthropic_api.rs`:
//!   the endpoints, each reading its API's request into an Ollama one
//!   (`translate.rs` for OpenAI's chat and llama-server's); `replies.rs` reads
//!   replies of either kind, `writers.rs`, `responses_out.rs` and
//!   `anthropic_out.rs` write them for each kind of client; `fields.rs`
//!   checks the JSON types of a request's fields;
//! - `route.rs`: which nodes (or the coordinator) a model goes to;
//! - `relay.rs`: one generation through the scheduler, whole or streamed;
//! - `orchestrate.rs`: the agent pipeline over HTTP, and the cluster as JSON;
//! - `listen.rs`: connections (header and idle timeout, the connection limit,
//!   a declared body too large); `auth.rs`: API keys and the loopback host
//!   guard; `observe.rs`, `metrics.rs`: per-request accounts, `/metrics`, the
//!   dashboard's view;
//! - `state.rs`: what requests share, including the app's view of the cluster;
//!   `call.rs`: what a model request's handler takes from it and the request.

mod anthropic_api;
mod anthropic_out;
pub mod auth;
mod call;
mod errors;
mod fields;
mod listen;
mod metrics;
mod models_api;
mod observe;
mod ollama_api;
mod openai_api;
mod orchestrate;
mod relay;
pub mod replies;
mod responses_api;
mod responses_out;
mod route;
mod state;
pub mod translate;
pub mod writers;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use errors::{ApiError, BUSY};
pub use observe::{HOST_HEADER, NODE_HEADER, QUEUE_HEADER};
pub use state::{QuerySetup, Shared, View};

use crate::dashboard::{GatewayView, Hub};
use crate::ollama::Client;
use crate::scheduler::Scheduler;

/// The port Ollama's clients use by default.
pub(crate) const DEFAULT_PORT: u16 = 11434;
/// Requests that may wait for a host before new ones get 503 (Ollama's default).
pub(crate) const DEFAULT_MAX_QUEUE: usize = 512;
pub(crate) const DEFAULT_MAX_BODY_MB: usize = 64;
/// The outer bound of one relayed request, its time in the queue included.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long a stopping gateway lets requests in flight finish.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// How long a connection may take to send a request's head (and may sit idle
/// between requests): hyper's own default.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Client connections open at once; beyond it new ones wait (twice the queue,
/// so a full queue of one-request clients fits).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    /// API keys; empty means none are asked for.
    pub keys: Vec<String>,
    /// The user accepts a non-loopback address without keys.
    pub no_auth: bool,
    pub max_queue: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    pub request_timeout: Duration,
    /// Time to send a request's head, from connecting or the previous reply.
    pub header_timeout: Duration,
    /// Client connections open at once.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            keys: Vec::new(),
            no_auth: false,
            max_queue: DEFAULT_MAX_QUEUE,
            max_body: DEFAULT_MAX_BODY_MB * 1024 * 1024,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Config {
    /// Whether this configuration may start, and the warning to print if so.
    pub fn check(&self) -> Result<Option<String>, NeedsKey> {
        if self.bind.is_loopback() || !self.keys.is_empty() {
            return Ok(None);
        }
        if self.no_auth {
            return Ok(Some(format!(
                "⚠️  the gateway listens on {} without an API key (--no-auth): anyone who can reach \
                 this address can use every node of the cluster",
                self.bind
            )));
        }
        Err(NeedsKey(self.bind))
    }
}

/// A bind address beyond this machine without an API key (or `--no-auth`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "serve: listening on {0} (beyond this machine) needs an API key: pass --api-key KEY or set \
     SYNAPTICLLAMAS_API_KEY (clients send `Authorization: Bearer KEY`), or say --no-auth to \
     accept anyone who can reach it"
)]
pub struct NeedsKey(pub IpAddr);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr}: the address is in use — another program (perhaps a local \
         Ollama, which can be one of the nodes) listens there; choose another port with --port, \
         e.g. --port {}", addr.port().wrapping_add(1).max(1)
    )]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the gateway is built from.
pub struct Parts {
    pub sched: Arc<Scheduler>,
    pub client: Client,
    pub hub: Arc<Hub>,
    pub view: View,
    /// Where request log lines go.
    pub log: Box<dyn Fn(&str) + Send + Sync>,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    cut: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("addr", &self.addr).finish()
    }
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still running when the stop began.
    pub in_flight: usize,
    /// Requests still running when the drain deadline passed (ended with an error line).
    pub cut: usize,
}

/// Serve `parts` as configured (port 0: any free port).
pub async fn start(parts: Parts, config: Config) -> Result<Gateway, StartError> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => StartError::InUse { addr },
            _ => StartError::Listen { addr, source },
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (cut, cut_rx) = watch::channel(false);
    let hub = parts.hub.clone();
    let shared = Arc::new(Shared::new(
        parts.sched,
        parts.client,
        parts.hub,
        config,
        addr,
        parts.view,
        parts.log,
        cut_rx,
        shutdown_rx.clone(),
    ));
    let weak = Arc::downgrade(&shared);
    hub.set_gateway(Some(Arc::new(move || {
        let s = weak.upgrade()?;
        Some(GatewayView {
            address: Some(format!("http://{}", s.addr)),
            ..s.metrics.view(s.sched.queue_depth())
        })
    })));
    let app = router(shared.clone());
    let task = tokio::spawn(listen::serve(listener, app, shared.clone(), shutdown_rx));
    Ok(Gateway {
        shared,
        addr,
        shutdown,
        cut,
        task: Some(task),
    })
}

impl Gateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The app's view of the cluster changed.
    pub(crate) fn set_view(&self, v: View) {
        self.shared.set_view(v);
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.shared.metrics.in_flight.load(Ordering::Relaxed).max(0) as usize
    }

    /// Stop: no new connections; requests in flight get up to `drain` to
    /// finish, then the replies still streaming end with an error line.
    pub async fn stop(self, drain: Duration) -> Drained {
        self.stop_unless(drain, std::future::pending()).await
    }

    /// `stop`, cutting the drain short when `hurry` completes (a second Ctrl-C).
    pub(crate) async fn stop_unless(
        mut self,
        drain: Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> Drained {
        let in_flight = self.in_flight();
        let _ = self.shutdown.send(true);
        let mut cut = 0;
        if let Some(mut task) = self.task.take() {
            let finished = tokio::select! {
                r = tokio::time::timeout(drain, &mut task) => r.is_ok(),
                _ = hurry => false,
            };
            if !finished {
                cut = self.in_flight();
                let _ = self.cut.send(true);
                if tokio::time::timeout(Duration::from_secs(2), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                    let _ = task.await;
                }
            }
        }
        self.shared.hub.set_gateway(None);
        Drained { in_flight, cut }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.cut.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.shared.hub.set_gateway(None);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let guard = middleware::from_fn_with_state(shared.clone(), auth::guard);
    let dashboard = crate::dashboard::routes(
        shared.hub.clone(),
        shared.shutdown.clone(),
        shared.config.bind.is_loopback(),
    )
    .layer(guard.clone());
    Router::new()
        .route("/", get(ollama_api::root))
        .route("/api/version", get(ollama_api::version))
        .route("/api/tags", get(ollama_api::tags))
        .route("/api/ps", get(ollama_api::ps))
        .route("/api/show", post(ollama_api::show))
        .route("/api/chat", post(ollama_api::chat))
        .route("/api/generate", post(ollama_api::generate))
        .route("/api/embed", post(ollama_api::embed))
        .route("/api/embeddings", post(ollama_api::embeddings))
        .route("/api/pull", post(models_api::pull))
        .route("/api/push", post(ollama_api::manage))
        .route("/api/create", post(ollama_api::manage))
        .route("/api/copy", post(models_api::copy))
        .route("/api/delete", delete(models_api::delete))
        .route(
            "/api/blobs/{digest}",
            post(ollama_api::manage).head(ollama_api::manage),
        )
        .route("/api/orchestrate", post(orchestrate::orchestrate))
        .route("/api/cluster", get(orchestrate::cluster))
        .route("/v1/chat/completions", post(openai_api::chat_completions))
        .route("/v1/completions", post(openai_api::completions))
        .route("/v1/responses", post(responses_api::responses))
        .route("/v1/messages", post(anthropic_api::messages))
        .route("/v1/embeddings", post(openai_api::embeddings))
        .route("/v1/models", get(openai_api::models))
        .route("/v1/models/{model}", get(openai_api::model))
        .route("/metrics", get(metrics))
        // Matched routes: the route's label, then the key and host check (so
        // a refusal is counted under the route it was for).
        .route_layer(guard)
        .route_layer(middleware::from_fn(observe::label))
        .nest_service("/dashboard", dashboard)
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(shared.config.max_body))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            listen::declared_length,
        ))
        // Around everything: every reply is counted and logged, 404s and
        // refusals included.
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            observe::observe,
        ))
        .with_state(shared)
}

/// `/metrics`: the gateway's series, then the nodes' (the dashboard's).
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    shared
        .metrics
        .prometheus(shared.sched.queue_depth(), &mut out);
    out.push_str(&crate::dashboard::prometheus_text(&shared.hub));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    let e = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{} {}: no such endpoint", req.method(), req.uri().path()),
    );
    e.for_path(req.uri().path())
}

async fn wrong_method(req: Request) -> Response {
    // The path is a route (only its method is wrong): counted under it.
    if let (Some(t), Some(p)) = (
        req.extensions().get::<observe::Tally>(),
        req.extensions().get::<axum::extract::MatchedPath>(),
    ) {
        t.route(p.as_str());
    }
    let e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    );
    e.for_path(req.uri().path())
}
