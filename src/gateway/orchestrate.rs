//! Orchestration over HTTP: `POST /api/orchestrate` runs a question through
//! the same pipeline as a query typed in the shell (with optional overrides),
//! streaming its progress as NDJSON events — a task queued, started on a
//! node, retried, hedged, finished, notices — and ending with the same object
//! `-i` prints. `GET /api/cluster`: the cluster's state as JSON.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::Caller;
use super::call::Call;
use super::errors::ApiError;
use super::observe::{End, Tally};
use super::state::{Shared, View};
use crate::config::choices::Strategy;
use crate::config::effective::Effective;
use crate::config::settings::REFINE_MAX;
use crate::dashboard::Hub;
use crate::names::ModelName;
use crate::nodes::Node;
use crate::pipeline;
use crate::pipeline::call::Ctx;
use crate::pipeline::observer::Observer;
use crate::pipeline::plan::{Asked, QueryPlan};
use crate::pipeline::result::{NothingGenerated, QueryResult};
use crate::rag::prepare::{self, Said};
use crate::rag::Retriever;
use crate::scheduler::{AttemptKind, Policy, Pool};
use crate::sharding::route::{decide, Target};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    query: String,
    model: Option<String>,
    collab: Option<bool>,
    refine: Option<u32>,
    ast: Option<bool>,
    strategy: Option<String>,
    #[serde(default = "yes")]
    stream: bool,
}

fn yes() -> bool {
    true
}

/// Progress events of one query, for the client (and the dashboard).
struct Events {
    tx: mpsc::UnboundedSender<Value>,
    hub: Arc<Hub>,
    /// Task names are shown on the dashboard under this prefix (several
    /// queries may run at once).
    tag: String,
}

impl Events {
    fn send(&self, v: Value) {
        let _ = self.tx.send(v);
    }
}

impl Observer for Events {
    fn notice(&self, line: String) {
        self.hub.notice(line.clone());
        self.send(json!({"event": "notice", "line": line}));
    }
    fn queued(&self, task: &str) {
        self.send(json!({"event": "queued", "task": task}));
    }
    fn attempt(&self, task: &str, node: &Node, kind: &AttemptKind) {
        self.hub
            .task_started(&format!("{} {task}", self.tag), node.name());
        let event = match kind {
            AttemptKind::First => "started",
            AttemptKind::Retry { .. } => "retried",
            AttemptKind::Hedge { .. } => "hedged",
        };
        let mut v = json!({"event": event, "task": task, "node": node.name(), "url": node.url(),
                           "host": node.host});
        match kind {
            AttemptKind::First => {}
            AttemptKind::Retry { after } => v["after"] = json!(after),
            AttemptKind::Hedge { why } => v["why"] = json!(why),
        }
        self.send(v);
    }
    fn finished(&self, task: &str) {
        self.hub.task_finished(&format!("{} {task}", self.tag));
        self.send(json!({"event": "finished", "task": task}));
    }
}

type Run = Pin<Box<dyn Future<Output = Result<QueryResult, NothingGenerated>> + Send>>;

/// The pipeline run for a request, and where its events arrive.
fn prepare(
    shared: &Shared,
    req: Request,
    caller: &Caller,
) -> Result<(Run, mpsc::UnboundedReceiver<Value>), ApiError> {
    check(&req)?;
    let view = shared.view();
    let q = &view.query;
    let asked = asked(&req)?;
    if shared.sched.queue_depth() >= shared.config.max_queue {
        return Err(ApiError::busy(shared.retry_after(&q.nodes)));
    }
    let QueryPlan {
        mut plan,
        policy,
        route,
        model,
        synthesis_model,
        num_predict,
        timeouts,
    } = QueryPlan::new(&q.effective, asked);
    let coordinator = coordinator(&view, &model, caller)?;
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let (tx, rx) = mpsc::unbounded_channel();
    let observer = Arc::new(Events {
        tx,
        hub: shared.hub.clone(),
        tag: format!("orchestrate#{}", RUNS.fetch_add(1, Ordering::Relaxed) + 1),
    });
    let ctx = Ctx {
        client: shared.client.clone(),
        sched: shared.sched.clone(),
        pool: Pool::new(q.nodes.clone(), policy).for_client(caller.0.clone()),
        coordinator,
        route,
        num_predict,
        model,
        synthesis_model,
        timeouts,
        agents: q.agents.clone(),
        observer,
        replies: Default::default(),
    };
    let (effective, cache, embedders) = (q.effective.clone(), q.rag.clone(), view.nodes.clone());
    let query = req.query;
    let hub = shared.hub.clone();
    let run: Run = Box::pin(async move {
        plan.rag = retriever(&ctx, &effective, &cache, &embedders).await;
        let r = pipeline::run_query(&ctx, &query, &plan).await;
        if let Ok(r) = &r {
            hub.set_metrics(r.metrics.clone());
        }
        r
    });
    Ok((run, rx))
}

