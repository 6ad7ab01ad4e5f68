//! Embeddings on a simulated host (`/api/embed`, `/api/embeddings`): paced
//! like prompt processing, with the same faults as inference; the vectors
//! come from `embed.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api::{broken, enter, error, find_model, parse, Host, Refusal};
use super::config::Fault;
use super::host::{lock, InFlight, SimHost};
use super::inference::pace;
use crate::ollama::types::{
    EmbedInput, EmbedRequest, EmbedResponse, EmbeddingsRequest, EmbeddingsResponse,
};

/// Counters of embedding requests.
#[derive(Default)]
pub(super) struct EmbedLog {
    pub requests: AtomicU64,
    pub inputs: AtomicU64,
    pub spans: Mutex<Vec<(Instant, Instant)>>,
}

pub(super) async fn embed(State(h): Host, body: Bytes) -> Response {
    embedding(h, body, false).await
}

pub(super) async fn embeddings(State(h): Host, body: Bytes) -> Response {
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
    let fault = cfg.fault_for(n, &requested, &inputs.join("\n"));
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
