//! A real llama.cpp `llama-server` behind a thin Ollama-compatible API, as a
//! LAN node that runs a small model with a small context would look: the
//! shell talks Ollama (`/api/tags`, `/api/ps`, `/api/show`, streamed
//! `/api/chat`); the adapter forwards chats to llama-server's
//! `/v1/chat/completions` and passes its answers — and its HTTP 400 "exceeds
//! the available context size" refusals — back in Ollama's shapes. Like an
//! Ollama of today (it reports `ADAPTER_VERSION`), it constrains a reply to
//! the request's `format`: a JSON Schema becomes llama-server's
//! `response_format` of type `json_schema` (a grammar built from the schema),
//! `"json"` a `json_object` (a grammar for any JSON object). `/api/ps`
//! reports the slot's context (`/props` `n_ctx`) and `/api/show` the model's
//! trained context (`/v1/models` `n_ctx_train`), as Ollama does.
//!
//! Test support only, shared by the integration tests (`llama.rs`) and
//! `examples/bench_answers.rs` (included there with `#[path]`); it uses no
//! code of the crate.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The Ollama release the adapter reports: one that takes a JSON Schema in
/// `format` (0.5.0 and later).
pub const ADAPTER_VERSION: &str = "0.12.6-llama-adapter";

/// Counts of what the adapter forwarded.
#[derive(Debug, Default)]
pub struct AdapterStats {
    pub chats: AtomicU64,
    /// Chats llama-server refused as too large for its context (HTTP 400).
    pub too_large: AtomicU64,
    /// Largest `num_ctx` a chat asked for (0 = none).
    pub max_num_ctx: AtomicU64,
    /// Chats whose `format` was a JSON Schema, and those that asked for `"json"`.
    pub schemas: AtomicU64,
    pub json_only: AtomicU64,
}

struct Upstream {
    base: String,
    model: String,
    http: reqwest::Client,
    stats: Arc<AdapterStats>,
    honour_format: Arc<AtomicBool>,
    legacy: Arc<AtomicBool>,
}

type Up = State<Arc<Upstream>>;

