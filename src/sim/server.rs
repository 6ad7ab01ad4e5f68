//! A simulated Ollama host: a real HTTP server speaking Ollama's API on its own
//! listeners, with token pacing, per-host contention, faults and counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use regex::Regex;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use super::config::{Fault, SimConfig};
use super::text;
use crate::ollama::types::same_model;

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
        self.embeds.spans.lock().unwrap().clone()
    }

    pub fn config(&self) -> SimConfig {
        self.config.lock().unwrap().clone()
    }

    pub fn set_config(&self, c: SimConfig) {
        *self.config.lock().unwrap() = c;
    }

    pub fn set_fault(&self, fault: Fault, after: u64) {
        let mut c = self.config.lock().unwrap();
        c.fault = fault;
        c.fault_after = after;
    }

    /// The host goes away: no new connections, open ones break.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for t in self.tasks.lock().unwrap().drain(..) {
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
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
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
            let mut loaded = self.loaded.lock().unwrap();
            if !loaded.iter().any(|m| m == model) {
                loaded.push(model.to_string());
            }
        }
        let mut ctx = self.loaded_ctx.lock().unwrap();
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
        for t in self.tasks.lock().unwrap().drain(..) {
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

/// A response whose body fails at once: the client sees a broken connection.
fn broken() -> Response {
    let s = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated host is gone"))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(s))
        .unwrap()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
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
    enter(&h).unwrap_or_else(|| Json(json!({"version": "0.0.0-simulated"})).into_response())
}

fn model_size(name: &str) -> u64 {
    1_000_000_000 + text::hash(&[name]) % 1_000_000_000
}

async fn tags(State(h): Host) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let models: Vec<Value> = h
        .config()
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z",
                "size": model_size(m), "digest": format!("{:016x}", text::hash(&[m])),
                "details": {"format": "gguf", "family": "simulated", "parameter_size": "1B",
                            "quantization_level": "Q4_0"}
            })
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}

async fn ps(State(h): Host) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let frac = h.config().vram_fraction.clamp(0.0, 1.0);
    let contexts = h.loaded_ctx.lock().unwrap().clone();
    let models: Vec<Value> = h
        .loaded
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let size = model_size(m);
            let ctx = contexts.get(m).copied().unwrap_or(DEFAULT_CTX);
            json!({"name": m, "model": m, "size": size, "size_vram": (size as f64 * frac) as u64,
                   "context_length": ctx, "expires_at": "2099-01-01T00:00:00Z"})
        })
        .collect();
    Json(json!({ "models": models })).into_response()
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
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let name = req
        .get("model")
        .or_else(|| req.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    match find_model(&h, name) {
        None => error(StatusCode::NOT_FOUND, format!("model '{name}' not found")),
        Some(m) => {
            let mut info = json!({"general.architecture": "simulated"});
            if let Some(n) = h.config().trained() {
                info["simulated.context_length"] = json!(n);
            }
            Json(json!({
                "modelfile": format!("FROM {m}"), "parameters": "", "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "simulated", "parameter_size": "1B"},
                "model_info": info
            }))
            .into_response()
        }
    }
}

async fn stats(State(h): Host) -> Response {
    Json(h.stats()).into_response()
}

async fn get_config(State(h): Host) -> Response {
    Json(h.config()).into_response()
}