/// A request's own values: a question, a model name that is a name, a
/// number of refinements in range.
fn check(req: &Request) -> Result<(), ApiError> {
    if req.query.trim().is_empty() {
        return Err(ApiError::bad_request("query is empty").with_param("query"));
    }
    if let Some(m) = &req.model {
        m.parse::<ModelName>()
            .map_err(|e| ApiError::bad_request(format!("model: {e}")))?;
    }
    if let Some(r) = req.refine.filter(|r| *r > REFINE_MAX) {
        return Err(ApiError::bad_request(format!(
            "refine must be from 0 to {REFINE_MAX}, got {r}"
        )));
    }
    Ok(())
}

/// What the request asks for beyond the shell's settings; its strategy is a
/// word (any case).
fn asked(req: &Request) -> Result<Asked, ApiError> {
    let strategy = match &req.strategy {
        None => None,
        Some(w) => Some(
            Strategy::ALL
                .into_iter()
                .find(|s| s.word().eq_ignore_ascii_case(w))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "strategy `{w}` is not one of auto, single, parallel, multi, gpu"
                    ))
                })?,
        ),
    };
    Ok(Asked {
        model: req.model.clone(),
        collaborative: req.collab,
        refinement_rounds: req.refine,
        ast_voting: req.ast,
        strategy,
    })
}

/// The llama.cpp coordinator, when `model` or the synthesis model is routed
/// to it; unavailable (503) when it is needed and none is running.
fn coordinator(view: &View, model: &str, caller: &Caller) -> Result<Option<Pool>, ApiError> {
    let needs_coordinator = std::iter::once(model)
        .chain(view.query.effective.synthesis_model.as_deref())
        .any(|m| decide(view.route(), m).0 == Target::Coordinator);
    match (needs_coordinator, &view.coordinator) {
        (false, _) => Ok(None),
        (true, Some(c)) => Ok(Some(
            Pool::new(vec![c.clone()], Policy::Pool).for_client(caller.0.clone()),
        )),
        (true, None) => Err(ApiError {
            retry_after: Some(30),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this query needs the llama.cpp coordinator (model sharding), and none is running: \
                 a query in the shell starts it, or set coordinator_url",
            )
        }),
    }
}

/// Retrieval over the shell's documents when RAG is on there (what keeps it
/// from running is a notice event; the answer then comes without documents).
async fn retriever(
    ctx: &Ctx,
    eff: &Effective,
    cache: &crate::rag::Cache,
    embedders: &[Arc<Node>],
) -> Option<Retriever> {
    let setup = prepare::Setup {
        enabled: eff.rag_enabled,
        path: eff.rag_path.as_deref(),
        model: &eff.rag_model,
        cache,
        client: &ctx.client,
        sched: ctx.sched.clone(),
        candidates: embedders,
    };
    let quiet: prepare::Progress = Arc::new(|_, _| {});
    prepare::retriever(setup, quiet, |said| match said {
        Said::Info(l) | Said::Warning(l) => ctx.observer.notice(l),
    })
    .await
}