/// One llama-server process and the adapter in front of it; both end on drop.
pub struct LlamaNode {
    child: Child,
    /// The Ollama-compatible address the shell uses.
    pub url: String,
    pub stats: Arc<AdapterStats>,
    /// Constrain replies to the request's `format` (its JSON Schema, or any
    /// JSON object for `"json"`), as Ollama does (on by default). Off, the
    /// model writes as it likes, as behind Ollama-compatible servers that
    /// ignore `format`.
    pub honour_format: Arc<AtomicBool>,
    /// Behave as the adapter did before issue 22 (for the benchmark's
    /// "before"): report version 0.0.0 (so clients send `"json"`) and turn
    /// any `format` into a `json_object`.
    #[allow(dead_code)] // set by examples/bench_answers.rs only
    pub legacy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LlamaNode {
    /// Start `llama-server` on loopback with `ctx` tokens of context (one
    /// thread, so two fit on a small machine; a fixed sampling seed) and the adapter on `rt`,
    /// presenting the model as `model`. Waits until llama-server is ready.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        server: &Path,
        gguf: &Path,
        ctx: u32,
        model: &str,
        log: &Path,
    ) -> LlamaNode {
        let port = free_port();
        let out = std::fs::File::create(log).expect("llama-server log");
        let child = Command::new(server)
            .args(["-m"])
            .arg(gguf)
            // A fixed seed: the same prompt gets the same reply, run after run.
            .args(["-c", &ctx.to_string(), "-t", "1", "--seed", "7"])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("llama-server starts");
        let base = format!("http://127.0.0.1:{port}");
        // A fresh connection per request: llama-server closes one whose client
        // went away (a hedged copy given up), and a pooled one could be stale.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let ready = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if let Ok(r) = http.get(format!("{base}/health")).send().await {
                    if r.status().is_success() {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        assert!(
            ready,
            "llama-server on {base} never became ready; see {}",
            log.display()
        );
        let stats = Arc::new(AdapterStats::default());
        let honour_format = Arc::new(AtomicBool::new(true));
        let legacy = Arc::new(AtomicBool::new(false));
        let up = Arc::new(Upstream {
            base,
            model: model.to_string(),
            http,
            stats: stats.clone(),
            honour_format: honour_format.clone(),
            legacy: legacy.clone(),
        });
        let app = Router::new()
            .route("/", get(|| async { "Ollama is running" }))
            .route("/api/version", get(version))
            .route("/api/tags", get(tags))
            .route("/api/ps", get(ps))
            .route("/api/show", post(show))
            .route("/api/chat", post(chat))
            .with_state(up);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("adapter listens");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let task = rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LlamaNode {
            child,
            url: format!("http://{addr}"),
            stats,
            honour_format,
            legacy,
            task,
        }
    }
}

impl Drop for LlamaNode {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn upstream_json(up: &Upstream, path: &str) -> Option<Value> {
    let r = up
        .http
        .get(format!("{}{path}", up.base))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn version(State(up): Up) -> Response {
    let v = if up.legacy.load(Ordering::SeqCst) {
        "0.0.0-llama-adapter"
    } else {
        ADAPTER_VERSION
    };
    Json(json!({ "version": v })).into_response()
}

async fn tags(State(up): Up) -> Response {
    Json(json!({"models": [{
        "name": up.model, "model": up.model, "modified_at": "2026-01-01T00:00:00Z",
        "size": 0, "digest": "llama-adapter",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "135M"}
    }]}))
    .into_response()
}

async fn ps(State(up): Up) -> Response {
    let n_ctx = upstream_json(&up, "/props")
        .await
        .and_then(|p| p["default_generation_settings"]["n_ctx"].as_u64());
    Json(json!({"models": [{
        "name": up.model, "model": up.model, "size": 0, "size_vram": 0,
        "context_length": n_ctx, "expires_at": "2099-01-01T00:00:00Z"
    }]}))
    .into_response()
}

async fn show(State(up): Up) -> Response {
    let trained = upstream_json(&up, "/v1/models")
        .await
        .and_then(|m| m["data"][0]["meta"]["n_ctx_train"].as_u64());
    Json(json!({
        "modelfile": "", "parameters": "", "template": "",
        "details": {"format": "gguf", "family": "llama"},
        "model_info": {"general.architecture": "llama", "llama.context_length": trained}
    }))
    .into_response()
}

/// llama-server's `response_format` for an Ollama `format`: a JSON Schema
/// constrains decoding to it, `"json"` to any JSON object; anything else
/// (none, `""`) leaves the model free.
pub fn response_format(format: &Value) -> Option<Value> {
    if format.is_object() {
        Some(json!({"type": "json_schema", "json_schema": {"name": "reply", "schema": format}}))
    } else if format == "json" {
        Some(json!({"type": "json_object"}))
    } else {
        None
    }
}

fn ollama_error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn line(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// The final Ollama line from llama-server's last event (timings, reason).
fn done_line(model: &str, last: &Value, reason: &str) -> Value {
    let t = &last["timings"];
    let ns = |ms: &Value| (ms.as_f64().unwrap_or(0.0) * 1e6) as u64;
    json!({
        "model": model, "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": reason,
        "prompt_eval_count": t["prompt_n"].as_u64().or(last["usage"]["prompt_tokens"].as_u64()),
        "prompt_eval_duration": ns(&t["prompt_ms"]),
        "eval_count": t["predicted_n"].as_u64().or(last["usage"]["completion_tokens"].as_u64()),
        "eval_duration": ns(&t["predicted_ms"]),
        "total_duration": ns(&t["prompt_ms"]) + ns(&t["predicted_ms"]),
        "load_duration": 0
    })
}

async fn chat(State(up): Up, Json(req): Json<Value>) -> Response {
    up.stats.chats.fetch_add(1, Ordering::SeqCst);
    let options = &req["options"];
    if let Some(n) = options["num_ctx"].as_u64() {
        up.stats.max_num_ctx.fetch_max(n, Ordering::SeqCst);
    }
    let mut body = json!({
        "model": up.model,
        "messages": req["messages"],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(n) = options["num_predict"].as_i64().filter(|n| *n > 0) {
        body["max_tokens"] = json!(n);
    }
    for k in ["temperature", "top_p", "top_k", "seed"] {
        if !options[k].is_null() {
            body[k] = options[k].clone();
        }
    }
    if req["format"].is_object() {
        up.stats.schemas.fetch_add(1, Ordering::SeqCst);
    } else if req["format"] == "json" {
        up.stats.json_only.fetch_add(1, Ordering::SeqCst);
    }
    if up.honour_format.load(Ordering::SeqCst) {
        let format = if up.legacy.load(Ordering::SeqCst) && req["format"].is_object() {
            json!("json")
        } else {
            req["format"].clone()
        };
        if let Some(rf) = response_format(&format) {
            body["response_format"] = rf;
        }
    }
    let resp = match up
        .http
        .post(format!("{}/v1/chat/completions", up.base))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return ollama_error(StatusCode::BAD_GATEWAY, format!("llama-server: {e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(text);
        if status == StatusCode::BAD_REQUEST && message.contains("context size") {
            up.stats.too_large.fetch_add(1, Ordering::SeqCst);
        }
        let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return ollama_error(code, message);
    }
    let model = up.model.clone();
    let stream = req["stream"].as_bool().unwrap_or(true);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut events = resp.bytes_stream();
        let mut pending = String::new();
        let mut last = Value::Null;
        let mut reason = "stop".to_string();
        let mut whole = String::new();
        while let Some(chunk) = events.next().await {
            let Ok(chunk) = chunk else {
                let _ = tx
                    .send(Err(std::io::Error::other("llama-server stream broke")))
                    .await;
                return;
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = pending.find('\n') {
                let l: String = pending.drain(..=nl).collect();
                let Some(data) = l.trim().strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(r) = v["choices"][0]["finish_reason"].as_str() {
                    reason = r.to_string();
                }
                let piece = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                if !piece.is_empty() {
                    whole.push_str(piece);
                    if stream {
                        let l = line(json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": piece}, "done": false}));
                        if tx.send(Ok(l)).await.is_err() {
                            return;
                        }
                    }
                }
                if !v["timings"].is_null() || !v["usage"].is_null() {
                    last = v;
                }
            }
        }
        let mut fin = done_line(&model, &last, &reason);
        if !stream {
            fin["message"]["content"] = json!(whole);
        }
        let _ = tx.send(Ok(line(fin))).await;
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .expect("response")
}
