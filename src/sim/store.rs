//! A simulated host's model store: `/api/pull` (Ollama's progress lines over
//! a simulated download: "pulling manifest", "pulling <digest>" with `total`
//! and `completed`, "verifying sha256 digest", "writing manifest",
//! "success"), `/api/delete` and `/api/copy`. A model pulled or copied is
//! installed (`/api/tags` lists it); a deleted one is gone, unloaded too.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc;

use super::api::{enter, error, find_model, model_size, ndjson_line, ndjson_response, parse, Host};
use super::config::SimConfig;
use super::host::{lock, SimHost};
use super::text;
use crate::ollama::types::{
    model_key, same_model, CopyRequest, DeleteRequest, ProgressLine, PullRequest,
};

/// Ollama's words for a name its library does not have.
pub(crate) const NO_MANIFEST: &str = "pull model manifest: file does not exist";

/// How often a paced download reports its progress.
const TICK: Duration = Duration::from_millis(100);

/// A layer of a simulated model: its digest and size.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layer {
    pub digest: String,
    pub size: u64,
}

/// The layers of `model`: the weights (the size `/api/tags` reports) and a
/// small one for its template and parameters, with stable digests.
pub(super) fn layers(model: &str) -> Vec<Layer> {
    let digest = |part: &str| {
        use sha2::{Digest, Sha256};
        let sum = Sha256::digest(format!("{model}\0{part}").as_bytes());
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    };
    vec![
        Layer {
            digest: digest("weights"),
            size: model_size(model),
        },
        Layer {
            digest: digest("params"),
            size: 412 + text::hash(&[model]) % 100,
        },
    ]
}

/// The name a pull installs: an installed model's own name, else the
/// library's (None: the library has no such model).
fn pullable(cfg: &SimConfig, asked: &str) -> Option<String> {
    cfg.models
        .iter()
        .chain(cfg.library.iter())
        .find(|m| same_model(m, asked))
        .cloned()
}

/// `pulling 2af3b81862c6`: Ollama names a layer by its digest's first 12 hex digits.
pub(crate) fn pulling(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("pulling {}", &hex[..hex.len().min(12)])
}

/// The progress of a pull of `name` (None: not in the library), each line
/// sent as it happens, paced at the configured speed; false once the pull
/// failed or the reader went away.
async fn run_pull(h: &SimHost, cfg: &SimConfig, name: Option<&str>, tx: &Sender) -> bool {
    if !send(tx, ProgressLine::status("pulling manifest")).await {
        return false;
    }
    let Some(name) = name else {
        return fail(tx, NO_MANIFEST).await;
    };
    let installed = find_model(h, name).is_some();
    for layer in layers(name) {
        let mut done = if installed { layer.size } else { 0 };
        let step = match cfg.pull_bytes_per_sec {
            // At once: a few steps, none waited for.
            0 => layer.size.div_ceil(4).max(1),
            speed => (speed as f64 * TICK.as_secs_f64()).ceil().max(1.0) as u64,
        };
        loop {
            let line = ProgressLine {
                status: pulling(&layer.digest),
                digest: Some(layer.digest.clone()),
                total: Some(layer.size),
                completed: Some(done),
                error: None,
            };
            if !send(tx, line).await {
                return false;
            }
            if let Some(message) = &cfg.pull_error {
                if done * 2 >= layer.size && !installed {
                    return fail(tx, message).await;
                }
            }
            if done >= layer.size {
                break;
            }
            if cfg.pull_bytes_per_sec > 0 {
                tokio::time::sleep(TICK).await;
            }
            done = (done + step).min(layer.size);
        }
    }
    for status in ["verifying sha256 digest", "writing manifest"] {
        if !send(tx, ProgressLine::status(status)).await {
            return false;
        }
    }
    install(h, name);
    send(tx, ProgressLine::status("success")).await
}

type Sender = mpsc::Sender<ProgressLine>;

async fn send(tx: &Sender, line: ProgressLine) -> bool {
    tx.send(line).await.is_ok()
}

