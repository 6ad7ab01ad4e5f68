//! A simulated Ollama host: a real HTTP server speaking Ollama's API on its own
//! listeners, with token pacing, per-host contention, faults and counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use super::config::{Fault, SimConfig};
use super::text;
use crate::ollama::types::{
    asks_json, same_model, ChatRequest, EmbedInput, EmbedRequest, EmbedResponse, EmbeddingsRequest,
    EmbeddingsResponse, ErrorResponse, GenerateRequest, LoadedModel, Message, ModelDetails,
    ModelInfo, Options, PsResponse, ShowRequest, ShowResponse, StreamChunk, TagsResponse,
    VersionResponse,
};

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
    http_requests: AtomicU64,
    requests: AtomicU64,
    completed: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    dead: AtomicBool,
    loaded: Mutex<Vec<String>>,
    /// The context each loaded model was loaded with.
    loaded_ctx: Mutex<std::collections::HashMap<String, u64>>,
    reloads: AtomicU64,
    too_large: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    embeds: EmbedLog,
}

/// A lock on part of the host's state. A panic while one was held (a bug in
/// the simulator) leaves plain data behind, still fit to use, so the host
/// carries on rather than fail every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<SimHost>);

impl InFlight {
    fn new(host: &Arc<SimHost>) -> InFlight {
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
        let app = router(self.clone());
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
    fn load(&self, model: &str, num_ctx: Option<u64>, trained: Option<u64>) -> u64 {
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
const DEFAULT_CTX: u64 = 4096;

impl Drop for SimHost {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

type Host = State<Arc<SimHost>>;

fn router(host: Arc<SimHost>) -> Router {
    Router::new()
        .route("/", get(root).head(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .route("/sim/stats", get(stats))
        .route("/sim/config", get(get_config).post(set_config))
        .with_state(host)
}

/// A 200 NDJSON response whose body is `body`.
fn ndjson_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// A response whose body fails at once: the client sees a broken connection.
fn broken() -> Response {
    let s = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated host is gone"))
    });
    ndjson_response(Body::from_stream(s))
}

/// Ollama's error reply: `status` with `{"error": msg}`.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorResponse { error: msg.into() })).into_response()
}

/// Why a request gets no reply: an error Ollama would send, or a fault that
/// breaks the connection.
enum Refusal {
    /// `{"error": message}` with this status.
    Error(StatusCode, String),
    /// The connection breaks (a reset, or the host died).
    Broken,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::Error(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Error(status, message) => error(status, message),
            Refusal::Broken => broken(),
        }
    }
}

/// A request body read as `T`, or the HTTP 400 Ollama answers a missing or
/// malformed body with (unknown fields are ignored, as Ollama does).
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad_request("missing request body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request(format!("invalid JSON body: {e}")))
}

/// One NDJSON line.
fn ndjson_line<T: Serialize>(v: &T) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_else(|e| {
        // Only a bug could make these structs fail to serialise; say so in
        // Ollama's words rather than panic in the middle of a stream.
        let error = format!("the simulator cannot write its reply: {e}");
        serde_json::to_vec(&ErrorResponse { error }).unwrap_or_default()
    });
    out.push(b'\n');
    Bytes::from(out)
}

/// Count the request; a dead host answers nothing useful.
fn enter(h: &Arc<SimHost>) -> Option<Response> {
    h.http_requests.fetch_add(1, Ordering::SeqCst);
    h.is_dead().then(broken)
}

async fn root(State(h): Host) -> Response {
    enter(&h).unwrap_or_else(|| "Ollama is running".into_response())
}

async fn version(State(h): Host) -> Response {
    enter(&h).unwrap_or_else(|| {
        Json(VersionResponse {
            version: Some("0.0.0-simulated".into()),
        })
        .into_response()
    })
}

fn model_size(name: &str) -> u64 {
    1_000_000_000 + text::hash(&[name]) % 1_000_000_000
}

/// What `/api/tags` and `/api/show` say of every simulated model.
fn model_details(quantization: bool) -> ModelDetails {
    ModelDetails {
        format: Some("gguf".into()),
        family: Some("simulated".into()),
        parameter_size: Some("1B".into()),
        quantization_level: quantization.then(|| "Q4_0".into()),
        other: Map::new(),
    }
}

async fn tags(State(h): Host) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let models = h
        .config()
        .models
        .iter()
        .map(|m| ModelInfo {
            name: m.clone(),
            model: Some(m.clone()),
            modified_at: Some(CREATED_AT.into()),
            size: model_size(m),
            digest: Some(format!("{:016x}", text::hash(&[m]))),
            details: Some(model_details(true)),
        })
        .collect();
    Json(TagsResponse { models }).into_response()
}

