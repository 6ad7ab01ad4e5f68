//! Ollama's API for the whole cluster: `/`, `/api/version`, `/api/tags` (the
//! union of the nodes' models), `/api/ps` (what runs where), `/api/show`,
//! `/api/chat` and `/api/generate` (streamed or whole), `/api/embed` (a batch
//! split across hosts and put back in order) and `/api/embeddings`. A node
//! cooling down is not asked for its lists: its models stay listed from what
//! it last said, so a client asking for one gets the gateway's account of the
//! node rather than "not found". Pull, delete, copy, load and unload are
//! `models_api.rs`'s; create, push and blobs answer that they belong on a node.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::call::{Body, Call};
use super::errors::ApiError;
use super::fields;
use super::models_api;
use super::observe::Tally;
use super::relay::{self, Job, Wire, Writer};
use super::route::{self, Target};
use super::state::Shared;
use super::translate::{openai_request_from_ollama, Shape};
use super::writers::OllamaOut;
use crate::nodes::{release, Node};
use crate::ollama::manage::Residency;
use crate::ollama::types::same_model;
use crate::ollama::{ClientError, ErrorKind, Timeouts};
use crate::scheduler::{Attempt, Measured, Task};

type Ctx = State<Arc<Shared>>;

/// A request body that must be a JSON object.
pub fn object(body: Body) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body is too large")
        } else {
            ApiError::new(status, r.body_text())
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// The `model` field (Ollama also accepts the older `name`).
pub(crate) fn model_of(req: &Map<String, Value>) -> Result<String, ApiError> {
    match req.get("model").or_else(|| req.get("name")) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(ApiError::bad_request("model is required").with_param("model")),
    }
}

pub(crate) fn to_bytes(m: &Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(m).unwrap_or_default())
}

pub async fn root() -> &'static str {
    "Ollama is running"
}

/// Nodes worth asking for their lists (not cooling down).
fn live(nodes: &[Arc<Node>]) -> Vec<Arc<Node>> {
    nodes.iter().filter(|n| n.available()).cloned().collect()
}

/// `GET path` on every live node at once: (node, parsed JSON) for those that answered.
async fn gather(shared: &Shared, nodes: &[Arc<Node>], path: &str) -> Vec<(Arc<Node>, Value)> {
    let calls = live(nodes).into_iter().map(|n| async move {
        let r = shared.client.get_raw(n.url(), path, Timeouts::PROBE).await;
        (n, r)
    });
    join_all(calls)
        .await
        .into_iter()
        .filter_map(|(n, r)| {
            let v = serde_json::from_slice::<Value>(&r.ok()?).ok()?;
            Some((n, v))
        })
        .collect()
}

/// The lowest version among the nodes: what every node supports.
pub async fn version(State(shared): Ctx) -> Response {
    let nodes = shared.view().nodes.clone();
    let versions: Vec<String> = gather(&shared, &nodes, "/api/version")
        .await
        .into_iter()
        .filter_map(|(_, v)| v["version"].as_str().map(String::from))
        .collect();
    let lowest = versions
        .into_iter()
        .min_by_key(|v| release::key(v))
        .unwrap_or_else(|| "0.0.0".into());
    Json(json!({ "version": lowest })).into_response()
}

/// The union of the models on the nodes (first node's entry for each name),
/// plus the models the routing path sends to the coordinator.
pub async fn tags(State(shared): Ctx) -> Response {
    Json(json!({ "models": models(&shared).await })).into_response()
}

/// The models of `/api/tags` (read fresh from the live nodes; a cooling
/// node's as it last listed them).
pub async fn models(shared: &Shared) -> Vec<Value> {
    let view = shared.view();
    let mut models: Vec<Value> = Vec::new();
    let answered = gather(shared, &view.nodes, "/api/tags").await;
    let lists: Vec<Vec<Value>> = {
        let mut listed = shared.listed.lock().unwrap_or_else(|e| e.into_inner());
        for (node, v) in &answered {
            let list = v["models"].as_array().cloned().unwrap_or_default();
            node.state().models = list
                .iter()
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect();
            listed.insert(node.url().to_string(), list);
        }
        let cooling = view.nodes.iter().filter(|n| !n.available());
        answered
            .iter()
            .map(|(n, _)| n)
            .chain(cooling)
            .map(|n| listed.get(n.url()).cloned().unwrap_or_else(|| known(n)))
            .collect()
    };
    for m in lists.into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        if !models
            .iter()
            .any(|x| same_model(x["name"].as_str().unwrap_or(""), name))
        {
            models.push(m);
        }
    }
    if view.coordinator.is_some() {
        for name in &view.coordinator_models {
            if !models
                .iter()
                .any(|x| same_model(x["name"].as_str().unwrap_or(""), name))
            {
                models.push(json!({"name": name, "model": name, "size": 0, "digest": "",
                    "details": {"format": "gguf", "family": "llama.cpp coordinator (model sharding)"}}));
            }
        }
    }
    models
}