async fn fail(tx: &Sender, message: &str) -> bool {
    let line = ProgressLine {
        error: Some(message.to_string()),
        ..ProgressLine::default()
    };
    let _ = tx.send(line).await;
    false
}

/// Add `name` to the installed models (once).
fn install(h: &SimHost, name: &str) {
    let mut cfg = h.config();
    if !cfg.models.iter().any(|m| same_model(m, name)) {
        cfg.models.push(model_key(name));
        h.set_config(cfg);
    }
}

/// `POST /api/pull`: progress as NDJSON (a 200 whose failure is an
/// `{"error"}` line), or with `stream: false` the last line alone (an
/// error as HTTP 500, as Ollama answers).
pub(super) async fn pull(State(h): Host, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let req: PullRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.model().is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let cfg = h.config();
    let name = pullable(&cfg, req.model());
    let (tx, mut rx) = mpsc::channel::<ProgressLine>(16);
    let host = h.clone();
    tokio::spawn(async move {
        run_pull(&host, &cfg, name.as_deref(), &tx).await;
    });
    if req.stream {
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(ndjson_line(&line)), rx))
        });
        return ndjson_response(Body::from_stream(lines));
    }
    let mut last = ProgressLine::default();
    while let Some(line) = rx.recv().await {
        last = line;
    }
    match last.error {
        Some(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        None => Json(last).into_response(),
    }
}

/// `DELETE /api/delete`: the model is gone (and unloaded); 404 when it is not there.
pub(super) async fn delete(State(h): Host, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let req: DeleteRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let asked = req.model();
    if asked.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(name) = find_model(&h, asked) else {
        return error(StatusCode::NOT_FOUND, format!("model '{asked}' not found"));
    };
    let mut cfg = h.config();
    cfg.models.retain(|m| m != &name);
    h.set_config(cfg);
    unload(&h, &name);
    StatusCode::OK.into_response()
}

/// Take `name` out of memory.
pub(super) fn unload(h: &SimHost, name: &str) {
    lock(&h.loaded).retain(|m| m != name);
    lock(&h.loaded_ctx).remove(name);
}