async fn ps(State(h): Host) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let frac = h.config().vram_fraction.clamp(0.0, 1.0);
    let contexts = lock(&h.loaded_ctx).clone();
    let models = lock(&h.loaded)
        .iter()
        .map(|m| {
            let size = model_size(m);
            LoadedModel {
                name: m.clone(),
                model: Some(m.clone()),
                size,
                size_vram: (size as f64 * frac) as u64,
                context_length: Some(contexts.get(m).copied().unwrap_or(DEFAULT_CTX)),
                expires_at: Some("2099-01-01T00:00:00Z".into()),
            }
        })
        .collect();
    Json(PsResponse { models }).into_response()
}

fn find_model(h: &SimHost, requested: &str) -> Option<String> {
    h.config()
        .models
        .into_iter()
        .find(|m| same_model(m, requested))
}

async fn show(State(h): Host, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let req: ShowRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let name = req.model();
    let Some(m) = find_model(&h, name) else {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), "simulated".into());
    if let Some(n) = h.config().trained() {
        model_info.insert("simulated.context_length".into(), n.into());
    }
    Json(ShowResponse {
        modelfile: format!("FROM {m}"),
        parameters: String::new(),
        template: "{{ .Prompt }}".into(),
        details: Some(model_details(false)),
        model_info,
    })
    .into_response()
}

async fn stats(State(h): Host) -> Response {
    Json(h.stats()).into_response()
}

async fn get_config(State(h): Host) -> Response {
    Json(h.config()).into_response()
}

