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
use crate::command::Route;
use crate::nodes::Api;
use crate::ollama::types::{ChatRequest, Completion, Message};
use crate::ollama::{Client, ClientError, Timeouts};
use crate::scheduler::{Attempt, Attribution, Measured, Pool, Scheduler, Task, TaskFailed};
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
    /// The process-wide host-aware queue.
    pub sched: Arc<Scheduler>,
    /// The Ollama nodes this query may use.
    pub pool: Pool,
    /// The llama.cpp coordinator, when model sharding is on.
    pub coordinator: Option<Pool>,
    pub route: Route,
    pub num_predict: u64,
    pub model: String,
    pub synthesis_model: Option<String>,
    /// Connect, silence and total limits from the settings.
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

    /// The pool a request for `model` goes to (Ollama nodes or the coordinator).
    pub fn pool_for(&self, model: &str) -> &Pool {
        match (decide(self.route, model).0, &self.coordinator) {
            (Target::Coordinator, Some(c)) => c,
            _ => &self.pool,
        }
    }

    /// Physical hosts in the Ollama pool.
    pub fn hosts(&self) -> usize {
        self.pool.hosts()
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
    let task = Task {
        label,
        model,
        prompt_tokens: (system.len() + user.len()) / 4,
        limits: ctx.timeouts,
    };
    let result = ctx
        .sched
        .run(
            ctx.pool_for(model),
            &task,
            |a: Attempt| {
                let (system, user, fields) = (system.clone(), user.clone(), fields.clone());
                async move {
                    ctx.observer.started(label, a.node.name());
                    ask_with_repair(ctx, &a, label, &system, &user, model, &fields).await
                }
            },
            &notice,
        )
        .await;
    ctx.observer.finished(label);
    let ((fields, structured), attribution) = result?;
    Ok(Reply {
        fields,
        attribution,
        structured,
    })
}

/// What a finished request measured, for the node's latency model.
pub fn measured(c: &Completion) -> Measured {
    Measured {
        first_token_ms: c.first_token_ms,
        tokens_per_sec: c.tokens_per_second(),
        prompt_tokens_per_sec: c.prompt_tokens_per_second(),
        load_ms: (c.load_duration > 0).then(|| c.load_duration as f64 / 1e6),
        reply_tokens: (c.eval_count > 0).then_some(c.eval_count),
    }
}

async fn chat(
    ctx: &Ctx,
    a: &Attempt,
    label: &str,
    system: &str,
    user: &str,
    model: &str,
) -> Result<Completion, ClientError> {
    let messages = vec![Message::system(system), Message::user(user)];
    let chars = AtomicUsize::new(0);
    let on_text = |piece: &str| {
        a.progress.piece(piece);
        let n = chars.fetch_add(piece.len(), Ordering::Relaxed) + piece.len();
        ctx.observer.progress(label, n);
    };
    match a.node.api {
        Api::OpenAi => {
            ctx.client
                .openai_chat(
                    a.node.url(),
                    model,
                    &messages,
                    ctx.num_predict,
                    a.timeouts,
                    on_text,
                )
                .await
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
                .chat(a.node.url(), &req, a.timeouts, on_text)
                .await
        }
    }
}

/// One request, and a second stating the schema if the first lacked fields.
async fn ask_with_repair(
    ctx: &Ctx,
    a: &Attempt,
    label: &str,
    system: &str,
    user: &str,
    model: &str,
    fields: &[(String, FieldType)],
) -> Result<((Map<String, Value>, bool), Measured), ClientError> {
    let reply = chat(ctx, a, label, system, user, model).await?;
    let m = measured(&reply);
    let text = reply.text;
    let (first, problems) = usable(&text, fields);
    if let (Some(obj), true) = (&first, problems.is_empty()) {
        return Ok(((obj.clone(), true), m));
    }
    let again = chat(
        ctx,
        a,
        label,
        system,
        &prompts::fix_fields(user, &problems, fields),
        model,
    )
    .await?;
    let m = Measured {
        tokens_per_sec: m.tokens_per_sec.or(again.tokens_per_second()),
        ..m
    };
    let (second, problems2) = usable(&again.text, fields);
    if let (Some(obj), true) = (&second, problems2.is_empty()) {
        return Ok(((obj.clone(), true), m));
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
    Ok(((kept, false), m))
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
