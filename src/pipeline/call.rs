//! Calling one agent: a streamed `/api/chat` request through the scheduler, to
//! a node whose context window the prompt fits (a request that fits none is
//! not sent), with the node's fixed `num_ctx` and a reply no longer than the
//! room left. The request carries the reply's JSON Schema (`schema.rs`) where
//! the node takes one, else `format: "json"` (an Ollama before 0.5.0). A reply
//! that is not the agent's object all the same (an old node, a server that
//! ignores the schema, a reply cut off by the length limit) goes through the
//! repair path: the object found or closed and coerced, one follow-up request
//! when fields are missing, and the plain text kept (with a warning) when
//! nothing else works. Every reply is cleaned of prompt text it repeats, and
//! counted (`metrics.replies`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::agents::{self, Agent};
use super::observer::Observer;
use super::prompts;
use super::repair;
use super::schema::{self, Field, FieldType};
use super::{budget, clean};
use crate::config::choices::Route;
use crate::nodes::{context, release, Api, Node};
use crate::ollama::types::{ChatRequest, Completion, Message, Options};
use crate::ollama::{Client, ClientError, ErrorKind, OpenAiChat, Timeouts};
use crate::prompt::Prompt;
use crate::report::ReplyCounts;
use crate::scheduler::{
    Attempt, AttemptKind, Attribution, Measured, Pool, Scheduler, Task, TaskFailed,
};
use crate::sharding::route::{decide, Target};

/// `num_predict` (Ollama) / `max_tokens` (llama-server) for every agent request,
/// unless the `num_predict` setting says otherwise (the room left in the
/// node's context caps it).
pub const NUM_PREDICT: u64 = 4096;

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
    /// How the agents' replies came back, and the retries and hedges
    /// started, counted as they come.
    pub replies: Tally,
}

/// `ReplyCounts` as replies come in from tasks running at once, and every
/// retry and hedge started (whether its task then answered or not).
#[derive(Debug, Default)]
pub struct Tally {
    replies: Mutex<ReplyCounts>,
    retries: AtomicUsize,
    hedges: AtomicUsize,
}