/// `POST /api/copy`: `destination` is installed as a copy of `source`.
pub(super) async fn copy(State(h): Host, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let req: CopyRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let (source, destination) = (req.source.trim(), req.destination.trim());
    if source.is_empty() || destination.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "source and destination are required",
        );
    }
    if find_model(&h, source).is_none() {
        return error(StatusCode::NOT_FOUND, format!("model '{source}' not found"));
    }
    install(&h, destination);
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_stable_and_named_as_ollama_names_them() {
        let a = layers("tinyllama:latest");
        assert_eq!(a, layers("tinyllama:latest"));
        assert_ne!(a[0].digest, layers("llama3.2:latest")[0].digest);
        assert_eq!(a[0].digest.len(), "sha256:".len() + 64);
        assert_eq!(a[0].size, model_size("tinyllama:latest"));
        assert_eq!(
            pulling(&a[0].digest),
            format!("pulling {}", &a[0].digest[7..19])
        );
    }

    async fn host(cfg: SimConfig) -> std::sync::Arc<SimHost> {
        SimHost::start("t", [127, 0, 0, 1].into(), &[0], cfg)
            .await
            .unwrap()
    }

    /// A raw request to the host: (status, body as JSON or text).
    async fn ask(m: reqwest::Method, url: String, body: serde_json::Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .request(m, url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn a_pull_says_what_ollama_says_and_installs_the_model() {
        let h = host(SimConfig::default()).await;
        let (status, body) = ask(
            reqwest::Method::POST,
            format!("{}/api/pull", h.url()),
            serde_json::json!({"model": "tinyllama"}),
        )
        .await;
        assert_eq!(status, 200);
        let lines: Vec<ProgressLine> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let statuses: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
        let first_layer = pulling(&layers("tinyllama:latest")[0].digest);
        assert_eq!(statuses[0], "pulling manifest");
        assert_eq!(statuses[1], first_layer);
        assert_eq!(
            statuses[statuses.len() - 3..],
            ["verifying sha256 digest", "writing manifest", "success"]
        );
        let last_of_layer = lines.iter().rfind(|l| l.status == first_layer).unwrap();
        assert_eq!(last_of_layer.completed, last_of_layer.total);
        assert!(find_model(&h, "tinyllama").is_some());
        // Not in the library: Ollama's error line after the manifest; whole: a 500.
        let (status, body) = ask(
            reqwest::Method::POST,
            format!("{}/api/pull", h.url()),
            serde_json::json!({"model": "nope", "stream": false}),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (
                500,
                r#"{"error":"pull model manifest: file does not exist"}"#
            )
        );
    }

    #[tokio::test]
    async fn delete_copy_show_and_residency_have_ollamas_shapes() {
        let h = host(SimConfig::default()).await;
        let post = |path: &str, body: serde_json::Value| {
            ask(reqwest::Method::POST, format!("{}{path}", h.url()), body)
        };
        let (s, show) = post("/api/show", serde_json::json!({"model": "llama3.2"})).await;
        let show: serde_json::Value = serde_json::from_str(&show).unwrap();
        assert_eq!(s, 200);
        assert_eq!(show["capabilities"], serde_json::json!(["completion"]));
        assert_eq!(show["details"]["quantization_level"], "Q4_0");
        assert!(show["modified_at"].is_string(), "{show}");
        // An empty generate loads; with keep_alive 0 it unloads (and /api/ps says so).
        let (s, load) = post("/api/generate", serde_json::json!({"model": "llama3.2"})).await;
        let load: serde_json::Value = serde_json::from_str(&load).unwrap();
        assert_eq!(s, 200);
        assert_eq!(
            (&load["response"], &load["done"], &load["done_reason"]),
            (
                &serde_json::json!(""),
                &serde_json::json!(true),
                &serde_json::json!("load")
            )
        );
        assert!(load["model"].is_string() && load["created_at"].is_string());
        assert_eq!(lock(&h.loaded).as_slice(), ["llama3.2:latest"]);
        assert_eq!(h.stats().requests, 0, "a load is not a generation");
        let (_, unload) = post(
            "/api/chat",
            serde_json::json!({"model": "llama3.2", "messages": [], "keep_alive": 0}),
        )
        .await;
        let unload: serde_json::Value = serde_json::from_str(&unload).unwrap();
        assert_eq!(unload["done_reason"], "unload");
        assert_eq!(
            unload["message"],
            serde_json::json!({"role": "assistant", "content": ""})
        );
        assert!(lock(&h.loaded).is_empty());
        // Copy, then delete; deleting what is not there is a 404.
        let (s, _) = post(
            "/api/copy",
            serde_json::json!({"source": "llama3.2", "destination": "mine"}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(find_model(&h, "mine:latest").is_some());
        let delete = |m: &str| {
            ask(
                reqwest::Method::DELETE,
                format!("{}/api/delete", h.url()),
                serde_json::json!({"model": m}),
            )
        };
        assert_eq!(delete("mine").await.0, 200);
        assert_eq!(
            delete("mine").await,
            (404, r#"{"error":"model 'mine' not found"}"#.to_string())
        );
        let (s, _) = post(
            "/api/copy",
            serde_json::json!({"source": "gone", "destination": "x"}),
        )
        .await;
        assert_eq!(s, 404);
    }

    #[test]
    fn the_library_and_the_installed_models_can_be_pulled() {
        let cfg = SimConfig {
            models: vec!["mine:7b".into()],
            library: vec!["tinyllama:latest".into()],
            ..SimConfig::default()
        };
        assert_eq!(
            pullable(&cfg, "tinyllama").as_deref(),
            Some("tinyllama:latest")
        );
        assert_eq!(pullable(&cfg, "MINE:7b").as_deref(), Some("mine:7b"));
        assert_eq!(pullable(&cfg, "llama9"), None);
    }
}
