//! Where a request for a model may go: to the llama.cpp coordinator when the
//! routing path sends that model there (`distributed model|both`), else to
//! the nodes that have it (Ollama's name rules: `llama3.2` is
//! `llama3.2:latest`), in the scheduler's order of preference; else nowhere:
//! 404 in Ollama's words. Only registered nodes and the coordinator are ever
//! called: nothing in a request names an address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::errors::ApiError;
use super::ollama_api::to_bytes;
use super::relay::{Job, Wire};
use super::state::Shared;
use super::translate::{openai_request_from_ollama, Shape};
use crate::nodes::health::probe_all;
use crate::nodes::Node;
use crate::ollama::types::same_model;
use crate::scheduler::{Policy, Pool};
use crate::sharding::route::{decide, Target as RouteTarget};

/// Re-read the nodes' model lists at most this often when a model is missing.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

pub enum Target {
    /// Ollama nodes that have the model.
    Nodes(Vec<Arc<Node>>),
    /// llama-server, speaking OpenAI's API.
    Coordinator(Arc<Node>),
}

/// The nodes of `nodes` that have `model`.
pub(crate) fn nodes_with(nodes: &[Arc<Node>], model: &str) -> Vec<Arc<Node>> {
    nodes
        .iter()
        .filter(|n| n.state().models.iter().any(|m| same_model(m, model)))
        .cloned()
        .collect()
}

/// Where a request for `model` goes.
pub async fn resolve(shared: &Shared, model: &str) -> Result<Target, ApiError> {
    let view = shared.view();
    let (target, why) = decide(view.route(), model);
    if target == RouteTarget::Coordinator {
        return match &view.coordinator {
            Some(c) => Ok(Target::Coordinator(c.clone())),
            None => Err(ApiError {
                retry_after: Some(30),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{why}, but no llama.cpp coordinator is running: a query in the shell starts it, \
                         or set coordinator_url to one that runs"
                    ),
                )
            }),
        };
    }
    let with = nodes_with(&view.nodes, model);
    if !with.is_empty() {
        return Ok(Target::Nodes(with));
    }
    // Perhaps a node got the model since its list was read.
    if refresh_due(shared) {
        probe_all(&shared.client, &view.nodes, false, &*shared.sched).await;
        let with = nodes_with(&view.nodes, model);
        if !with.is_empty() {
            return Ok(Target::Nodes(with));
        }
    }
    Err(ApiError::model_not_found(model))
}

fn refresh_due(shared: &Shared) -> bool {
    let mut last = shared
        .tags_refreshed
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The scheduler pool for a request of `client`, with the gateway's queue limit.
pub fn pool(shared: &Shared, nodes: Vec<Arc<Node>>, client: Option<Arc<str>>) -> Pool {
    Pool::new(nodes, shared.view().policy())
        .for_client(client)
        .with_queue_limit(shared.config.max_queue)
}

/// The pool of a coordinator target.
pub(crate) fn coordinator_pool(shared: &Shared, node: Arc<Node>, client: Option<Arc<str>>) -> Pool {
    Pool::new(vec![node], Policy::Pool)
        .for_client(client)
        .with_queue_limit(shared.config.max_queue)
}

/// A chat for `model`, written as an Ollama `/api/chat` body (streamed), as a
/// job: to the nodes that have the model as it is, or to the coordinator as
/// an OpenAI chat (the APIs that translate to Ollama's chat use this).
pub(crate) async fn chat_job(
    shared: &Shared,
    caller: Option<Arc<str>>,
    model: &str,
    chat: &serde_json::Map<String, serde_json::Value>,
    label: String,
) -> Result<Job, ApiError> {
    let target = resolve(shared, model).await?;
    let (pool, path, body, wire) = match target {
        Target::Nodes(nodes) => (
            pool(shared, nodes, caller),
            "/api/chat",
            to_bytes(chat),
            Wire::Ollama,
        ),
        Target::Coordinator(c) => (
            coordinator_pool(shared, c, caller),
            "/v1/chat/completions",
            to_bytes(&openai_request_from_ollama(
                chat,
                Shape::Chat,
                shared.view().num_predict(),
            )),
            Wire::OpenAi,
        ),
    };
    Ok(Job {
        pool,
        label,
        model: model.to_string(),
        path,
        body,
        wire,
    })
}