/// Change the host's behaviour at run time (tests use this across processes):
/// the body is an object of the `SimConfig` fields to change.
async fn set_config(State(h): Host, body: Bytes) -> Response {
    let patch: Map<String, Value> = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let mut cur = match serde_json::to_value(h.config()) {
        Ok(Value::Object(m)) => m,
        // Only a bug in `SimConfig`'s serialisation could land here.
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the config"),
    };
    cur.extend(patch);
    match serde_json::from_value::<SimConfig>(Value::Object(cur)) {
        Ok(c) => {
            h.set_config(c.clone());
            Json(c).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The `created_at` of every reply line.
const CREATED_AT: &str = "2026-01-01T00:00:00Z";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Generate,
    Chat,
}

async fn generate(State(h): Host, body: Bytes) -> Response {
    inference(h, Kind::Generate, body).await
}

async fn chat(State(h): Host, body: Bytes) -> Response {
    inference(h, Kind::Chat, body).await
}

/// An inference request as the simulator reads it, from either endpoint.
struct Ask {
    kind: Kind,
    model: String,
    /// What the reply is about: the prompt, or the last user message.
    prompt: String,
    /// The text that describes the reply's fields: the system prompt(s).
    schema_text: String,
    stream: bool,
    asks_json: bool,
    options: Options,
}

impl Ask {
    /// The request in `body`, or the HTTP 400 a malformed one gets.
    fn read(kind: Kind, body: &Bytes) -> Result<Ask, Refusal> {
        let options = |o: Option<&Value>| {
            Options::read(o).map_err(|e| Refusal::bad_request(format!("invalid options: {e}")))
        };
        Ok(match kind {
            Kind::Generate => {
                let r: GenerateRequest = parse(body)?;
                Ask {
                    kind,
                    options: options(r.options.as_ref())?,
                    asks_json: asks_json(r.format.as_ref()),
                    stream: r.stream,
                    schema_text: r.system.unwrap_or_default(),
                    prompt: r.prompt,
                    model: r.model,
                }
            }
            Kind::Chat => {
                let r: ChatRequest = parse(body)?;
                let prompt = r
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                let schema_text = r
                    .messages
                    .iter()
                    .filter(|m| m.role == "system")
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Ask {
                    kind,
                    options: options(r.options.as_ref())?,
                    asks_json: asks_json(r.format.as_ref()),
                    stream: r.stream,
                    schema_text,
                    prompt,
                    model: r.model,
                }
            }
        })
    }
}

/// `/api/generate` and `/api/chat`: read the request, let the faults that
/// strike before a reply strike, find the model, then reply.
async fn inference(h: Arc<SimHost>, kind: Kind, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let n = h.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let cfg = h.config();
    let ask = match Ask::read(kind, &body) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let fault = cfg.fault_for(n, &ask.prompt);
    match admit(&h, &ask, fault) {
        Ok(model) => respond(h, cfg, ask, model, fault).await,
        Err(r) => r.into_response(),
    }
}

/// The installed model the request names, unless a fault that strikes before
/// any reply (death, a reset, an HTTP 500) or a missing model answers first.
fn admit(h: &SimHost, ask: &Ask, fault: Fault) -> Result<String, Refusal> {
    match fault {
        Fault::Die => {
            h.kill();
            return Err(Refusal::Broken);
        }
        Fault::Reset => return Err(Refusal::Broken),
        _ => {}
    }
    if ask.model.is_empty() {
        return Err(Refusal::bad_request("model is required"));
    }
    let Some(model) = find_model(h, &ask.model) else {
        return Err(Refusal::Error(
            StatusCode::NOT_FOUND,
            format!("model '{}' not found", ask.model),
        ));
    };
    if fault == Fault::Http500 {
        return Err(Refusal::Error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated internal server error".into(),
        ));
    }
    Ok(model)
}

/// Work on an admitted request: load the model, write the reply, send it
/// whole or as a stream (a hang never answers).
async fn respond(
    h: Arc<SimHost>,
    cfg: SimConfig,
    ask: Ask,
    model: String,
    fault: Fault,
) -> Response {
    let guard = InFlight::new(&h);
    if fault == Fault::Hang {
        let _guard = guard;
        return std::future::pending::<Response>().await;
    }
    let reply = match Reply::compose(&h, &cfg, &ask, &model) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let out = Out {
        kind: ask.kind,
        model,
        reply,
        fault,
        started: Instant::now(),
    };
    if ask.stream {
        stream_reply(h, cfg, out, guard)
    } else {
        whole_reply(&h, &cfg, out, guard).await
    }
}

/// A reply's text, cut to the room it has.
struct Reply {
    text: String,
    tokens: Vec<String>,
    prompt_tokens: u64,
    done_reason: &'static str,
}

impl Reply {
    /// Load the model with the context asked for, check the prompt fits, write
    /// the text and cut it where `num_predict` or the context ends.
    fn compose(h: &SimHost, cfg: &SimConfig, ask: &Ask, model: &str) -> Result<Reply, Refusal> {
        let loaded_ctx = h.load(model, ask.options.num_ctx, cfg.trained());
        let prompt_tokens = SimConfig::prompt_tokens(&[&ask.prompt, &ask.schema_text]);
        let room = room(h, cfg, ask.options.num_predict, loaded_ctx, prompt_tokens)?;
        let text = reply_text(cfg, ask, model);
        let mut tokens = text::tokens(&text);
        let fits = usize::try_from(room).is_ok_and(|room| tokens.len() <= room);
        Ok(if fits {
            Reply {
                text,
                tokens,
                prompt_tokens,
                done_reason: "stop",
            }
        } else {
            tokens.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            Reply {
                text: tokens.concat(),
                tokens,
                prompt_tokens,
                done_reason: "length",
            }
        })
    }
}

/// Tokens the reply may have: `num_predict`, and what is left of the context.
/// A prompt that does not fit gets the HTTP 400 llama.cpp-backed Ollama sends.
fn room(
    h: &SimHost,
    cfg: &SimConfig,
    num_predict: Option<i64>,
    loaded_ctx: u64,
    prompt_tokens: u64,
) -> Result<u64, Refusal> {
    let room = num_predict
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(u64::MAX);
    if cfg.context_length.is_none() {
        return Ok(room);
    }
    if prompt_tokens >= loaded_ctx {
        h.too_large.fetch_add(1, Ordering::SeqCst);
        return Err(Refusal::bad_request(format!(
            "request ({prompt_tokens} tokens) exceeds the available context size ({loaded_ctx} tokens), try increasing it"
        )));
    }
    Ok(room.min(loaded_ctx - prompt_tokens - 1))
}

/// The whole text of the reply: prose, or JSON when asked (and the host does
/// not answer in plain prose), cut short when the host breaks its JSON.
fn reply_text(cfg: &SimConfig, ask: &Ask, model: &str) -> String {
    let echo = cfg.echo_prompt.then_some(ask.prompt.as_str());
    if !ask.asks_json || cfg.plain_replies {
        let prose = text::prose(model, &ask.prompt, cfg.reply_words);
        return match echo {
            Some(e) => format!("{e}\n\n{prose}"),
            None => prose,
        };
    }
    let fields_from = if field_regex().is_match(&ask.schema_text) {
        &ask.schema_text
    } else {
        &ask.prompt
    };
    let mut reply = json_reply(model, &ask.prompt, fields_from, cfg.reply_words, echo);
    if cfg.broken_json {
        // Stop before the end (its last quarter, at most 80 bytes), as a length limit would.
        let mut at = reply.len() - (reply.len() / 4).min(80);
        while !reply.is_char_boundary(at) {
            at -= 1;
        }
        reply.truncate(at);
    }
    reply
}

fn field_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#""([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*(\[|"|[0-9.]+|\{|true|false)"#)
            .expect("the field pattern is a valid regex")
    })
}

