//! Calling one agent: a streamed `/api/chat` request through the scheduler, the
//! reply repaired into the agent's fields, one follow-up request when fields are
//! missing, and the plain text kept (with a warning) when nothing else works.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::agents::{self, Agent};
use super::observer::Observer;
use super::prompts;
use super::repair::{self, FieldType};
use crate::nodes::{Api, Node};
use crate::ollama::types::{ChatRequest, Message};
use crate::ollama::{Client, ClientError, Timeouts};
use crate::scheduler::{Attribution, Scheduler, TaskFailed};
use crate::sharding::route::{decide, Target};

/// `num_predict` (Ollama) / `max_tokens` (llama-server) for every agent request,
/// unless the `num_predict` setting says otherwise.
pub const NUM_PREDICT: u64 = 4096;
/// One fixed context size for every node and model, so Ollama never reloads a
/// model because a request asked for a different one.
pub const NUM_CTX: u64 = 8192;

/// Everything a query needs.
pub struct Ctx {
    pub client: Client,
    /// The Ollama pool.
    pub sched: Arc<Scheduler>,
    /// The llama.cpp coordinator, when model sharding is on.
    pub coordinator: Option<Arc<Scheduler>>,
    /// (task distribution, model sharding): the routing path.
    pub route: (bool, bool),
    pub num_predict: u64,
    pub model: String,
    pub synthesis_model: Option<String>,
    pub timeouts: Timeouts,
    pub agents: Vec<Agent>,
    pub observer: Arc<dyn Observer>,
}

impl Ctx {
    /// The agent for a role; the built-in one when the loaded set lacks it.
    pub fn agent(&self, name: &str) -> &Agent {
        agents::find(&self.agents, name).unwrap_or_else(|| agents::builtin_role(name))
    }

    pub fn synthesis_model(&self) -> &str {
        self.synthesis_model.as_deref().unwrap_or(&self.model)
    }

    /// The scheduler a request for `model` goes through (pool or coordinator).
    pub fn sched_for(&self, model: &str) -> &Arc<Scheduler> {
        match (
            decide(self.route.0, self.route.1, model).0,
            &self.coordinator,
        ) {
            (Target::Coordinator, Some(c)) => c,
            _ => &self.sched,
        }
    }
}

/// An agent's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub fields: Map<String, Value>,
    pub attribution: Attribution,
    /// False when the reply never became the agent's JSON and its text was kept as is.
    pub structured: bool,
}

/// Ask `agent` with `user`, on any node the scheduler picks; `fields` overrides
/// the agent's required fields (e.g. a synthesis asks the Editor for one field).
pub async fn call(
    ctx: &Ctx,
    agent: &Agent,
    label: &str,
    user: String,
    model: &str,
    fields: Option<&[(String, FieldType)]>,
) -> Result<Reply, TaskFailed> {
    let fields: Vec<(String, FieldType)> = fields
        .map(|f| f.to_vec())
        .unwrap_or_else(|| agent.required_fields.clone());
    let system = prompts::system(agent, &fields);
    let notice = |line: String| ctx.observer.notice(line);
    let result = ctx
        .sched_for(model)
        .run(
            label,
            model,
            |node| {
                let system = system.clone();
                let fields = fields.clone();
                let user = user.clone();
                async move {
                    ctx.observer.started(label, node.name());
                    let r =
                        ask_with_repair(ctx, &node, label, &system, &user, model, &fields).await;
                    ctx.observer.finished(label);
                    r
                }
            },
            &notice,
        )
        .await?;
    let ((fields, structured), attribution) = result;
    Ok(Reply {
        fields,
        attribution,
        structured,
    })
}

async fn chat(
    ctx: &Ctx,
    node: &Node,
    label: &str,
    system: &str,
    user: &str,
    model: &str,
) -> Result<(String, Option<f64>), ClientError> {
    let messages = vec![Message::system(system), Message::user(user)];
    let chars = AtomicUsize::new(0);
    let on_text = |piece: &str| {
        let n = chars.fetch_add(piece.len(), Ordering::Relaxed) + piece.len();
        ctx.observer.progress(label, n);
    };
    let c = match node.api {
        Api::OpenAi => {
            ctx.client
                .openai_chat(
                    node.url(),
                    model,
                    &messages,
                    ctx.num_predict,
                    ctx.timeouts,
                    on_text,
                )
                .await?
        }
        Api::Ollama => {
            let req = ChatRequest {
                model: model.to_string(),
                messages,
                stream: true,
                format: Some(json!("json")),
                options: Some(json!({ "num_predict": ctx.num_predict, "num_ctx": NUM_CTX })),
                keep_alive: None,
            };
            ctx.client
                .chat(node.url(), &req, ctx.timeouts, on_text)
                .await?
        }
    };
    Ok((c.text.clone(), c.tokens_per_second()))
}

/// One request, and a second stating the schema if the first lacked fields.
async fn ask_with_repair(
    ctx: &Ctx,
    node: &Node,
    label: &str,
    system: &str,
    user: &str,
    model: &str,
    fields: &[(String, FieldType)],
) -> Result<((Map<String, Value>, bool), Option<f64>), ClientError> {
    let (text, tps) = chat(ctx, node, label, system, user, model).await?;
    let (first, problems) = usable(&text, fields);
    if problems.is_empty() {
        return Ok(((first.expect("no problems means an object"), true), tps));
    }
    let (text2, tps2) = chat(
        ctx,
        node,
        label,
        system,
        &prompts::fix_fields(user, &problems, fields),
        model,
    )
    .await?;
    let (second, problems2) = usable(&text2, fields);
    if problems2.is_empty() {
        return Ok(((second.expect("an object"), true), tps2.or(tps)));
    }
    // Keep what we have: the better object, else the first reply's text.
    let best = match (first, second) {
        (Some(a), Some(b)) => Some(if problems2.len() < problems.len() {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    };
    let kept = match best {
        Some(obj)
            if obj
                .values()
                .any(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())) =>
        {
            obj
        }
        _ => {
            let mut m = Map::new();
            let main = fields
                .iter()
                .find(|(_, t)| *t == FieldType::String)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| "content".into());
            m.insert(main, Value::String(text.trim().to_string()));
            m
        }
    };
    ctx.observer.notice(format!(
        "⚠️  {label}: the reply did not match the agent's fields ({}); its text is used as it is",
        problems2.join("; ")
    ));
    Ok(((kept, false), tps2.or(tps)))
}

fn usable(text: &str, fields: &[(String, FieldType)]) -> (Option<Map<String, Value>>, Vec<String>) {
    match repair::extract_object(text) {
        None => (None, vec!["the reply is not a JSON object".to_string()]),
        Some(mut obj) => {
            repair::coerce(&mut obj, fields);
            let problems = repair::check_fields(&obj, fields);
            (Some(obj), problems)
        }
    }
}
