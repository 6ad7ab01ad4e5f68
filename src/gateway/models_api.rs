//! The cluster's models through Ollama's API, as one store: `/api/pull` onto
//! every node that lacks the model (its progress summed over the nodes, as
//! NDJSON), `/api/delete` and `/api/copy` wherever the model is, and the
//! empty `/api/generate` and `/api/chat` that load a model (or, with
//! `keep_alive: 0`, unload it) on every node that has it (has it loaded).
//! `X-SynapticLlamas-Nodes: a, b` names the nodes instead. The work itself is
//! `crate::models`'s, which the shell's `pull` and `rm` use too.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::call::Call;
use super::errors::ApiError;
use super::observe::{End, Tally};
use super::ollama_api::{model_of, object};
use super::route::{self, Target};
use super::state::Shared;
use super::translate::Shape;
use crate::models::{fanout, targets, Board, NodeResult, PullEvent};
use crate::nodes::Node;
use crate::ollama::manage::Residency;
use crate::ollama::types::{keep_alive_is_zero, ProgressLine};

/// The request header that names the nodes an operation is for.
pub const NODES_HEADER: &str = "x-synapticllamas-nodes";

/// The nodes `X-SynapticLlamas-Nodes` names, if it is there.
fn named(shared: &Shared, headers: &HeaderMap) -> Result<Option<Vec<Arc<Node>>>, ApiError> {
    let Some(v) = headers.get(NODES_HEADER) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("{NODES_HEADER}: not text")))?;
    let keys: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{NODES_HEADER} names no node"
        )));
    }
    targets::named(&shared.view().nodes, &keys)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("{NODES_HEADER}: {e}")))
}

/// The error for an operation that failed on some nodes: the nodes' own
/// status when they all answered alike, 502 when a node could not be reached.
fn failed(what: &str, results: &[NodeResult], done_word: &str) -> ApiError {
    let statuses: Vec<Option<u16>> = results
        .iter()
        .filter(|r| !r.outcome.ok())
        .map(|r| match &r.outcome {
            crate::models::Outcome::Refused { status, .. } => Some(status.unwrap_or(500)),
            _ => None,
        })
        .collect();
    let status = match statuses.first() {
        Some(Some(s)) if statuses.iter().all(|x| x == &Some(*s)) => {
            StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    let done = fanout::done_on(results);
    let tail = if done.is_empty() {
        String::new()
    } else {
        format!("; {done_word} on {}", done.join(", "))
    };
    ApiError::new(
        status,
        format!("{what} failed on {}{tail}", fanout::failures(results)),
    )
}

/// Say a node's failure in the log and on the dashboard.
fn tell(shared: &Shared, what: &str, r: &NodeResult) {
    if let Some(p) = r.outcome.problem() {
        let line = format!("⚠️  {what} failed on {} ({p})", r.node.name());
        shared.log(&line);
        shared.hub.notice(line);
    }
}

/// `POST /api/pull`.
pub(crate) async fn pull(headers: HeaderMap, Call(shared, tally, _, body): Call) -> Response {
    match pull_inner(&shared, &tally, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.ollama(),
    }
}

async fn pull_inner(
    shared: &Arc<Shared>,
    tally: &Tally,
    headers: &HeaderMap,
    body: super::call::Body,
) -> Result<Response, ApiError> {
    let req = object(body)?;
    let model = model_of(&req)?;
    let insecure = req
        .get("insecure")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let view = shared.view();
    if view.nodes.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no node is registered to pull onto",
        ));
    }
    let nodes = match named(shared, headers)? {
        Some(n) => n,
        None => {
            targets::refresh(&shared.client, &view.nodes, false, &*shared.sched).await;
            targets::lacking(&view.nodes, &model)
        }
    };
    tally.model(&model);
    if !stream {
        let results = fanout::pull(&shared.client, &nodes, &model, insecure, &|_| {}).await;
        results
            .iter()
            .for_each(|r| tell(shared, &format!("pull {model}"), r));
        if results.iter().all(|r| r.outcome.ok()) {
            return Ok(Json(json!({"status": "success"})).into_response());
        }
        return Err(failed(&format!("pull {model}"), &results, "pulled"));
    }
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    tally.streaming();
    tokio::spawn(stream_pull(
        shared.clone(),
        tally.clone(),
        nodes,
        model,
        insecure,
        tx,
    ));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// What the stream says of each event: the summed progress of each layer,
/// a node's other steps (with its name), each node's end; nothing twice of
/// "pulling manifest".
struct Relay {
    board: Board,
    manifest_said: bool,
    /// Nodes that have the model so far, of how many.
    pulled: usize,
    of: usize,
}