/// A JSON reply whose fields follow the example object found in the prompt;
/// `echo` goes before the main text.
fn json_reply(
    model: &str,
    prompt: &str,
    schema_text: &str,
    words: usize,
    echo: Option<&str>,
) -> String {
    let main = || match echo {
        Some(e) => format!("{e}\n\n{}", text::prose(model, prompt, words)),
        None => text::prose(model, prompt, words),
    };
    let mut rng = text::Rng::new(text::hash(&[model, prompt, "json"]));
    let mut obj = Map::new();
    let mut main_done = false;
    for cap in field_regex().captures_iter(schema_text) {
        let name = cap[1].to_string();
        if obj.contains_key(&name) {
            continue;
        }
        let v = match &cap[2] {
            "[" => Value::Array(
                (0..3)
                    .map(|_| Value::String(text::sentence(&mut rng)))
                    .collect(),
            ),
            "\"" if !main_done => {
                main_done = true;
                Value::String(main())
            }
            "\"" => Value::String(text::sentence(&mut rng)),
            "{" => Value::Object(Map::new()),
            "true" | "false" => Value::Bool(true),
            _ => json!(0.6 + (rng.next_u64() % 35) as f64 / 100.0),
        };
        obj.insert(name, v);
    }
    if obj.is_empty() {
        obj.insert("response".into(), Value::String(main()));
    }
    Value::Object(obj).to_string()
}

/// A reply on its way out.
struct Out {
    kind: Kind,
    model: String,
    reply: Reply,
    fault: Fault,
    started: Instant,
}

