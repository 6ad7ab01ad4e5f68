//! OpenAI's API for the whole cluster: `/v1/chat/completions` and
//! `/v1/completions` (server-sent events ending in `[DONE]`, usage on
//! `stream_options.include_usage`), `/v1/embeddings` (floats or base64, a
//! batch split across hosts) and `/v1/models`. Requests for Ollama nodes are
//! translated to Ollama's API; for the llama.cpp coordinator they stay OpenAI's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::call::Call;
use super::errors::ApiError;
use super::fields;
use super::ollama_api::{self, model_of, object, respond, to_bytes};
use super::relay::{Job, Wire, Writer};
use super::route::{self, Target};
use super::state::Shared;
use super::translate::{
    chat_request_from_openai, field, generate_request_from_openai, openai_request_for_coordinator,
};
use super::writers::{OpenAiKind, OpenAiOut};

type Ctx = State<Arc<Shared>>;

pub(crate) async fn chat_completions(call: Call) -> Response {
    completion(call, OpenAiKind::Chat).await
}

pub async fn completions(call: Call) -> Response {
    completion(call, OpenAiKind::Text).await
}

async fn completion(Call(shared, tally, caller, body): Call, kind: OpenAiKind) -> Response {
    let prepared = async {
        let req = object(body)?;
        fields::check_openai(
            &req,
            match kind {
                OpenAiKind::Chat => fields::OPENAI_CHAT,
                OpenAiKind::Text => fields::OPENAI_TEXT,
            },
        )?;
        let model = model_of(&req)?;
        let stream = req.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        let include_usage = field(&req, "stream_options")["include_usage"]
            .as_bool()
            .unwrap_or(false);
        // Check the request before looking for the model (a bad request is 400 either way).
        let for_ollama = match kind {
            OpenAiKind::Chat => chat_request_from_openai(&req)?,
            OpenAiKind::Text => generate_request_from_openai(&req)?,
        };
        let target = route::resolve(&shared, &model).await?;
        tally.model(&model);
        let (pool, path, body, wire) = match target {
            Target::Nodes(nodes) => (
                route::pool(&shared, nodes, caller.0),
                match kind {
                    OpenAiKind::Chat => "/api/chat",
                    OpenAiKind::Text => "/api/generate",
                },
                to_bytes(&for_ollama),
                Wire::Ollama,
            ),
            Target::Coordinator(c) => (
                route::coordinator_pool(&shared, c, caller.0),
                match kind {
                    OpenAiKind::Chat => "/v1/chat/completions",
                    OpenAiKind::Text => "/v1/completions",
                },
                to_bytes(&openai_request_for_coordinator(
                    &req,
                    shared.view().num_predict(),
                )),
                Wire::OpenAi,
            ),
        };
        let label = match kind {
            OpenAiKind::Chat => format!("v1 chat {model}"),
            OpenAiKind::Text => format!("v1 completion {model}"),
        };
        let mut out = OpenAiOut::new(kind, &model, include_usage);
        out.logprobs = kind == OpenAiKind::Chat && req.get("logprobs") == Some(&Value::Bool(true));
        let writer = Writer::OpenAi(out);
        Ok::<_, ApiError>((
            Job {
                pool,
                label,
                model,
                path,
                body,
                wire,
            },
            writer,
            stream,
        ))
    }
    .await;
    match prepared {
        Ok((job, writer, stream)) => respond(&shared, job, writer, stream, tally).await,
        Err(e) => e.openai(),
    }
}

/// A list of little-endian f32s as base64 (OpenAI's `encoding_format: base64`).
pub(crate) fn base64_floats(v: &[Value]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(Call(shared, tally, caller, body): Call) -> Response {
    let run = async {
        let req = object(body)?;
        fields::check(&req, fields::OPENAI_EMBEDDINGS)?;
        let model = model_of(&req)?;
        let inputs = match req.get("input") {
            Some(Value::String(s)) => vec![json!(s)],
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a.clone(),
            _ => {
                return Err(ApiError::bad_request(
                    "input must be a string or a non-empty list of strings (token arrays are not supported)",
                )
                .with_param("input"))
            }
        };
        let base64 = match req.get("encoding_format").and_then(|f| f.as_str()) {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "encoding_format `{other}` is not supported (float or base64)"
                ))
                .with_param("encoding_format"))
            }
        };
        let mut for_ollama = Map::new();
        for k in ["model", "truncate", "keep_alive"] {
            if let Some(v) = req.get(k) {
                for_ollama.insert(k.into(), v.clone());
            }
        }
        if let Some(d) = req.get("dimensions").filter(|d| !d.is_null()) {
            for_ollama.insert("dimensions".into(), d.clone());
        }
        let (vectors, prompt_tokens, _) =
            ollama_api::embed_batch(&shared, &tally, &caller, &for_ollama, &model, inputs).await?;
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = match (base64, v.as_array()) {
                    (true, Some(a)) => json!(base64_floats(a)),
                    _ => v.clone(),
                };
                json!({"object": "embedding", "embedding": embedding, "index": i})
            })
            .collect();
        Ok(json!({"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}))
    };
    match run.await {
        Ok(v) => {
            let mut r = Json(v).into_response();
            tally.headers(&mut r);
            r
        }
        Err(e) => e.openai(),
    }
}

/// A model in OpenAI's words.
fn model_entry(m: &Value) -> Value {
    let name = m["name"].as_str().unwrap_or("");
    let created = m["modified_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let owner = name.split_once('/').map_or("library", |(o, _)| o);
    json!({"id": name, "object": "model", "created": created, "owned_by": owner})
}

pub async fn models(State(shared): Ctx) -> Response {
    let data: Vec<Value> = ollama_api::models(&shared)
        .await
        .iter()
        .map(model_entry)
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn model(State(shared): Ctx, Path(id): Path<String>) -> Response {
    match ollama_api::models(&shared)
        .await
        .iter()
        .find(|m| crate::ollama::types::same_model(m["name"].as_str().unwrap_or(""), &id))
    {
        Some(m) => Json(model_entry(m)).into_response(),
        None => ApiError::model_not_found(&id).openai(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let s = base64_floats(&[json!(1.0), json!(-2.5)]);
        let b = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(f32::from_le_bytes(b[0..4].try_into().unwrap()), 1.0);
        assert_eq!(f32::from_le_bytes(b[4..8].try_into().unwrap()), -2.5);
    }

    #[test]
    fn models_in_openai_words() {
        let m = model_entry(&json!({"name": "me/tiny:1b", "modified_at": "2026-01-01T00:00:00Z"}));
        assert_eq!(m["owned_by"], "me");
        assert_eq!(m["created"], 1767225600);
        assert_eq!(
            model_entry(&json!({"name": "llama3.2:latest"}))["owned_by"],
            "library"
        );
    }
}
