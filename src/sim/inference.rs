//! Inference on a simulated host (`/api/generate`, `/api/chat`): the request
//! read, the faults that strike before a reply, then the reply (written by
//! `reply.rs`) sent whole or streamed at the host's pace.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::api::{
    broken, enter, error, find_model, ndjson_line, ndjson_response, parse, Host, Refusal,
    CREATED_AT,
};
use super::config::{Fault, SimConfig};
use super::host::{InFlight, SimHost};
use super::reply::Reply;
use super::store::unload;
use crate::ollama::types::{
    keep_alive_is_zero, ChatRequest, ErrorResponse, GenerateRequest, Message, Options, StreamChunk,
};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Generate,
    Chat,
}

pub(super) async fn generate(State(h): Host, body: Bytes) -> Response {
    inference(h, Kind::Generate, body).await
}

pub(super) async fn chat(State(h): Host, body: Bytes) -> Response {
    inference(h, Kind::Chat, body).await
}

/// An inference request as the simulator reads it, from either endpoint.
pub(super) struct Ask {
    kind: Kind,
    model: String,
    /// What the reply is about: the prompt, or the last user message.
    pub prompt: String,
    /// The system prompt(s): counted in the prompt's tokens, never read.
    pub system: String,
    stream: bool,
    /// The request's `format`: `"json"`, a JSON Schema, or none.
    pub format: Option<Value>,
    pub options: Options,
    /// No prompt (generate) or no messages (chat): load or unload the model.
    empty: bool,
    keep_alive: Option<Value>,
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
                    empty: r.prompt.is_empty(),
                    keep_alive: r.keep_alive,
                    options: options(r.options.as_ref())?,
                    format: r.format,
                    stream: r.stream,
                    system: r.system.unwrap_or_default(),
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
                let system = r
                    .messages
                    .iter()
                    .filter(|m| m.role == "system")
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Ask {
                    kind,
                    empty: r.messages.is_empty(),
                    keep_alive: r.keep_alive,
                    options: options(r.options.as_ref())?,
                    format: r.format,
                    stream: r.stream,
                    system,
                    prompt,
                    model: r.model,
                }
            }
        })
    }
}

#[cfg(test)]
impl Ask {
    /// A chat request for `prompt` with this `format`.
    pub(super) fn for_test(prompt: &str, format: Option<Value>) -> Ask {
        Ask {
            kind: Kind::Chat,
            model: "m".into(),
            prompt: prompt.into(),
            system: String::new(),
            stream: false,
            format,
            options: Options::default(),
            empty: false,
            keep_alive: None,
        }
    }
}

/// `/api/generate` and `/api/chat`: read the request, let the faults that
/// strike before a reply strike, find the model, then reply.
async fn inference(h: Arc<SimHost>, kind: Kind, body: Bytes) -> Response {
    if let Some(r) = enter(&h) {
        return r;
    }
    let ask = Ask::read(kind, &body);
    if let Ok(a) = &ask {
        if a.empty {
            // Not a generation: neither counted nor kept, nor struck by faults.
            return residency(&h, a);
        }
    }
    let n = h.requests.fetch_add(1, Ordering::SeqCst) + 1;
    h.record(&body);
    let cfg = h.config();
    let ask = match ask {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let fault = cfg.fault_for(n, &ask.model, &ask.prompt);
    match admit(&h, &ask, fault) {
        Ok(model) => respond(h, cfg, ask, model, fault).await,
        Err(r) => r.into_response(),
    }
}

/// An empty request loads the model (`done_reason: "load"`) or, with a
/// `keep_alive` of zero, unloads it (`"unload"`; `/api/ps` no longer lists
/// it): one JSON object, streamed or not, as Ollama answers.
fn residency(h: &SimHost, ask: &Ask) -> Response {
    if ask.model.is_empty() {
        return Refusal::bad_request("model is required").into_response();
    }
    let Some(model) = find_model(h, &ask.model) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("model '{}' not found", ask.model),
        );
    };
    let reason = if keep_alive_is_zero(ask.keep_alive.as_ref()) {
        unload(h, &model);
        "unload"
    } else {
        let cfg = h.config();
        h.load(&model, ask.options.num_ctx, cfg.trained());
        "load"
    };
    let (response, message) = match ask.kind {
        Kind::Generate => (Some(String::new()), None),
        Kind::Chat => (None, Some(Message::assistant(""))),
    };
    Json(StreamChunk {
        model: Some(ask.model.clone()),
        created_at: Some(CREATED_AT.into()),
        response,
        message,
        done: true,
        done_reason: Some(reason.into()),
        ..StreamChunk::default()
    })
    .into_response()
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
    let mut reply = match Reply::compose(&h, &cfg, &ask, &model) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if fault == Fault::Empty {
        reply.blank();
    }
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
pub(super) async fn pace(h: &SimHost, cfg: &SimConfig, count: usize) {
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