impl Out {
    /// `text` as generate's `response` or chat's assistant `message`.
    fn chunk(&self, text: &str) -> StreamChunk {
        let (response, message) = match self.kind {
            Kind::Generate => (Some(text.to_string()), None),
            Kind::Chat => (None, Some(Message::assistant(text))),
        };
        StreamChunk {
            model: Some(self.model.clone()),
            created_at: Some(CREATED_AT.into()),
            response,
            message,
            ..StreamChunk::default()
        }
    }

    /// The last line (or the whole non-streamed reply), with the counts.
    fn last(&self, text: &str) -> StreamChunk {
        let ns = self.started.elapsed().as_nanos() as u64;
        StreamChunk {
            done: true,
            done_reason: Some(self.reply.done_reason.into()),
            total_duration: Some(ns),
            load_duration: Some(0),
            prompt_eval_count: Some(self.reply.prompt_tokens),
            prompt_eval_duration: Some(0),
            eval_count: Some(self.reply.tokens.len() as u64),
            eval_duration: Some(ns.max(1)),
            ..self.chunk(text)
        }
    }
}

/// `"stream": false`: the whole reply once it would have been generated (a
/// fault shows as a stall, a dropped connection or an HTTP 500).
async fn whole_reply(h: &SimHost, cfg: &SimConfig, out: Out, guard: InFlight) -> Response {
    pace(h, cfg, out.reply.tokens.len()).await;
    let last = out.last(&out.reply.text);
    h.completed.fetch_add(1, Ordering::SeqCst);
    drop(guard);
    match out.fault {
        Fault::Stall => std::future::pending::<Response>().await,
        Fault::Drop => broken(),
        Fault::ErrorLine => error(StatusCode::INTERNAL_SERVER_ERROR, "simulated failure"),
        _ => Json(last).into_response(),
    }
}