/// Change the host's behaviour at run time (tests use this across processes).
async fn set_config(State(h): Host, Json(patch): Json<Value>) -> Response {
    let mut cur = serde_json::to_value(h.config()).unwrap();
    if let (Some(cur), Some(patch)) = (cur.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            cur.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value::<SimConfig>(cur) {
        Ok(c) => {
            h.set_config(c.clone());
            Json(c).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

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

/// The prompt the reply is about, and the text that describes the reply's fields.
fn prompt_parts(kind: Kind, req: &Value) -> (String, String) {
    match kind {
        Kind::Generate => (
            req["prompt"].as_str().unwrap_or("").to_string(),
            req["system"].as_str().unwrap_or("").to_string(),
        ),
        Kind::Chat => {
            let msgs = req["messages"].as_array().cloned().unwrap_or_default();
            let last_user = msgs
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            let system = msgs
                .iter()
                .filter(|m| m["role"] == "system")
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            (last_user, system)
        }
    }
}

fn field_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#""([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*(\[|"|[0-9.]+|\{|true|false)"#).unwrap()
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

fn line(kind: Kind, model: &str, piece: &str) -> Bytes {
    let v = match kind {
        Kind::Generate => json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                 "response": piece, "done": false}),
        Kind::Chat => json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
                             "message": {"role": "assistant", "content": piece}, "done": false}),
    };
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn final_value(
    kind: Kind,
    model: &str,
    text: Option<&str>,
    prompt_tokens: u64,
    eval: usize,
    elapsed: Duration,
    done_reason: &str,
) -> Value {
    let ns = elapsed.as_nanos() as u64;
    let mut v = json!({
        "model": model, "created_at": "2026-01-01T00:00:00Z", "done": true, "done_reason": done_reason,
        "total_duration": ns, "load_duration": 0, "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 0, "eval_count": eval, "eval_duration": ns.max(1)
    });
    let t = text.unwrap_or("");
    match kind {
        Kind::Generate => v["response"] = json!(t),
        Kind::Chat => v["message"] = json!({"role": "assistant", "content": t}),
    }
    v
}

async fn inference(h: Arc<SimHost>, kind: Kind, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let n = h.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let cfg = h.config();
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON body"),
    };
    let (prompt, schema_text) = prompt_parts(kind, &req);
    let fault = cfg.fault_for(n, &prompt);
    if fault == Fault::Die {
        h.kill();
        return broken();
    }
    if fault == Fault::Reset {
        return broken();
    }
    let requested = req["model"].as_str().unwrap_or("").to_string();
    if requested.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(model) = find_model(&h, &requested) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("model '{requested}' not found"),
        );
    };
    if fault == Fault::Http500 {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated internal server error",
        );
    }
    let guard = InFlight::new(&h);
    if fault == Fault::Hang {
        let _guard = guard;
        return std::future::pending::<Response>().await;
    }
    let options = &req["options"];
    let loaded_ctx = h.load(&model, options["num_ctx"].as_u64(), cfg.trained());
    let prompt_tokens = SimConfig::prompt_tokens(&[prompt.as_str(), schema_text.as_str()]);
    // Tokens the reply may have: `num_predict`, and what is left of the context.
    let mut room = options["num_predict"]
        .as_u64()
        .filter(|n| *n > 0)
        .unwrap_or(u64::MAX);
    if cfg.context_length.is_some() {
        if prompt_tokens >= loaded_ctx {
            h.too_large.fetch_add(1, Ordering::SeqCst);
            return error(
                StatusCode::BAD_REQUEST,
                format!("request ({prompt_tokens} tokens) exceeds the available context size ({loaded_ctx} tokens), try increasing it"),
            );
        }
        room = room.min(loaded_ctx - prompt_tokens - 1);
    }
    let asks_json =
        matches!(&req["format"], Value::String(s) if s == "json") || req["format"].is_object();
    let wants_json = asks_json && !cfg.plain_replies;
    let echo = cfg.echo_prompt.then_some(prompt.as_str());
    let mut reply = if wants_json {
        let fields_from = if field_regex().is_match(&schema_text) {
            &schema_text
        } else {
            &prompt
        };
        json_reply(&model, &prompt, fields_from, cfg.reply_words, echo)
    } else {
        let prose = text::prose(&model, &prompt, cfg.reply_words);
        match echo {
            Some(e) => format!("{e}\n\n{prose}"),
            None => prose,
        }
    };
    if wants_json && cfg.broken_json {
        // Stop before the end (its last quarter, at most 80 bytes), as a length limit would.
        let mut at = reply.len() - (reply.len() / 4).min(80);
        while !reply.is_char_boundary(at) {
            at -= 1;
        }
        reply.truncate(at);
    }
    let mut tokens = text::tokens(&reply);
    let done_reason = if tokens.len() as u64 > room {
        tokens.truncate(room as usize);
        reply = tokens.concat();
        "length"
    } else {
        "stop"
    };
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(true);
    let started = Instant::now();

    if !stream {
        pace(&h, &cfg, tokens.len()).await;
        let v = final_value(
            kind,
            &model,
            Some(&reply),
            prompt_tokens,
            tokens.len(),
            started.elapsed(),
            done_reason,
        );
        h.completed.fetch_add(1, Ordering::SeqCst);
        drop(guard);
        return match fault {
            Fault::Stall => std::future::pending::<Response>().await,
            Fault::Drop => broken(),
            Fault::ErrorLine => error(StatusCode::INTERNAL_SERVER_ERROR, "simulated failure"),
            _ => Json(v).into_response(),
        };
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let host = h.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let half = tokens.len() / 2;
        let mut clock = tokio::time::Instant::now();
        let mut first = true;
        for (i, tok) in tokens.iter().enumerate() {
            if i == half && fault == Fault::ErrorLine {
                let _ = tx
                    .send(Ok(Bytes::from(
                        "{\"error\":\"simulated failure in the middle of the stream\"}\n",
                    )))
                    .await;
                return;
            }
            if i == half && fault == Fault::Drop {
                let _ = tx
                    .send(Err(std::io::Error::other("simulated connection drop")))
                    .await;
                return;
            }
            if i == half && fault == Fault::Stall {
                // Silent from here on, the connection left open until the client goes.
                tx.closed().await;
                return;
            }
            let factor = cfg.contention(host.in_flight.load(Ordering::SeqCst));
            let mut wait = cfg.token_delay().mul_f64(factor);
            if first {
                wait += Duration::from_millis(cfg.ttft_ms).mul_f64(factor);
                first = false;
            }
            if !wait.is_zero() {
                clock += wait;
                tokio::time::sleep_until(clock).await;
            }
            if tx.send(Ok(line(kind, &model, tok))).await.is_err() {
                return; // the client went away
            }
        }
        let fin = final_value(
            kind,
            &model,
            None,
            prompt_tokens,
            tokens.len(),
            started.elapsed(),
            done_reason,
        );
        let mut s = fin.to_string();
        s.push('\n');
        if tx.send(Ok(Bytes::from(s))).await.is_ok() {
            host.completed.fetch_add(1, Ordering::SeqCst);
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap()
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
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON body"),
    };
    let requested = req["model"].as_str().unwrap_or("");
    let Some(model) = find_model(&h, requested) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("model \"{requested}\" not found, try pulling it first"),
        );
    };
    let inputs: Vec<String> = match (legacy, &req[if legacy { "prompt" } else { "input" }]) {
        (_, Value::String(s)) => vec![s.clone()],
        (false, Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        (false, Value::Null) => Vec::new(),
        _ => return error(StatusCode::BAD_REQUEST, "invalid input type"),
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
    h.embeds
        .spans
        .lock()
        .unwrap()
        .push((started, Instant::now()));
    let ns = started.elapsed().as_nanos() as u64;
    if legacy {
        let v = vectors.into_iter().next().unwrap_or_default();
        return Json(json!({ "embedding": v })).into_response();
    }
    Json(json!({
        "model": model, "embeddings": vectors, "total_duration": ns,
        "load_duration": 0, "prompt_eval_count": words
    }))
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