/// The object `-i` prints for a result (or its error).
fn final_object(r: Result<QueryResult, NothingGenerated>) -> Value {
    match r {
        Ok(r) => r.to_json(),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

struct Progress {
    run: Option<Run>,
    rx: mpsc::UnboundedReceiver<Value>,
    pending: VecDeque<Bytes>,
    tally: Tally,
    /// The drain deadline passed: end with an error line.
    cut: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Dropping the run cancels every request it has in flight.
        self.tally.stream_ended(End::Gone, None);
    }
}

impl Progress {
    async fn step(mut self) -> Option<(Result<Bytes, Infallible>, Progress)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((Ok(b), self));
            }
            let run = self.run.as_mut()?;
            tokio::select! {
                biased;
                _ = self.cut.wait_for(|c| *c) => {
                    self.run = None;
                    let msg = "the gateway is shutting down; the query was stopped";
                    self.pending.push_back(line(&json!({ "error": msg })));
                    self.tally.stream_ended(End::Broken, Some(msg.into()));
                }
                Some(ev) = self.rx.recv() => self.pending.push_back(line(&ev)),
                r = run => {
                    self.run = None;
                    while let Ok(ev) = self.rx.try_recv() {
                        self.pending.push_back(line(&ev));
                    }
                    let broken = r.is_err();
                    self.pending.push_back(line(&final_object(r)));
                    self.tally.stream_ended(if broken { End::Broken } else { End::Finished }, None);
                }
            }
        }
    }
}

pub async fn orchestrate(Call(shared, tally, caller, body): Call) -> Response {
    let parsed = super::ollama_api::object(body).and_then(|m| {
        serde_json::from_value::<Request>(Value::Object(m))
            .map_err(|e| ApiError::bad_request(format!("orchestrate: {e}")))
    });
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return e.ollama(),
    };
    let stream = req.stream;
    let model = req.model.clone();
    let (run, rx) = match prepare(&shared, req, &caller) {
        Ok(p) => p,
        Err(e) => {
            if e.message == super::errors::BUSY {
                tally.rejected();
            }
            return e.ollama();
        }
    };
    // A model no node has is a 404 in Ollama's words, as for `/api/chat`:
    // no node is asked, so none is blamed.
    if let Some(m) = model {
        if let Err(e) = super::route::resolve(&shared, &m).await {
            if e.status == StatusCode::NOT_FOUND {
                return e.ollama();
            }
        }
    }
    if !stream {
        return match run.await {
            Ok(r) => Json(r.to_json()).into_response(),
            Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, format!("Query failed: {e}")).ollama(),
        };
    }
    tally.streaming();
    let progress = Progress {
        run: Some(run),
        rx,
        pending: VecDeque::new(),
        tally,
        cut: shared.cut.clone(),
    };
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(futures_util::stream::unfold(progress, Progress::step)),
    )
        .into_response()
}

/// Nodes, hosts (capacity, requests in flight), coordinator, RPC backends,
/// the queue (depth, by client) and the gateway's counters.
pub async fn cluster(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.view();
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &view.nodes {
        hosts
            .entry(n.host.clone())
            .or_default()
            .push(n.name().to_string());
    }
    if let Some(c) = &view.coordinator {
        hosts
            .entry(c.host.clone())
            .or_default()
            .push(c.name().to_string());
    }
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|(h, nodes)| {
            json!({"host": h, "nodes": nodes, "capacity": shared.sched.capacity(&h),
                   "in_flight": shared.sched.in_flight(&h)})
        })
        .collect();
    let depth = shared.sched.queue_depth();
    let by_client: Vec<Value> = shared
        .sched
        .queue_by_client()
        .into_iter()
        .map(|(c, n)| json!({"client": c.as_deref(), "waiting": n}))
        .collect();
    let nodes: Vec<crate::dashboard::NodeView> = view
        .nodes
        .iter()
        .map(|n| crate::dashboard::NodeView::of(n, shared.sched.in_flight_on(n)))
        .collect();
    Json(json!({
        "nodes": nodes,
        "hosts": hosts,
        "coordinator": shared.hub.coordinator(),
        "backends": shared.hub.backends(),
        "routing": format!("{:?}", view.route()).to_lowercase(),
        "queue": {"depth": depth, "by_client": by_client, "limit": shared.config.max_queue},
        "gateway": shared.metrics.view(depth),
    }))
    .into_response()
}