impl Relay {
    fn event(&mut self, e: &PullEvent<'_>) -> Option<Value> {
        match e {
            PullEvent::Started(_) => None,
            PullEvent::Line(node, l) => {
                if let Some(sum) = self.board.add(node.name(), l) {
                    return serde_json::to_value(sum).ok();
                }
                match l.status.as_str() {
                    "success" => None,
                    "pulling manifest" if self.manifest_said => None,
                    "pulling manifest" => {
                        self.manifest_said = true;
                        serde_json::to_value(ProgressLine::status("pulling manifest")).ok()
                    }
                    s => Some(json!({"status": s, "node": node.name()})),
                }
            }
            PullEvent::Finished(r) if r.outcome.ok() => {
                self.pulled += 1;
                Some(json!({
                    "status": format!(
                        "pulled on {} ({} of {} nodes)",
                        r.node.name(),
                        self.pulled,
                        self.of
                    ),
                    "node": r.node.name(),
                }))
            }
            // Failures are said at the end.
            PullEvent::Finished(_) => None,
        }
    }
}

/// Run a streamed pull: its lines go to `tx`; the pulls stop when the client
/// goes away or the gateway's drain ends. Errors come last, one line per
/// node that failed, so a client that stops at the first never cuts another
/// node's pull short; `success` only when every node has the model.
async fn stream_pull(
    shared: Arc<Shared>,
    tally: Tally,
    nodes: Vec<Arc<Node>>,
    model: String,
    insecure: bool,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    let relay = Mutex::new(Relay {
        board: Board::new(),
        manifest_said: false,
        pulled: 0,
        of: nodes.len(),
    });
    let events = |e: PullEvent<'_>| {
        let said = relay.lock().unwrap_or_else(|p| p.into_inner()).event(&e);
        if let Some(v) = said {
            let _ = tx.send(line(&v));
        }
    };
    let what = format!("pull {model}");
    let mut cut = shared.cut.clone();
    let run = fanout::pull(&shared.client, &nodes, &model, insecure, &events);
    let results = tokio::select! {
        r = run => r,
        _ = tx.closed() => {
            tally.stream_ended(End::Gone, None);
            return;
        }
        _ = cut.wait_for(|c| *c) => {
            let _ = tx.send(line(&json!({"error": format!(
                "the gateway is stopping: the pull of {model} was cut short")})));
            tally.stream_ended(End::Broken, None);
            return;
        }
    };
    let bad: Vec<&NodeResult> = results.iter().filter(|r| !r.outcome.ok()).collect();
    for r in &bad {
        tell(&shared, &what, r);
        let problem = r.outcome.problem().unwrap_or_default();
        let _ = tx.send(line(&json!({
            "error": format!("{what} on {} ({}): {problem}", r.node.name(), r.node.url()),
            "node": r.node.name(),
        })));
    }
    if bad.is_empty() {
        let _ = tx.send(line(&json!({"status": "success"})));
        tally.stream_ended(End::Finished, None);
    } else {
        let note = format!("failed on {}", fanout::failures(&results));
        tally.stream_ended(End::Finished, Some(note));
    }
}

/// `DELETE /api/delete`: wherever the model is; 404 when no node has it.
pub(crate) async fn delete(headers: HeaderMap, Call(shared, tally, _, body): Call) -> Response {
    let run = async {
        let req = object(body)?;
        let model = model_of(&req)?;
        let nodes = store_targets(&shared, &headers, &model).await?;
        tally.model(&model);
        let results = fanout::delete(&shared.client, &nodes, &model).await;
        finish(&shared, &format!("delete {model}"), &results, "deleted")
    };
    run.await.unwrap_or_else(ApiError::ollama)
}

/// `POST /api/copy`: wherever the source is; 404 when no node has it.
pub(crate) async fn copy(headers: HeaderMap, Call(shared, tally, _, body): Call) -> Response {
    let run = async {
        let req = object(body)?;
        let field = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .ok_or_else(|| ApiError::bad_request(format!("{k} is required")))
        };
        let (source, destination) = (field("source")?, field("destination")?);
        let nodes = store_targets(&shared, &headers, &source).await?;
        tally.model(&source);
        let results = fanout::copy(&shared.client, &nodes, &source, &destination).await;
        finish(
            &shared,
            &format!("copy {source} to {destination}"),
            &results,
            "copied",
        )
    };
    run.await.unwrap_or_else(ApiError::ollama)
}

/// The nodes named, else those that have `model` (lists read fresh); 404 in
/// Ollama's words when none has it.
async fn store_targets(
    shared: &Shared,
    headers: &HeaderMap,
    model: &str,
) -> Result<Vec<Arc<Node>>, ApiError> {
    if let Some(n) = named(shared, headers)? {
        return Ok(n);
    }
    let view = shared.view();
    targets::refresh(&shared.client, &view.nodes, false, &*shared.sched).await;
    let nodes = targets::having(&view.nodes, model);
    if nodes.is_empty() {
        return Err(ApiError::model_not_found(model));
    }
    Ok(nodes)
}

/// 200 with no body (as Ollama answers) when every node did it.
fn finish(
    shared: &Shared,
    what: &str,
    results: &[NodeResult],
    done_word: &str,
) -> Result<Response, ApiError> {
    results.iter().for_each(|r| tell(shared, what, r));
    if results.iter().all(|r| r.outcome.ok()) {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(failed(what, results, done_word))
    }
}