impl Tally {
    /// An attempt of `kind` starts.
    fn started(&self, kind: &AttemptKind) {
        match kind {
            AttemptKind::First => {}
            AttemptKind::Retry { .. } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            AttemptKind::Hedge { .. } => {
                self.hedges.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Retries started so far (after a failed attempt).
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }

    /// Hedges started so far (copies of a slow attempt).
    pub fn hedges(&self) -> usize {
        self.hedges.load(Ordering::Relaxed)
    }

    fn add(&self, outcome: Outcome, with_schema: bool) {
        let mut c = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        c.total += 1;
        match outcome {
            Outcome::Valid => c.valid_first_try += 1,
            Outcome::Repaired => c.repaired += 1,
            Outcome::AsText => c.as_text += 1,
        }
        if with_schema {
            c.with_schema += 1;
        } else {
            c.json_only += 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> ReplyCounts {
        *self.replies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ctx {
    /// The context window to plan a request for `model` with: the largest
    /// any node of its pool gives (`widest`, for one big request, which then
    /// goes to a node where it fits), or the smallest (for work every node
    /// may take). A node whose context is unknown counts as `DEFAULT_CONTEXT`.
    pub fn context(&self, model: &str, widest: bool) -> u64 {
        let sizes = self
            .pool_for(model)
            .nodes()
            .iter()
            .map(|n| context::usable(n, model).unwrap_or(budget::DEFAULT_CONTEXT));
        let pick = if widest { sizes.max() } else { sizes.min() };
        pick.unwrap_or(budget::DEFAULT_CONTEXT)
    }

    /// Bytes of material a request to `agent` on `model` can quote beside its
    /// own text (about `own` bytes) and a fair reply, on the widest node.
    pub(crate) fn room(&self, agent: &Agent, model: &str, own: usize) -> usize {
        let context = self.context(model, true);
        let system = prompts::system(agent, &agent.required_fields);
        let reply = budget::reply_reserve(context, self.num_predict);
        budget::material_room(context, &system, reply).saturating_sub(own)
    }

    /// Learn every node's context for the models this query uses (once per
    /// node and model in a session), and its version (once per node: whether
    /// it takes a JSON Schema for a reply).
    pub(crate) async fn learn_contexts(&self) {
        let mut models = vec![self.model.as_str()];
        if let Some(s) = &self.synthesis_model {
            models.push(s);
        }
        let mut nodes = self.pool.nodes().to_vec();
        if let Some(c) = &self.coordinator {
            nodes.extend(c.nodes().iter().cloned());
        }
        context::learn_all(&self.client, &nodes, &models).await;
        // After the contexts, on the connections they opened (no more at once).
        futures_util::future::join_all(nodes.iter().map(|n| release::learn(&self.client, n))).await;
    }

    /// The agent for a role; the built-in one when the loaded set lacks it.
    pub fn agent(&self, name: &str) -> &Agent {
        agents::find(&self.agents, name).unwrap_or_else(|| agents::builtin_role(name))
    }

    pub fn synthesis_model(&self) -> &str {
        self.synthesis_model.as_deref().unwrap_or(&self.model)
    }

    /// The pool a request for `model` goes to (Ollama nodes or the coordinator).
    pub(crate) fn pool_for(&self, model: &str) -> &Pool {
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

/// An agent on a model: what every call of one phase shares. `ask` is `call`
/// with the agent's own fields, `room` is `Ctx::room` for this agent and model.
#[derive(Clone, Copy)]
pub(crate) struct Role<'a> {
    ctx: &'a Ctx,
    agent: &'a Agent,
    model: &'a str,
}

impl<'a> Role<'a> {
    /// The agent for `name` (see `Ctx::agent`) on `model`.
    pub fn new(ctx: &'a Ctx, name: &str, model: &'a str) -> Role<'a> {
        Role {
            ctx,
            agent: ctx.agent(name),
            model,
        }
    }

    /// Ask the agent with `prompt`, for its own required fields.
    pub async fn ask(self, label: &str, prompt: impl Into<Prompt>) -> Result<Reply, TaskFailed> {
        call(self.ctx, self.agent, label, prompt, self.model, None).await
    }

    /// Ask the agent with `prompt`, for `fields` instead of its own.
    pub async fn ask_for(
        self,
        label: &str,
        prompt: impl Into<Prompt>,
        fields: &[Field],
    ) -> Result<Reply, TaskFailed> {
        call(
            self.ctx,
            self.agent,
            label,
            prompt,
            self.model,
            Some(fields),
        )
        .await
    }

    /// The agent's own reply fields.
    pub fn fields(self) -> &'a [Field] {
        &self.agent.required_fields
    }

    /// Bytes of material a request to this agent can quote beside about `own`
    /// bytes of its own text.
    pub(crate) fn room(self, own: usize) -> usize {
        self.ctx.room(self.agent, self.model, own)
    }
}

/// An agent's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub fields: Map<String, Value>,
    pub attribution: Attribution,
    /// How the reply became the agent's object (or did not).
    pub outcome: Outcome,
}

/// How a reply became the agent's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was the object, every field there and of its type, as it came.
    Valid,
    /// The repair path made it one: found in other text, closed where the
    /// length limit cut it, coerced, or asked for again.
    Repaired,
    /// It never became the object; its text is used as it is.
    AsText,
}

/// Ask `agent` with `user`, on any node the scheduler picks whose context
/// the request fits; `fields` overrides the agent's required fields (e.g. a
/// synthesis asks the Editor for one field). The reply is constrained to the
/// fields' schema where the node allows, repaired into them where it is not
/// already their object, and cleaned of prompt text it repeats.
pub async fn call(
    ctx: &Ctx,
    agent: &Agent,
    label: &str,
    user: impl Into<Prompt>,
    model: &str,
    fields: Option<&[Field]>,
) -> Result<Reply, TaskFailed> {
    let user: Prompt = user.into();
    let fields: Vec<Field> = fields
        .map(|f| f.to_vec())
        .unwrap_or_else(|| agent.required_fields.clone());
    let system = prompts::system(agent, &fields);
    let schema = schema::object(&fields);
    let need = budget::prompt_tokens(&system, &user.text);
    let notice = |line: String| ctx.observer.notice(line);
    let task = Task {
        label,
        model,
        prompt_tokens: need as usize,
        limits: agent.limits(ctx.timeouts),
        own_bound: agent.timeout_secs.is_some(),
    };
    ctx.observer.queued(label);
    let pool = fitting(ctx.pool_for(model), model, need).with_priority(agent.priority);
    let request = Request {
        label,
        agent: &agent.name,
        model,
        system: &system,
        user: &user,
        fields: &fields,
        schema: &schema,
    };
    let result = ctx
        .sched
        .run(
            &pool,
            &task,
            |a: Attempt| {
                let request = &request;
                async move {
                    ctx.replies.started(&a.kind);
                    ctx.observer.attempt(label, &a.node, &a.kind);
                    ask_with_repair(ctx, &a, request).await
                }
            },
            &notice,
        )
        .await;
    ctx.observer.finished(label);
    let (got, attribution) = result?;
    ctx.replies.add(got.outcome, got.with_schema);
    Ok(Reply {
        fields: got.fields,
        attribution,
        outcome: got.outcome,
    })
}

/// One agent request, as sent to every node that tries it.
struct Request<'a> {
    label: &'a str,
    /// The agent's name (the schema's name for OpenAI-style servers).
    agent: &'a str,
    model: &'a str,
    system: &'a str,
    user: &'a Prompt,
    fields: &'a [Field],
    /// The reply's JSON Schema.
    schema: &'a Value,
}

/// What one attempt made of its reply.
struct Got {
    fields: Map<String, Value>,
    outcome: Outcome,
    /// The request carried the schema (else `format: "json"`).
    with_schema: bool,
}

/// The nodes of `pool` whose context `need` prompt tokens fit with room for a
/// reply; the whole pool when none does (its attempts then fail at once as
/// too large, without a request).
fn fitting(pool: &Pool, model: &str, need: u64) -> Pool {
    let fits: Vec<_> = pool
        .nodes()
        .iter()
        .filter(|n| {
            let c = context::usable(n, model).unwrap_or(budget::DEFAULT_CONTEXT);
            budget::reply_room(c, need).is_some()
        })
        .cloned()
        .collect();
    if fits.is_empty() || fits.len() == pool.nodes().len() {
        pool.clone()
    } else {
        pool.narrowed(fits)
    }
}

/// What a finished request measured, for the node's latency model.
pub fn measured(c: &Completion) -> Measured {
    Measured {
        first_token_ms: c.first_token_ms,
        tokens_per_sec: c.tokens_per_second(),
        prompt_tokens_per_sec: c.prompt_tokens_per_second(),
        load_ms: (c.counts.load_duration > 0).then(|| c.counts.load_duration as f64 / 1e6),
        reply_tokens: (c.counts.eval_count > 0).then_some(c.counts.eval_count),
    }
}

/// How a request to `node` must be sized: the `num_ctx` to send (Ollama) and
/// the most tokens the reply may have; too large when the prompt leaves no
/// room for a reply in the node's context.
fn sizing(
    ctx: &Ctx,
    node: &Node,
    model: &str,
    need: u64,
) -> Result<(Option<u64>, u64), ClientError> {
    let known = context::usable(node, model);
    let window = known.unwrap_or(budget::DEFAULT_CONTEXT);
    let Some(room) = budget::reply_room(window, need) else {
        return Err(ClientError::new(
            node.url(),
            ErrorKind::TooLarge {
                message: format!(
                    "about {need} tokens of prompt leave no room for a reply in {}'s context of {window} tokens (not sent)",
                    node.name()
                ),
            },
        ));
    };
    let num_ctx = (node.api == Api::Ollama).then(|| context::pin_num_ctx(node, model));
    Ok((num_ctx, room.min(ctx.num_predict)))
}

/// One request to the attempt's node: with the reply's schema where the node
/// takes one (`with_schema`), else asking for `"json"`.
async fn chat(
    ctx: &Ctx,
    a: &Attempt,
    r: &Request<'_>,
    user: &str,
    with_schema: bool,
) -> Result<Completion, ClientError> {
    let need = budget::prompt_tokens(r.system, user);
    let (num_ctx, max_reply) = sizing(ctx, &a.node, r.model, need)?;
    let messages = vec![Message::system(r.system), Message::user(user)];
    let label = r.label;
    let on_text = |piece: &str| {
        a.progress.piece(piece);
        let tokens = a.progress.pieces();
        let rate = a.progress.first_token_at().and_then(|t| {
            let secs = t.elapsed().as_secs_f64();
            (secs > 0.5).then(|| tokens.saturating_sub(1) as f64 / secs)
        });
        ctx.observer.progress(label, a.progress.chars() as usize);
        ctx.observer.streaming(label, tokens, rate);
    };
    let sent = match a.node.api {
        Api::OpenAi => {
            let response_format = with_schema.then(|| schema::response_format(r.agent, r.schema));
            ctx.client
                .openai_chat(
                    a.node.url(),
                    OpenAiChat {
                        model: r.model,
                        messages: &messages,
                        max_tokens: max_reply,
                        response_format: response_format.as_ref(),
                    },
                    a.timeouts,
                    on_text,
                )
                .await
        }
        Api::Ollama => {
            let req = ChatRequest {
                model: r.model.to_string(),
                messages,
                stream: true,
                format: Some(if with_schema {
                    r.schema.clone()
                } else {
                    json!("json")
                }),
                options: Some(
                    Options {
                        num_predict: i64::try_from(max_reply).ok(),
                        num_ctx,
                        ..Options::default()
                    }
                    .to_value(),
                ),
                keep_alive: None,
            };
            ctx.client
                .chat(a.node.url(), &req, a.timeouts, on_text)
                .await
        }
    };
    if let Err(ClientError {
        kind: ErrorKind::TooLarge { message },
        ..
    }) = &sent
    {
        // The node says how big its context is (or it is the size sent).
        context::record_refusal(&a.node, r.model, message, num_ctx);
    }
    sent
}

/// One attempt at the agent's reply (`reply_object`); a reply with no text
/// left after cleaning fails the attempt, so the scheduler retries it on
/// another host like any failed request (and the task fails, leaving a gap,
/// when no host gives text).
async fn ask_with_repair(
    ctx: &Ctx,
    a: &Attempt,
    r: &Request<'_>,
) -> Result<(Got, Measured), ClientError> {
    let (got, m) = reply_object(ctx, a, r).await?;
    if !has_text(&got.fields) && wants_text(r.fields) {
        return Err(empty_reply(a));
    }
    Ok((got, m))
}

/// The shape asks for some text: a text field, or a list that may not be
/// empty. (A Critic whose lists may all be empty has said nothing wrong by
/// leaving them so.)
fn wants_text(fields: &[Field]) -> bool {
    fields.iter().any(|f| match f.kind {
        FieldType::String => true,
        FieldType::List => f.min_items > 0,
        _ => false,
    })
}

/// The error of an attempt whose reply had no usable text.
fn empty_reply(a: &Attempt) -> ClientError {
    ClientError::new(
        a.node.url(),
        ErrorKind::BadReply {
            message: "no usable text in the reply (empty after cleaning)".into(),
        },
    )
}

/// The reply has some text: a text field, or an entry of a list, that is
/// not blank (what a part, a review or an answer is made of).
pub(crate) fn has_text(obj: &Map<String, Value>) -> bool {
    fn any(v: &Value) -> bool {
        match v {
            Value::String(s) => s.chars().any(char::is_alphanumeric),
            Value::Array(items) => items.iter().any(any),
            Value::Object(o) => o.values().any(any),
            _ => false,
        }
    }
    obj.values().any(any)
}

/// One request, with the reply's schema where the node takes one; the repair
/// path for a reply that is not the agent's object all the same: a second
/// request stating the shape if the first lacked fields and the node's context
/// has room for it. A reply cut off by the length limit keeps the fields it
/// completed. Every text is cleaned of the prompt's own words.
async fn reply_object(
    ctx: &Ctx,
    a: &Attempt,
    r: &Request<'_>,
) -> Result<(Got, Measured), ClientError> {
    let echo =
        clean::Echo::new(std::iter::once(r.system).chain(r.user.own.iter().map(String::as_str)));
    // Known since the query's start; asked here once if not (a node that
    // came in later).
    release::learn(&ctx.client, &a.node).await;
    let with_schema = release::takes_schema(&a.node);
    let got = |fields, outcome| Got {
        fields,
        outcome,
        with_schema,
    };
    let reply = chat(ctx, a, r, &r.user.text, with_schema).await?;
    let m = measured(&reply);
    let cut_off = reply.done_reason.as_deref() == Some("length");
    let text = reply.text;
    let as_sent = is_the_object(&text, r.fields);
    let (first, problems) = usable(&text, r.fields, &echo);
    if let (Some(obj), true) = (&first, problems.is_empty()) {
        let outcome = if as_sent {
            Outcome::Valid
        } else {
            Outcome::Repaired
        };
        return Ok((got(obj.clone(), outcome), m));
    }
    if let (Some(obj), true) = (&first, cut_off && complete_text(&problems, r.fields)) {
        // Cut off by the length limit after its text: asking again for the same
        // length would be cut off again.
        ctx.observer.notice(format!(
            "ℹ️  {}: the reply reached its length limit; the fields it completed are used",
            r.label
        ));
        let mut obj = obj.clone();
        fill_lists(&mut obj, r.fields);
        return Ok((got(obj, Outcome::Repaired), m));
    }
    let follow_up = prompts::fix_fields(r.user, r.fields);
    let fits = budget::reply_room(
        context::usable(&a.node, r.model).unwrap_or(budget::DEFAULT_CONTEXT),
        budget::prompt_tokens(r.system, &follow_up.text),
    )
    .is_some();
    let (second, problems2, m) = if fits {
        let again = chat(ctx, a, r, &follow_up.text, with_schema).await?;
        let m = Measured {
            tokens_per_sec: m.tokens_per_sec.or(again.tokens_per_second()),
            ..m
        };
        let (second, problems2) = usable(&again.text, r.fields, &echo);
        if let (Some(obj), true) = (&second, problems2.is_empty()) {
            return Ok((got(obj.clone(), Outcome::Repaired), m));
        }
        (second, problems2, m)
    } else {
        (None, problems.clone(), m)
    };
    // Keep what we have: the better object, else the first reply's text.
    let best = match (first, second) {
        (Some(a), Some(b)) => Some(if problems2.len() < problems.len() {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    };
    let kept = keep(best, &text, &echo, r.fields);
    if !has_text(&kept) && wants_text(r.fields) {
        // Nothing to keep: the attempt fails (see `ask_with_repair`).
        return Err(empty_reply(a));
    }
    ctx.observer.notice(format!(
        "⚠️  {}: the reply did not match the agent's fields ({}); its text is used as it is",
        r.label,
        problems2.join("; ")
    ));
    Ok((got(kept, Outcome::AsText), m))
}

/// The reply is the agent's object as it came: the whole text one JSON
/// object whose every field is there, of its type, with content.
fn is_the_object(text: &str, fields: &[Field]) -> bool {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Object(obj)) => repair::check_fields(&obj, fields).is_empty(),
        _ => false,
    }
}

/// What is kept of a reply that never matched the fields: the better object
/// (its text gathered into the main field) when it has any text, else the
/// first reply's `text`, cleaned, as the main field.
fn keep(
    best: Option<Map<String, Value>>,
    text: &str,
    echo: &clean::Echo,
    fields: &[Field],
) -> Map<String, Value> {
    match best {
        Some(mut obj)
            if obj
                .values()
                .any(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())) =>
        {
            fill_main(&mut obj, fields);
            obj
        }
        _ => {
            let mut m = Map::new();
            let main = fields
                .iter()
                .find(|f| f.kind == FieldType::String)
                .map(|f| f.name.clone())
                .unwrap_or_else(|| "content".into());
            m.insert(main, Value::String(clean::text(text, echo)));
            m
        }
    }
}

/// A reply whose text went under keys of the model's own choosing (or into
/// the keys themselves): the main text field (the first required one), when
/// missing or empty, gets all of its text in order, so none of it is lost.
fn fill_main(obj: &mut Map<String, Value>, fields: &[Field]) {
    let Some(Field { name: main, .. }) = fields.iter().find(|f| f.kind == FieldType::String) else {
        return;
    };
    if obj
        .get(main)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
    {
        return;
    }
    let mut others = obj.clone();
    others.remove(main);
    let parts = clean::texts(&others);
    if !parts.is_empty() {
        obj.insert(main.clone(), Value::String(parts.join("\n\n")));
    }
}

/// Every required text field is there: only lists (or numbers) were lost.
fn complete_text(problems: &[String], fields: &[Field]) -> bool {
    fields
        .iter()
        .filter(|f| f.kind == FieldType::String)
        .all(|f| {
            !problems
                .iter()
                .any(|p| p.starts_with(&format!("{}:", f.name)))
        })
}

/// Required lists a cut-off reply never reached become empty lists.
fn fill_lists(obj: &mut Map<String, Value>, fields: &[Field]) {
    for f in fields {
        if f.kind == FieldType::List && !obj.get(&f.name).is_some_and(Value::is_array) {
            obj.insert(f.name.clone(), Value::Array(Vec::new()));
        }
    }
}

/// The reply as the agent's object (a cut-off one closed where it stops),
/// cleaned, with what is still wrong with it.
fn usable(
    text: &str,
    fields: &[Field],
    echo: &clean::Echo,
) -> (Option<Map<String, Value>>, Vec<String>) {
    match repair::extract_object(text).or_else(|| repair::close_truncated(text)) {
        None => (None, vec!["the reply is not a JSON object".to_string()]),
        Some(mut obj) => {
            clean::fields(&mut obj, echo);
            repair::coerce(&mut obj, fields);
            let problems = repair::check_fields(&obj, fields);
            (Some(obj), problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_with_only_blanks_has_no_text() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        assert!(!has_text(&obj(json!({"context": "  \n "}))));
        assert!(!has_text(&obj(
            json!({"issues": [], "biases": [" "], "score": 0.9})
        )));
        assert!(!has_text(&obj(
            json!({"context": "…", "parts": [{"title": ""}]})
        )));
        assert!(has_text(&obj(
            json!({"context": "", "key_points": ["Paris"]})
        )));
        assert!(has_text(&obj(json!({"parts": [{"title": "Vaccines"}]}))));
    }

    #[test]
    fn only_a_shape_that_asks_for_text_can_come_back_empty() {
        let critic = super::agents::builtin_role("Critic");
        assert!(
            !wants_text(&critic.required_fields),
            "every list may be empty"
        );
        let part = super::agents::builtin_role("ChunkWriter");
        assert!(wants_text(&part.required_fields));
        assert!(wants_text(&schema::outline(3)));
    }
}