/// A streamed reply: one NDJSON line per token, paced, then the last line.
fn stream_reply(h: Arc<SimHost>, cfg: SimConfig, out: Out, guard: InFlight) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    tokio::spawn(async move {
        let _guard = guard;
        if send_tokens(&h, &cfg, &out, &tx).await
            && tx.send(Ok(ndjson_line(&out.last("")))).await.is_ok()
        {
            h.completed.fetch_add(1, Ordering::SeqCst);
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    ndjson_response(Body::from_stream(body))
}

/// Send the reply's tokens at the host's pace; false when the stream ended
/// early (a fault halfway, or the client went away).
async fn send_tokens(
    h: &SimHost,
    cfg: &SimConfig,
    out: &Out,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> bool {
    let tokens = &out.reply.tokens;
    let half = tokens.len() / 2;
    let mut clock = tokio::time::Instant::now();
    for (i, tok) in tokens.iter().enumerate() {
        if i == half {
            match out.fault {
                Fault::ErrorLine => {
                    let error = "simulated failure in the middle of the stream".to_string();
                    let _ = tx.send(Ok(ndjson_line(&ErrorResponse { error }))).await;
                    return false;
                }
                Fault::Drop => {
                    let _ = tx
                        .send(Err(std::io::Error::other("simulated connection drop")))
                        .await;
                    return false;
                }
                Fault::Stall => {
                    // Silent from here on, the connection left open until the client goes.
                    tx.closed().await;
                    return false;
                }
                _ => {}
            }
        }
        let factor = cfg.contention(h.in_flight.load(Ordering::SeqCst));
        let mut wait = cfg.token_delay().mul_f64(factor);
        if i == 0 {
            wait += Duration::from_millis(cfg.ttft_ms).mul_f64(factor);
        }
        if !wait.is_zero() {
            clock += wait;
            tokio::time::sleep_until(clock).await;
        }
        if tx.send(Ok(ndjson_line(&out.chunk(tok)))).await.is_err() {
            return false; // the client went away
        }
    }
    true
}

/// Wait as long as producing `count` tokens takes on this host right now.
async fn pace(h: &SimHost, cfg: &SimConfig, count: usize) {
    let mut clock = tokio::time::Instant::now();
    let mut total = Duration::from_millis(cfg.ttft_ms);
    for _ in 0..count {
        let factor = cfg.contention(h.in_flight.load(Ordering::SeqCst));
        total += cfg.token_delay().mul_f64(factor);
    }
    if !total.is_zero() {
        clock += total;
        tokio::time::sleep_until(clock).await;
    }
}

/// Counters of embedding requests.
#[derive(Default)]
struct EmbedLog {
    requests: AtomicU64,
    inputs: AtomicU64,
    spans: Mutex<Vec<(Instant, Instant)>>,
}

async fn embed(State(h): Host, body: Bytes) -> Response {
    embedding(h, body, false).await
}

async fn embeddings(State(h): Host, body: Bytes) -> Response {
    embedding(h, body, true).await
}

/// The model an embedding request names and its inputs (`None`: the legacy
/// endpoint without a `prompt`).
fn read_embedding(body: &Bytes, legacy: bool) -> Result<(String, Option<Vec<String>>), Refusal> {
    if legacy {
        let r: EmbeddingsRequest = parse(body)?;
        Ok((r.model, r.prompt.map(|p| vec![p])))
    } else {
        let r: EmbedRequest = parse(body)?;
        let inputs = r.input.map(EmbedInput::into_texts).unwrap_or_default();
        Ok((r.model, Some(inputs)))
    }
}

/// `/api/embed` (`input`: a string or a list) or, with `legacy`, the older
/// `/api/embeddings` (`prompt`). Paced like prompt processing: `ttft_ms` plus
/// one token time per 16 input words, slowed by contention like inference.
async fn embedding(h: Arc<SimHost>, body: Bytes, legacy: bool) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let started = Instant::now();
    let n = h.embeds.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let cfg = h.config();
    let (requested, inputs) = match read_embedding(&body, legacy) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let Some(model) = find_model(&h, &requested) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("model \"{requested}\" not found, try pulling it first"),
        );
    };
    let Some(inputs) = inputs else {
        return error(StatusCode::BAD_REQUEST, "invalid input type");
    };
    h.embeds
        .inputs
        .fetch_add(inputs.len() as u64, Ordering::SeqCst);
    // An embedding reply is one piece: a reset breaks it before it starts, a
    // stall is a reply that never comes, an error line is an error status.
    let fault = cfg.fault_for(n, &inputs.join("\n"));
    match fault {
        Fault::Die => {
            h.kill();
            return broken();
        }
        Fault::Reset => return broken(),
        Fault::Http500 | Fault::ErrorLine => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated internal server error",
            )
        }
        _ => {}
    }
    let guard = InFlight::new(&h);
    if matches!(fault, Fault::Hang | Fault::Stall) {
        let _guard = guard;
        return std::future::pending::<Response>().await;
    }
    let words: usize = inputs.iter().map(|s| s.split_whitespace().count()).sum();
    pace(&h, &cfg, words.div_ceil(16)).await;
    let vectors: Vec<Vec<f32>> = inputs
        .iter()
        .map(|s| super::embed::embed(s, cfg.embed_dims))
        .collect();
    drop(guard);
    if fault == Fault::Drop {
        return broken();
    }
    lock(&h.embeds.spans).push((started, Instant::now()));
    let ns = started.elapsed().as_nanos() as u64;
    if legacy {
        let embedding = vectors.into_iter().next().unwrap_or_default();
        return Json(EmbeddingsResponse { embedding }).into_response();
    }
    Json(EmbedResponse {
        model: Some(model),
        embeddings: vectors,
        total_duration: Some(ns),
        load_duration: Some(0),
        prompt_eval_count: Some(words as u64),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reply_follows_the_example_in_the_prompt() {
        let schema = r#"Reply with {"context": "<text>", "key_facts": ["<fact>"], "score": 0.5}"#;
        let v: Value =
            serde_json::from_str(&json_reply("m", "What is a tide", schema, 30, None)).unwrap();
        assert!(v["context"].as_str().unwrap().starts_with("What is a tide"));
        assert_eq!(v["key_facts"].as_array().unwrap().len(), 3);
        assert!(v["score"].is_number());
    }
}
