//! A simulated host's HTTP API: Ollama's routes (`/`, `/api/version`,
//! `/api/tags`, `/api/ps`, `/api/show`; inference in `inference.rs`,
//! embeddings in `embeddings.rs`, pull, delete and copy in `store.rs`) and the simulator's own (`/sim/stats`,
//! `/sim/config`, `/sim/requests`), with the replies every route shares.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::config::SimConfig;
use super::embeddings::{embed, embeddings};
use super::host::{lock, SimHost, DEFAULT_CTX};
use super::inference::{chat, generate};
use super::store;
use super::text;
use crate::ollama::types::{
    same_model, ErrorResponse, LoadedModel, ModelDetails, ModelInfo, PsResponse, ShowRequest,
    ShowResponse, TagsResponse, VersionResponse,
};

pub(super) type Host = State<Arc<SimHost>>;

pub(super) fn router(host: Arc<SimHost>) -> Router {
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
        .route("/api/pull", post(store::pull))
        .route("/api/delete", delete(store::delete))
        .route("/api/copy", post(store::copy))
        .route("/sim/stats", get(stats))
        .route("/sim/config", get(get_config).post(set_config))
        .route("/sim/requests", get(requests))
        .with_state(host)
}

/// A 200 NDJSON response whose body is `body`.
pub(super) fn ndjson_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// A response whose body fails at once: the client sees a broken connection.
pub(super) fn broken() -> Response {
    let s = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated host is gone"))
    });
    ndjson_response(Body::from_stream(s))
}

/// Ollama's error reply: `status` with `{"error": msg}`.
pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorResponse { error: msg.into() })).into_response()
}

/// Why a request gets no reply: an error Ollama would send, or a fault that
/// breaks the connection.
#[derive(Debug)]
pub(super) enum Refusal {
    /// `{"error": message}` with this status.
    Error(StatusCode, String),
    /// The connection breaks (a reset, or the host died).
    Broken,
}

impl Refusal {
    pub(super) fn bad_request(message: impl Into<String>) -> Refusal {
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
pub(super) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad_request("missing request body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request(format!("invalid JSON body: {e}")))
}

/// One NDJSON line.
pub(super) fn ndjson_line<T: Serialize>(v: &T) -> Bytes {
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
pub(super) fn enter(h: &Arc<SimHost>) -> Option<Response> {
    h.http_requests.fetch_add(1, Ordering::SeqCst);
    h.is_dead().then(broken)
}

async fn root(State(h): Host) -> Response {
    enter(&h).unwrap_or_else(|| "Ollama is running".into_response())
}

async fn version(State(h): Host) -> Response {
    enter(&h).unwrap_or_else(|| {
        Json(VersionResponse {
            version: Some(h.config().version),
        })
        .into_response()
    })
}

pub(super) fn model_size(name: &str) -> u64 {
    1_000_000_000 + text::hash(&[name]) % 1_000_000_000
}

/// What `/api/tags` and `/api/show` say of every simulated model.
fn model_details() -> ModelDetails {
    ModelDetails {
        format: Some("gguf".into()),
        family: Some("simulated".into()),
        parameter_size: Some("1B".into()),
        quantization_level: Some("Q4_0".into()),
        other: Map::new(),
    }
}

/// What `/api/show` says a model can do: an embedding model (its name says
/// so, as `mxbai-embed-large` and `nomic-embed-text` do) embeds, any other completes.
pub(super) fn capability(model: &str) -> &'static str {
    if model.to_ascii_lowercase().contains("embed") {
        "embedding"
    } else {
        "completion"
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
            details: Some(model_details()),
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

pub(super) fn find_model(h: &SimHost, requested: &str) -> Option<String> {
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
        details: Some(model_details()),
        model_info,
        capabilities: vec![capability(&m).into()],
        modified_at: Some(CREATED_AT.into()),
    })
    .into_response()
}

async fn stats(State(h): Host) -> Response {
    Json(h.stats()).into_response()
}

/// The last inference requests' bodies, oldest first.
async fn requests(State(h): Host) -> Response {
    Json(h.recent_requests()).into_response()
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
pub(super) const CREATED_AT: &str = "2026-01-01T00:00:00Z";