/// An empty generate or chat (no `prompt`, no `messages`) loads the model,
/// or with a `keep_alive` of zero unloads it, as Ollama does.
pub(crate) fn residency_of(req: &Map<String, Value>, shape: Shape) -> Option<Residency> {
    let empty = match shape {
        Shape::Generate => req
            .get("prompt")
            .is_none_or(|p| p.is_null() || p.as_str() == Some("")),
        Shape::Chat => req
            .get("messages")
            .is_none_or(|m| m.is_null() || m.as_array().is_some_and(Vec::is_empty)),
    };
    empty.then(|| {
        if keep_alive_is_zero(req.get("keep_alive")) {
            Residency::Unload
        } else {
            Residency::Load
        }
    })
}

/// Load the model on every node that has it, or unload it on every node
/// whose `/api/ps` shows it: Ollama's empty reply (`done_reason` "load" or
/// "unload"). A load that worked somewhere succeeds (the failures are
/// logged); an unload must work everywhere.
pub(crate) async fn residency(
    shared: &Shared,
    tally: &Tally,
    req: &Map<String, Value>,
    model: &str,
    shape: Shape,
    what: Residency,
) -> Response {
    let run = async {
        let nodes = match route::resolve(shared, model).await? {
            // llama-server holds its one model for as long as it runs.
            Target::Coordinator(_) => Vec::new(),
            Target::Nodes(with) => with,
        };
        tally.model(model);
        let nodes = match what {
            Residency::Load => nodes,
            Residency::Unload => {
                targets::refresh(&shared.client, &nodes, true, &*shared.sched).await;
                targets::loaded_on(&nodes, model)
            }
        };
        let keep_alive = req.get("keep_alive");
        let results = fanout::residency(&shared.client, &nodes, model, what, keep_alive).await;
        let label = format!("{} {model}", what.word());
        results.iter().for_each(|r| tell(shared, &label, r));
        let worked = match what {
            Residency::Load => results.is_empty() || results.iter().any(|r| r.outcome.ok()),
            Residency::Unload => results.iter().all(|r| r.outcome.ok()),
        };
        if !worked {
            return Err(failed(&label, &results, &format!("{}ed", what.word())));
        }
        Ok(done_reply(model, shape, what))
    };
    run.await.unwrap_or_else(ApiError::ollama)
}

/// Ollama's reply to a load or an unload.
fn done_reply(model: &str, shape: Shape, what: Residency) -> Response {
    let created_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut v = json!({
        "model": model, "created_at": created_at,
        "done": true, "done_reason": what.word(),
    });
    match shape {
        Shape::Generate => v["response"] = json!(""),
        Shape::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
    }
    Json(v).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_request_loads_and_with_keep_alive_zero_unloads() {
        let req = |v: Value| v.as_object().unwrap().clone();
        let g = Shape::Generate;
        assert_eq!(
            residency_of(&req(json!({"model": "m"})), g),
            Some(Residency::Load)
        );
        assert_eq!(
            residency_of(
                &req(json!({"model": "m", "prompt": "", "keep_alive": 0})),
                g
            ),
            Some(Residency::Unload)
        );
        assert_eq!(
            residency_of(
                &req(json!({"model": "m", "prompt": "hi", "keep_alive": 0})),
                g
            ),
            None,
            "a prompt with keep_alive 0 is a generation (the node unloads after it)"
        );
        let c = Shape::Chat;
        assert_eq!(
            residency_of(
                &req(json!({"model": "m", "messages": [], "keep_alive": "0s"})),
                c
            ),
            Some(Residency::Unload)
        );
        assert_eq!(
            residency_of(
                &req(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
                c
            ),
            None
        );
    }

    #[test]
    fn a_pulls_stream_sums_layers_and_says_manifest_once() {
        use crate::config::nodes_file::NodeEntry;
        let node = |name: &str| {
            Arc::new(Node::new(
                NodeEntry {
                    url: format!("http://{name}:1"),
                    name: name.into(),
                    priority: 0,
                    host_id: None,
                    extra: Default::default(),
                },
                false,
            ))
        };
        let (a, b) = (node("a"), node("b"));
        let mut r = Relay {
            board: Board::new(),
            manifest_said: false,
            pulled: 0,
            of: 2,
        };
        let manifest = ProgressLine::status("pulling manifest");
        assert!(r.event(&PullEvent::Line(&a, &manifest)).is_some());
        assert!(r.event(&PullEvent::Line(&b, &manifest)).is_none());
        let layer = |c: u64| ProgressLine {
            status: "pulling abc".into(),
            digest: Some("sha256:abc".into()),
            total: Some(10),
            completed: Some(c),
            error: None,
        };
        r.event(&PullEvent::Line(&a, &layer(10)));
        let sum = r.event(&PullEvent::Line(&b, &layer(4))).unwrap();
        assert_eq!(
            (sum["total"].clone(), sum["completed"].clone()),
            (json!(20), json!(14))
        );
        let verify = ProgressLine::status("verifying sha256 digest");
        assert_eq!(
            r.event(&PullEvent::Line(&a, &verify)).unwrap(),
            json!({"status": "verifying sha256 digest", "node": "a"})
        );
        assert!(r
            .event(&PullEvent::Line(&a, &ProgressLine::status("success")))
            .is_none());
    }
}