/// A node's models as its state knows them (its names alone), when the
/// gateway never read its list.
fn known(node: &Node) -> Vec<Value> {
    node.state()
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m}))
        .collect()
}

/// Every node's running models, each with the node and host that hold it (a
/// cooling node's as it last said).
pub async fn ps(State(shared): Ctx) -> Response {
    let nodes = shared.view().nodes.clone();
    let mut out = Vec::new();
    let mut add = |node: &Node, mut m: Value| {
        if let Value::Object(o) = &mut m {
            o.insert("node".into(), json!(node.name()));
            o.insert("node_url".into(), json!(node.url()));
            o.insert("host".into(), json!(node.host));
        }
        out.push(m);
    };
    for (node, v) in gather(&shared, &nodes, "/api/ps").await {
        let list = v["models"].as_array().cloned().unwrap_or_default();
        node.state().loaded = list
            .iter()
            .filter_map(|m| serde_json::from_value(m.clone()).ok())
            .collect();
        for m in list {
            add(&node, m);
        }
    }
    for node in nodes.iter().filter(|n| !n.available()) {
        let loaded = node.state().loaded.clone();
        for m in loaded {
            add(node, serde_json::to_value(m).unwrap_or_default());
        }
    }
    Json(json!({ "models": out })).into_response()
}

/// `/api/show` from the preferred node that has the model.
pub async fn show(Call(shared, tally, _, body): Call) -> Response {
    match show_inner(&shared, &tally, body).await {
        Ok(r) => r,
        Err(e) => e.ollama(),
    }
}

async fn show_inner(shared: &Shared, tally: &Tally, body: Body) -> Result<Response, ApiError> {
    let req = object(body)?;
    fields::check(&req, fields::OLLAMA_SHOW)?;
    let model = model_of(&req)?;
    let view = shared.view();
    let mut nodes = route::nodes_with(&view.nodes, &model);
    if nodes.is_empty() {
        if let Ok(Target::Coordinator(c)) = route::resolve(shared, &model).await {
            tally.model(&model);
            return Ok(Json(json!({
                "modelfile": "", "parameters": "", "template": "",
                "details": {"format": "gguf", "family": "llama.cpp coordinator (model sharding)"},
                "model_info": {}, "capabilities": ["completion"],
                "served_by": c.url(),
            }))
            .into_response());
        }
        match route::resolve(shared, &model).await? {
            Target::Nodes(n) => nodes = n,
            Target::Coordinator(_) => return Err(ApiError::model_not_found(&model)),
        }
    }
    tally.model(&model);
    nodes.sort_by_key(|n| (!n.state().health.is_up(), n.entry.priority));
    let mut last: Option<ClientError> = None;
    for n in live(&nodes) {
        match shared
            .client
            .post_raw(n.url(), "/api/show", to_bytes(&req), Timeouts::PROBE)
            .await
        {
            Ok(b) => {
                let mut r =
                    ([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response();
                if let Ok(v) = HeaderValue::from_str(n.name()) {
                    r.headers_mut().insert(super::observe::NODE_HEADER, v);
                }
                return Ok(r);
            }
            Err(ClientError {
                kind: ErrorKind::Http { status, message },
                ..
            }) if status < 500 => {
                return Err(ApiError::new(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    message,
                ))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        match last {
            Some(e) => format!("no node that has {model} answered: {e}"),
            None => format!("every node that has {model} is cooling down after failures"),
        },
    ))
}

pub async fn chat(call: Call) -> Response {
    generation(call, Shape::Chat).await
}

pub async fn generate(call: Call) -> Response {
    generation(call, Shape::Generate).await
}

async fn generation(Call(shared, tally, caller, body): Call, shape: Shape) -> Response {
    let raw = body.as_ref().ok().cloned();
    let prepared = async {
        let req = object(body)?;
        fields::check(
            &req,
            match shape {
                Shape::Chat => fields::OLLAMA_CHAT,
                Shape::Generate => fields::OLLAMA_GENERATE,
            },
        )?;
        let model = model_of(&req)?;
        if let Some(what) = models_api::residency_of(&req, shape) {
            return Ok(Prepared::Residency(req, model, what));
        }
        let stream = req.get("stream").and_then(|s| s.as_bool()).unwrap_or(true);
        // A streamed request goes to the node as it came.
        let as_sent = stream && req.get("stream").is_none_or(|s| s == &json!(true));
        let target = route::resolve(&shared, &model).await?;
        tally.model(&model);
        let path = match shape {
            Shape::Chat => "/api/chat",
            Shape::Generate => "/api/generate",
        };
        let (pool, path, body, wire) = match target {
            Target::Nodes(nodes) => {
                let body = match raw {
                    Some(b) if as_sent => b,
                    _ => {
                        let mut m = req;
                        m.insert("stream".into(), json!(true));
                        to_bytes(&m)
                    }
                };
                (
                    route::pool(&shared, nodes, caller.0),
                    path,
                    body,
                    Wire::Ollama,
                )
            }
            Target::Coordinator(c) => {
                let m = openai_request_from_ollama(&req, shape, shared.view().num_predict());
                (
                    route::coordinator_pool(&shared, c, caller.0),
                    "/v1/chat/completions",
                    to_bytes(&m),
                    Wire::OpenAi,
                )
            }
        };
        let job = Job {
            pool,
            label: format!("{} {model}", &path[path.rfind('/').map_or(0, |i| i + 1)..]),
            model: model.clone(),
            path,
            body,
            wire,
        };
        let writer = Writer::Ollama(OllamaOut {
            shape,
            model,
            relay_raw: wire == Wire::Ollama,
        });
        Ok::<_, ApiError>(Prepared::Relay(job, writer, stream))
    }
    .await;
    match prepared {
        Ok(Prepared::Relay(job, writer, stream)) => {
            respond(&shared, job, writer, stream, tally).await
        }
        Ok(Prepared::Residency(req, model, what)) => {
            models_api::residency(&shared, &tally, &req, &model, shape, what).await
        }
        Err(e) => e.ollama(),
    }
}

/// What a generate or chat request turned out to be.
enum Prepared {
    /// A generation, relayed through the scheduler.
    Relay(Job, Writer, bool),
    /// An empty request: load or unload the model on the nodes that have it.
    Residency(Map<String, Value>, String, Residency),
}

/// Relay a generation and answer in the writer's API.
pub(crate) async fn respond(
    shared: &Arc<Shared>,
    job: Job,
    writer: Writer,
    stream: bool,
    tally: Tally,
) -> Response {
    if stream {
        match relay::begin(shared, &job, &tally).await {
            Ok(Ok(begun)) => relay::stream(shared, begun, writer, tally),
            Ok(Err(refused)) => with_headers(writer.reject(refused.error()), &tally),
            Err(e) => writer.reject(e),
        }
    } else {
        match relay::collect(shared, &job, &tally).await {
            Ok(Ok(c)) => relay::whole(writer, &c, &tally),
            Ok(Err(refused)) => with_headers(writer.reject(refused.error()), &tally),
            Err(e) => writer.reject(e),
        }
    }
}

fn with_headers(mut r: Response, tally: &Tally) -> Response {
    tally.headers(&mut r);
    r
}

/// The nodes for an embedding model (always the Ollama pool: the coordinator
/// serves generation only).
pub(crate) async fn embedding_nodes(
    shared: &Shared,
    model: &str,
) -> Result<Vec<Arc<Node>>, ApiError> {
    let view = shared.view();
    let nodes = route::nodes_with(&view.nodes, model);
    if !nodes.is_empty() {
        return Ok(nodes);
    }
    match route::resolve(shared, model).await {
        Ok(Target::Nodes(n)) => Ok(n),
        Ok(Target::Coordinator(_)) => Err(ApiError::model_not_found(model)),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            Err(ApiError::model_not_found(model))
        }
        Err(e) => Err(e),
    }
}

/// Split `n` inputs into at most `parts` runs of nearly equal length, in order.
pub fn split(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let (base, extra) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut at = 0;
    for i in 0..parts {
        let len = base + usize::from(i < extra);
        out.push(at..at + len);
        at += len;
    }
    out
}

/// What one part of a batch gave back.
struct PartReply {
    embeddings: Vec<Value>,
    prompt_eval_count: u64,
    load_duration: u64,
    node: Arc<Node>,
    waited: std::time::Duration,
}

/// Embed `inputs` (already a list) with `req`'s other fields: split across the
/// hosts that have the model, each part through the queue, put back in order.
pub(crate) async fn embed_batch(
    shared: &Shared,
    tally: &Tally,
    caller: &Caller,
    req: &Map<String, Value>,
    model: &str,
    inputs: Vec<Value>,
) -> Result<(Vec<Value>, u64, u64), ApiError> {
    let nodes = embedding_nodes(shared, model).await?;
    tally.model(model);
    let hosts = nodes
        .iter()
        .map(|n| n.host.as_str())
        .collect::<HashSet<_>>()
        .len();
    let pool = route::pool(shared, nodes, caller.0.clone());
    let ranges = split(inputs.len(), hosts);
    let count = ranges.len();
    let labels: Vec<String> = (1..=count)
        .map(|i| format!("embed {model} (part {i}/{count})"))
        .collect();
    let say = relay::notice(shared);
    let parts = ranges.into_iter().zip(&labels).map(|(r, label)| {
        let mut body = req.clone();
        body.insert("input".into(), Value::Array(inputs[r].to_vec()));
        let body = to_bytes(&body);
        let (pool, say) = (&pool, &say);
        async move {
            let task = Task {
                label,
                model,
                prompt_tokens: body.len() / 4,
                limits: shared.limits(),
                own_bound: false,
            };
            let attempt = |a: Attempt| embed_part(shared, a, body.clone());
            shared.sched.run(pool, &task, attempt, say).await
        }
    });
    let mut all = Gathered::with_capacity(inputs.len());
    for r in join_all(parts).await {
        match r {
            Ok((Ok(p), attr)) => all.add(p, attr.retries, attr.hedges),
            Ok((Err((status, message)), _)) => {
                return Err(ApiError::new(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    message,
                ))
            }
            Err(f) => return Err(relay::gave_up(shared, tally, &f, model, &pool)),
        }
    }
    tally.ran_on(&all.used, all.waited, all.retries, all.hedges);
    Ok((all.embeddings, all.prompt_eval_count, all.load_duration))
}

/// One attempt at a part of a batch on the attempt's node: its reply, or the
/// node's refusal of the request itself (status 400, 404, 413 or 422, which
/// another node would give too) as (status, message).
async fn embed_part(
    shared: &Shared,
    a: Attempt,
    body: Bytes,
) -> Result<(Result<PartReply, (u16, String)>, Measured), ClientError> {
    let raw = shared
        .client
        .post_raw(a.node.url(), "/api/embed", body, a.timeouts)
        .await;
    let raw = match raw {
        Ok(b) => b,
        Err(ClientError {
            kind: ErrorKind::Http { status, message },
            ..
        }) if matches!(status, 400 | 404 | 413 | 422) => {
            return Ok((Err((status, message)), Measured::default()))
        }
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&raw).map_err(|e| {
        ClientError::new(
            a.node.url(),
            ErrorKind::BadReply {
                message: format!("not an embedding reply ({e})"),
            },
        )
    })?;
    a.progress.piece("");
    Ok((
        Ok(PartReply {
            embeddings: v["embeddings"].as_array().cloned().unwrap_or_default(),
            prompt_eval_count: v["prompt_eval_count"].as_u64().unwrap_or(0),
            load_duration: v["load_duration"].as_u64().unwrap_or(0),
            node: a.node.clone(),
            waited: a.waited,
        }),
        Measured::default(),
    ))
}

/// The parts of a batch put back together, in order: the embeddings, the
/// prompt tokens (summed), the longest load, the nodes used, the longest
/// wait, and the retries and hedges.
struct Gathered {
    embeddings: Vec<Value>,
    prompt_eval_count: u64,
    load_duration: u64,
    used: Vec<Arc<Node>>,
    waited: std::time::Duration,
    retries: usize,
    hedges: usize,
}

impl Gathered {
    fn with_capacity(n: usize) -> Gathered {
        Gathered {
            embeddings: Vec::with_capacity(n),
            prompt_eval_count: 0,
            load_duration: 0,
            used: Vec::new(),
            waited: std::time::Duration::ZERO,
            retries: 0,
            hedges: 0,
        }
    }

    fn add(&mut self, p: PartReply, retries: usize, hedges: usize) {
        self.embeddings.extend(p.embeddings);
        self.prompt_eval_count += p.prompt_eval_count;
        self.load_duration = self.load_duration.max(p.load_duration);
        self.waited = self.waited.max(p.waited);
        self.retries += retries;
        self.hedges += hedges;
        if !self.used.iter().any(|n| Arc::ptr_eq(n, &p.node)) {
            self.used.push(p.node);
        }
    }
}

/// `/api/embed`: `input` a string or a list of strings.
pub async fn embed(Call(shared, tally, caller, body): Call) -> Response {
    let started = std::time::Instant::now();
    let run = async {
        let req = object(body)?;
        fields::check(&req, fields::OLLAMA_EMBED)?;
        let model = model_of(&req)?;
        let inputs = match req.get("input") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![json!(s)],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.clone(),
            Some(_) => {
                return Err(
                    ApiError::bad_request("input must be a string or a list of strings")
                        .with_param("input"),
                )
            }
        };
        let (embeddings, prompt_eval_count, load_duration) =
            embed_batch(&shared, &tally, &caller, &req, &model, inputs).await?;
        Ok(json!({
            "model": model, "embeddings": embeddings,
            "total_duration": started.elapsed().as_nanos() as u64,
            "load_duration": load_duration, "prompt_eval_count": prompt_eval_count,
        }))
    };
    match run.await {
        Ok(v) => with_headers(Json(v).into_response(), &tally),
        Err(e) => e.ollama(),
    }
}

/// The older `/api/embeddings` (`prompt`, one vector), relayed to one node.
pub async fn embeddings(Call(shared, tally, caller, body): Call) -> Response {
    let run = async {
        let req = object(body)?;
        fields::check(&req, fields::OLLAMA_EMBED)?;
        let model = model_of(&req)?;
        let nodes = embedding_nodes(&shared, &model).await?;
        tally.model(&model);
        let pool = route::pool(&shared, nodes, caller.0.clone());
        let label = format!("embeddings {model}");
        let task = Task {
            label: &label,
            model: &model,
            prompt_tokens: 0,
            limits: shared.limits(),
            own_bound: false,
        };
        let body = to_bytes(&req);
        let say = |line: String| shared.log(&line);
        let r = shared
            .sched
            .run(
                &pool,
                &task,
                |a: Attempt| {
                    let body = body.clone();
                    let shared = &shared;
                    async move {
                        let b = shared
                            .client
                            .post_raw(a.node.url(), "/api/embeddings", body, a.timeouts)
                            .await?;
                        Ok(((b, a.node.clone(), a.waited), Measured::default()))
                    }
                },
                &say,
            )
            .await;
        match r {
            Ok(((b, node, waited), attr)) => {
                tally.ran(&node, waited, attr.retries, attr.hedges);
                Ok(b)
            }
            Err(f) => Err(relay::gave_up(&shared, &tally, &f, &model, &pool)),
        }
    };
    match run.await {
        Ok(b) => with_headers(
            ([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response(),
            &tally,
        ),
        Err(e) => e.ollama(),
    }
}

/// `push`, `create` and blobs: they make or publish a model from one node's
/// files, so they are run on that node.
pub(crate) async fn manage(State(shared): Ctx, uri: axum::http::Uri) -> Response {
    let op = uri.path().rsplit('/').next().unwrap_or("this").to_string();
    let op = if uri.path().starts_with("/api/blobs") {
        "create".to_string()
    } else {
        op
    };
    let nodes: Vec<String> = shared
        .view()
        .nodes
        .iter()
        .map(|n| format!("{} ({})", n.name(), n.url()))
        .collect();
    let example = shared
        .view()
        .nodes
        .first()
        .map(|n| format!("; e.g. OLLAMA_HOST={} ollama {op} MODEL", n.url()))
        .unwrap_or_default();
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "`{op}` works on one node's own files, so run it on the node itself, not through \
             the SynapticLlamas gateway{example}; nodes: {}",
            if nodes.is_empty() {
                "none registered".to_string()
            } else {
                nodes.join(", ")
            }
        ),
    )
    .ollama()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_in_order_over_hosts() {
        assert_eq!(split(5, 3), vec![0..2, 2..4, 4..5]);
        assert_eq!(split(2, 3), vec![0..1, 1..2]);
        assert_eq!(split(0, 3), vec![0..0]);
        assert_eq!(split(4, 1), vec![0..4]);
    }

    #[test]
    fn versions_compare_by_number() {
        let mut v = ["0.10.1", "0.9.6", "0.12.0"];
        v.sort_by_key(|x| release::key(x));
        assert_eq!(v, ["0.9.6", "0.10.1", "0.12.0"]);
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert_eq!(
            object(Ok(Bytes::from_static(b"  "))).unwrap_err().message,
            "missing request body"
        );
        assert!(object(Ok(Bytes::from_static(b"{nope")))
            .unwrap_err()
            .message
            .starts_with("invalid JSON"));
        assert!(object(Ok(Bytes::from_static(b"[1]"))).is_err());
        assert_eq!(
            model_of(&object(Ok(Bytes::from_static(br#"{"model":""}"#))).unwrap())
                .unwrap_err()
                .message,
            "model is required"
        );
    }
}
