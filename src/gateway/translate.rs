//! Shapes: OpenAI requests as Ollama requests (for Ollama nodes) and Ollama
//! requests as OpenAI ones (for llama.cpp's `llama-server`, the coordinator);
//! replies of either kind read into neutral `Piece`s, and pieces written out
//! for either kind of client, streamed (NDJSON or server-sent events) or whole.
//! Pure functions: no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::errors::ApiError;

/// One piece of a reply, whichever API it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piece {
    /// The Ollama line exactly as the node sent it (relayed as is when the
    /// client speaks the same shape).
    pub raw: Option<Bytes>,
    pub content: String,
    pub thinking: String,
    /// In Ollama's shape: `{"function": {"name", "arguments": {…}}}`.
    pub tool_calls: Vec<Value>,
    pub done: Option<Done>,
}

impl Piece {
    /// Carries something a client would see (the first such piece decides
    /// which attempt won).
    pub fn meaningful(&self) -> bool {
        !self.content.is_empty()
            || !self.thinking.is_empty()
            || !self.tool_calls.is_empty()
            || self.done.is_some()
    }
}

/// The end of a reply: why it stopped, and Ollama's counts (durations in ns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Done {
    pub reason: String,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
    pub total_duration: u64,
    pub load_duration: u64,
    /// The node's final Ollama line, parsed (keeps fields such as `context`).
    pub last: Option<Map<String, Value>>,
}

/// Ollama's reply shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Generate,
}

/// A field of a JSON object, `null` when absent (indexing a `Map` would panic).
pub fn field<'a>(m: &'a Map<String, Value>, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    m.get(key).unwrap_or(&NULL)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `created_at` as Ollama writes it (RFC 3339, UTC).
pub fn created_at() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// A fresh id such as `chatcmpl-1a2b3c`.
pub fn fresh_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{prefix}-{:x}{n:x}", t & 0xffff_ffff_ffff)
}

// ---- requests: OpenAI → Ollama -------------------------------------------------

fn stop_list(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(json!([s])),
        Value::Array(a) => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// OpenAI sampling fields as Ollama `options`.
fn openai_options(req: &Map<String, Value>) -> Map<String, Value> {
    let mut o = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            o.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .filter(|v| !v.is_null())
    {
        o.insert("num_predict".into(), n.clone());
    }
    if let Some(s) = req.get("stop").and_then(stop_list) {
        o.insert("stop".into(), s);
    }
    o
}

/// `response_format` as Ollama's `format`.
fn openai_format(req: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let Some(rf) = req.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match rf["type"].as_str() {
        Some("json_object") => Ok(Some(json!("json"))),
        Some("json_schema") => Ok(rf["json_schema"]
            .get("schema")
            .cloned()
            .or(Some(json!("json")))),
        Some("text") | None => Ok(None),
        Some(other) => Err(ApiError::bad_request(format!(
            "response_format type `{other}` is not supported (json_object, json_schema or text)"
        ))
        .with_param("response_format")),
    }
}

/// An image part's data as base64 (only `data:` URLs: the gateway never fetches).
fn image_data(part: &Value) -> Result<String, ApiError> {
    let url = match &part["image_url"] {
        Value::String(s) => s.as_str(),
        v => v["url"].as_str().unwrap_or(""),
    };
    match url
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
    {
        Some((_, data)) => Ok(data.to_string()),
        None => Err(ApiError::bad_request(
            "image_url must be a data: URL with base64 content (the gateway does not fetch URLs)",
        )
        .with_param("messages")),
    }
}

/// OpenAI `tool_calls` (arguments as JSON text) in Ollama's shape (arguments as an object).
fn tool_calls_to_ollama(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let f = &c["function"];
            let args = match &f["arguments"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
                v if v.is_object() => v.clone(),
                _ => json!({}),
            };
            json!({"function": {"name": f["name"], "arguments": args}})
        })
        .collect()
}

fn openai_messages(req: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let Some(msgs) = req.get("messages").and_then(|m| m.as_array()) else {
        return Err(ApiError::bad_request("messages must be a list").with_param("messages"));
    };
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let role = m["role"].as_str().unwrap_or("user");
        let mut msg = Map::new();
        msg.insert("role".into(), json!(role));
        let mut images = Vec::new();
        let content = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                let mut text = String::new();
                for p in parts {
                    match p["type"].as_str() {
                        Some("text") => text.push_str(p["text"].as_str().unwrap_or("")),
                        Some("image_url") => images.push(json!(image_data(p)?)),
                        _ => {}
                    }
                }
                text
            }
            _ => String::new(),
        };
        msg.insert("content".into(), json!(content));
        if !images.is_empty() {
            msg.insert("images".into(), Value::Array(images));
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            msg.insert(
                "tool_calls".into(),
                Value::Array(tool_calls_to_ollama(calls)),
            );
        }
        if let Some(name) = m["name"].as_str().filter(|_| role == "tool") {
            msg.insert("tool_name".into(), json!(name));
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

fn check_n(req: &Map<String, Value>) -> Result<(), ApiError> {
    match req.get("n").and_then(|n| n.as_u64()) {
        Some(n) if n > 1 => Err(ApiError::bad_request(
            "n > 1 is not supported: ask once per completion",
        )
        .with_param("n")),
        _ => Ok(()),
    }
}

/// An OpenAI `/v1/chat/completions` body as an Ollama `/api/chat` body (streamed).
pub fn chat_request_from_openai(req: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    check_n(req)?;
    let mut out = Map::new();
    out.insert("model".into(), field(req, "model").clone());
    out.insert("messages".into(), Value::Array(openai_messages(req)?));
    out.insert("stream".into(), json!(true));
    let options = openai_options(req);
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    if let Some(f) = openai_format(req)? {
        out.insert("format".into(), f);
    }
    if let Some(t) = req.get("tools").filter(|t| t.is_array()) {
        out.insert("tools".into(), t.clone());
    }
    Ok(out)
}

/// An OpenAI `/v1/completions` body as an Ollama `/api/generate` body (streamed).
pub fn generate_request_from_openai(
    req: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    check_n(req)?;
    let prompt = match &req.get("prompt").cloned().unwrap_or(Value::Null) {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or("").to_string()
        }
        Value::Null => String::new(),
        _ => {
            return Err(
                ApiError::bad_request("prompt must be a string (one prompt per request)")
                    .with_param("prompt"),
            )
        }
    };
    let mut out = Map::new();
    out.insert("model".into(), field(req, "model").clone());
    out.insert("prompt".into(), json!(prompt));
    out.insert("stream".into(), json!(true));
    if let Some(s) = req.get("suffix").filter(|s| s.is_string()) {
        out.insert("suffix".into(), s.clone());
    }
    let options = openai_options(req);
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    Ok(out)
}

// ---- requests: Ollama → OpenAI (the coordinator) --------------------------------

fn ollama_message_to_openai(m: &Value) -> Value {
    let role = m["role"].as_str().unwrap_or("user");
    let text = m["content"].as_str().unwrap_or("");
    let content = match m["images"].as_array() {
        Some(imgs) if !imgs.is_empty() => {
            let mut parts = vec![json!({"type": "text", "text": text})];
            for i in imgs.iter().filter_map(|i| i.as_str()) {
                parts.push(json!({"type": "image_url",
                                  "image_url": {"url": format!("data:image/jpeg;base64,{i}")}}));
            }
            Value::Array(parts)
        }
        _ => json!(text),
    };
    let mut out = json!({"role": role, "content": content});
    if let Some(calls) = m["tool_calls"].as_array() {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": format!("call_{i}"), "type": "function", "function": {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"].to_string(),
                }})
            })
            .collect();
        out["tool_calls"] = Value::Array(calls);
    }
    out
}

/// Ollama `options` and `format` as OpenAI fields (llama-server reads them all).
fn openai_fields_from_ollama(
    req: &Map<String, Value>,
    default_max: u64,
    out: &mut Map<String, Value>,
) {
    let o = req.get("options").and_then(|o| o.as_object());
    let get = |k: &str| o.and_then(|o| o.get(k)).filter(|v| !v.is_null());
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("repeat_penalty", "repeat_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("stop", "stop"),
    ] {
        if let Some(v) = get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    let max = get("num_predict")
        .and_then(|v| v.as_i64())
        .filter(|n| *n > 0)
        .map(|n| n as u64)
        .unwrap_or(default_max);
    out.insert("max_tokens".into(), json!(max));
    match req.get("format") {
        Some(Value::String(s)) if s == "json" => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(schema @ Value::Object(_)) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}),
            );
        }
        _ => {}
    }
    if let Some(t) = req.get("tools").filter(|t| t.is_array()) {
        out.insert("tools".into(), t.clone());
    }
    out.insert("stream".into(), json!(true));
    out.insert("stream_options".into(), json!({"include_usage": true}));
}

/// An Ollama `/api/chat` or `/api/generate` body as an OpenAI chat body for the
/// coordinator (always streamed, with an explicit `max_tokens`).
pub fn openai_request_from_ollama(
    req: &Map<String, Value>,
    shape: Shape,
    default_max: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("model".into(), field(req, "model").clone());
    let messages: Vec<Value> = match shape {
        Shape::Chat => req
            .get("messages")
            .and_then(|m| m.as_array())
            .map(|m| m.iter().map(ollama_message_to_openai).collect())
            .unwrap_or_default(),
        Shape::Generate => {
            let mut m = Vec::new();
            if let Some(s) = req.get("system").and_then(|s| s.as_str()) {
                m.push(json!({"role": "system", "content": s}));
            }
            let user = json!({"role": "user", "content": field(req, "prompt").as_str().unwrap_or(""),
                              "images": req.get("images").cloned().unwrap_or(Value::Null)});
            m.push(ollama_message_to_openai(&user));
            m
        }
    };
    out.insert("messages".into(), Value::Array(messages));
    openai_fields_from_ollama(req, default_max, &mut out);
    out
}

/// An OpenAI chat body from an OpenAI client, for the coordinator: streamed,
/// with usage, and a `max_tokens` when the client named none.
pub fn openai_request_for_coordinator(
    req: &Map<String, Value>,
    default_max: u64,
) -> Map<String, Value> {
    let mut out = req.clone();
    if !out.contains_key("max_tokens") && !out.contains_key("max_completion_tokens") {
        out.insert("max_tokens".into(), json!(default_max));
    }
    out.insert("stream".into(), json!(true));
    out.insert("stream_options".into(), json!({"include_usage": true}));
    out
}

// ---- replies: reading ------------------------------------------------------------

/// Why a reply line could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum LineError {
    /// The node reported an error (`{"error": …}`).
    Model(String),
    /// Not what the API sends.
    Bad(String),
}

/// One NDJSON line of an Ollama reply.
pub fn ollama_piece(line: &[u8]) -> Result<Piece, LineError> {
    let v: Map<String, Value> = serde_json::from_slice(line).map_err(|e| {
        LineError::Bad(format!(
            "a reply line is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
                .chars()
                .take(120)
                .collect::<String>()
        ))
    })?;
    if let Some(e) = v.get("error") {
        return Err(LineError::Model(match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    let msg = v.get("message");
    let text = |k: &str| -> String {
        msg.and_then(|m| m.get(k))
            .or_else(|| v.get(if k == "content" { "response" } else { k }))
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string()
    };
    let tool_calls = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    let done = v.get("done").and_then(|d| d.as_bool()).unwrap_or(false);
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let done = done.then(|| Done {
        reason: v
            .get("done_reason")
            .and_then(|r| r.as_str())
            .unwrap_or("stop")
            .to_string(),
        prompt_eval_count: n("prompt_eval_count"),
        prompt_eval_duration: n("prompt_eval_duration"),
        eval_count: n("eval_count"),
        eval_duration: n("eval_duration"),
        total_duration: n("total_duration"),
        load_duration: n("load_duration"),
        last: None,
    });
    let mut piece = Piece {
        raw: Some(Bytes::copy_from_slice(line)),
        content: text("content"),
        thinking: text("thinking"),
        tool_calls,
        done,
    };
    if let Some(d) = &mut piece.done {
        d.last = Some(v);
    }
    Ok(piece)
}

/// Reads an OpenAI server-sent-event stream (llama-server) into pieces.
#[derive(Debug, Default)]
pub struct SseReader {
    /// Tool calls arrive in fragments: (id, name, arguments text) by index.
    tools: Vec<(String, String, String)>,
    done: Option<Done>,
    finished: bool,
}

impl SseReader {
    /// The stream said `[DONE]` (or ended after a finish reason).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// One line of the stream: pieces it completes (the last one carries `done`).
    pub fn line(&mut self, line: &[u8]) -> Result<Vec<Piece>, LineError> {
        let text = String::from_utf8_lossy(line);
        let Some(data) = text.strip_prefix("data:").map(str::trim) else {
            return Ok(Vec::new());
        };
        if data == "[DONE]" {
            return Ok(self.end());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| LineError::Bad(format!("an event is not JSON ({e})")))?;
        if let Some(e) = v.get("error") {
            return Err(LineError::Model(
                e.get("message")
                    .and_then(|m| m.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| e.to_string()),
            ));
        }
        let d = self.done.get_or_insert_with(Done::default);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            d.prompt_eval_count = u["prompt_tokens"].as_u64().unwrap_or(d.prompt_eval_count);
            d.eval_count = u["completion_tokens"].as_u64().unwrap_or(d.eval_count);
        }
        if let Some(t) = v.get("timings") {
            d.prompt_eval_count = t["prompt_n"].as_u64().unwrap_or(d.prompt_eval_count);
            d.eval_count = t["predicted_n"].as_u64().unwrap_or(d.eval_count);
            if let Some(ms) = t["prompt_ms"].as_f64() {
                d.prompt_eval_duration = (ms * 1e6) as u64;
            }
            if let Some(ms) = t["predicted_ms"].as_f64() {
                d.eval_duration = (ms * 1e6) as u64;
            }
        }
        let choice = &v["choices"][0];
        if let Some(r) = choice["finish_reason"].as_str() {
            d.reason = match r {
                "length" => "length",
                _ => "stop",
            }
            .to_string();
        }
        let delta = &choice["delta"];
        for f in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = f["index"].as_u64().unwrap_or(0) as usize;
            while self.tools.len() <= i {
                self.tools.push(Default::default());
            }
            let t = &mut self.tools[i];
            if let Some(id) = f["id"].as_str() {
                t.0 = id.to_string();
            }
            if let Some(n) = f["function"]["name"].as_str() {
                t.1.push_str(n);
            }
            if let Some(a) = f["function"]["arguments"].as_str() {
                t.2.push_str(a);
            }
        }
        let piece = Piece {
            raw: None,
            content: delta["content"]
                .as_str()
                .or_else(|| choice["text"].as_str())
                .unwrap_or("")
                .to_string(),
            thinking: delta["reasoning_content"]
                .as_str()
                .or_else(|| delta["reasoning"].as_str())
                .unwrap_or("")
                .to_string(),
            tool_calls: Vec::new(),
            done: None,
        };
        Ok(if piece.meaningful() {
            vec![piece]
        } else {
            Vec::new()
        })
    }

    /// The body ended: the final pieces if a finish reason was seen, else none
    /// (the reply was cut short).
    pub fn end_of_body(&mut self) -> Option<Vec<Piece>> {
        if self.finished {
            return Some(Vec::new());
        }
        let seen = self.done.as_ref().is_some_and(|d| !d.reason.is_empty());
        seen.then(|| self.end())
    }

    fn end(&mut self) -> Vec<Piece> {
        self.finished = true;
        let mut out = Vec::new();
        let tools: Vec<Value> = self
            .tools
            .drain(..)
            .map(|(_, name, args)| {
                let args: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
                json!({"function": {"name": name, "arguments": args}})
            })
            .collect();
        if !tools.is_empty() {
            out.push(Piece {
                tool_calls: tools,
                ..Default::default()
            });
        }
        let mut done = self.done.take().unwrap_or_default();
        if done.reason.is_empty() {
            done.reason = "stop".into();
        }
        out.push(Piece {
            done: Some(done),
            ..Default::default()
        });
        out
    }
}

// ---- replies: writing for Ollama clients -------------------------------------------

/// Writes pieces as Ollama NDJSON lines of one shape.
#[derive(Debug, Clone)]
pub struct OllamaOut {
    pub shape: Shape,
    pub model: String,
    /// The node speaks the same shape: relay its lines as they came.
    pub relay_raw: bool,
}

impl OllamaOut {
    fn base(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("model".into(), json!(self.model));
        m.insert("created_at".into(), json!(created_at()));
        m
    }

    fn put_text(&self, m: &mut Map<String, Value>, content: &str, thinking: &str, tools: &[Value]) {
        match self.shape {
            Shape::Chat => {
                let mut msg = json!({"role": "assistant", "content": content});
                if !thinking.is_empty() {
                    msg["thinking"] = json!(thinking);
                }
                if !tools.is_empty() {
                    msg["tool_calls"] = Value::Array(tools.to_vec());
                }
                m.insert("message".into(), msg);
            }
            Shape::Generate => {
                m.insert("response".into(), json!(content));
                if !thinking.is_empty() {
                    m.insert("thinking".into(), json!(thinking));
                }
            }
        }
    }

    fn put_done(m: &mut Map<String, Value>, d: &Done) {
        m.insert("done".into(), json!(true));
        m.insert("done_reason".into(), json!(d.reason));
        for (k, v) in [
            ("total_duration", d.total_duration),
            ("load_duration", d.load_duration),
            ("prompt_eval_count", d.prompt_eval_count),
            ("prompt_eval_duration", d.prompt_eval_duration),
            ("eval_count", d.eval_count),
            ("eval_duration", d.eval_duration),
        ] {
            m.insert(k.into(), json!(v));
        }
    }

    /// One streamed line for a piece.
    pub fn line(&self, p: &Piece) -> Bytes {
        if self.relay_raw {
            if let Some(raw) = &p.raw {
                let mut v = Vec::with_capacity(raw.len() + 1);
                v.extend_from_slice(raw);
                v.push(b'\n');
                return Bytes::from(v);
            }
        }
        let mut m = self.base();
        self.put_text(&mut m, &p.content, &p.thinking, &p.tool_calls);
        match &p.done {
            Some(d) => Self::put_done(&mut m, d),
            None => {
                m.insert("done".into(), json!(false));
            }
        }
        ndjson(&Value::Object(m))
    }

    /// The whole reply as one object (`"stream": false`).
    pub fn whole(&self, c: &Collected) -> Value {
        let mut m = match (&c.done.last, self.relay_raw) {
            (Some(last), true) => last.clone(),
            _ => {
                let mut m = self.base();
                Self::put_done(&mut m, &c.done);
                m
            }
        };
        self.put_text(&mut m, &c.content, &c.thinking, &c.tool_calls);
        Value::Object(m)
    }
}

/// `{"error": msg}` as a line (a reply that broke after it began).
pub fn ollama_error_line(msg: &str) -> Bytes {
    ndjson(&json!({ "error": msg }))
}

fn ndjson(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A whole reply, gathered from its pieces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<Value>,
    pub done: Done,
}

impl Collected {
    pub fn add(&mut self, p: Piece) {
        self.content.push_str(&p.content);
        self.thinking.push_str(&p.thinking);
        self.tool_calls.extend(p.tool_calls);
        if let Some(d) = p.done {
            self.done = d;
        }
    }
}

// ---- replies: writing for OpenAI clients -------------------------------------------

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// `data: [DONE]`.
pub fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// An error event (a reply that broke after it began); OpenAI's client raises it.
pub fn sse_error(msg: &str) -> Bytes {
    sse(&json!({"error": {"message": msg, "type": "api_error", "param": null, "code": null}}))
}

fn usage(d: &Done) -> Value {
    json!({"prompt_tokens": d.prompt_eval_count, "completion_tokens": d.eval_count,
           "total_tokens": d.prompt_eval_count + d.eval_count})
}

fn tool_calls_to_openai(calls: &[Value], first_index: usize) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let args = match &c["function"]["arguments"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            json!({"index": first_index + i, "id": fresh_id("call"), "type": "function",
                   "function": {"name": c["function"]["name"], "arguments": args}})
        })
        .collect()
}

/// OpenAI's reply kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiKind {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Text,
}

/// Writes pieces as OpenAI chunks (server-sent events) or one whole object.
#[derive(Debug, Clone)]
pub struct OpenAiOut {
    pub kind: OpenAiKind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    tools_sent: usize,
}

impl OpenAiOut {
    pub fn new(kind: OpenAiKind, model: &str, include_usage: bool) -> OpenAiOut {
        OpenAiOut {
            kind,
            id: fresh_id(match kind {
                OpenAiKind::Chat => "chatcmpl",
                OpenAiKind::Text => "cmpl",
            }),
            created: now_unix(),
            model: model.to_string(),
            include_usage,
            tools_sent: 0,
        }
    }

    fn object(&self, streamed: bool) -> &'static str {
        match (self.kind, streamed) {
            (OpenAiKind::Chat, true) => "chat.completion.chunk",
            (OpenAiKind::Chat, false) => "chat.completion",
            (OpenAiKind::Text, _) => "text_completion",
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(true), "created": self.created,
               "model": self.model, "system_fingerprint": "fp_synapticllamas", "choices": choices})
    }

    fn finish_reason(&self, d: &Done) -> &'static str {
        if self.tools_sent > 0 {
            "tool_calls"
        } else if d.reason == "length" {
            "length"
        } else {
            "stop"
        }
    }

    /// Events for one piece (the final piece also ends the stream).
    pub fn events(&mut self, p: &Piece) -> Vec<Bytes> {
        let mut out = Vec::new();
        let has_text = !p.content.is_empty() || !p.thinking.is_empty() || !p.tool_calls.is_empty();
        if has_text {
            let choice = match self.kind {
                OpenAiKind::Chat => {
                    let mut delta = json!({"role": "assistant", "content": p.content});
                    if !p.thinking.is_empty() {
                        delta["reasoning"] = json!(p.thinking);
                    }
                    if !p.tool_calls.is_empty() {
                        delta["tool_calls"] =
                            Value::Array(tool_calls_to_openai(&p.tool_calls, self.tools_sent));
                        self.tools_sent += p.tool_calls.len();
                    }
                    json!({"index": 0, "delta": delta, "finish_reason": null})
                }
                OpenAiKind::Text => {
                    json!({"index": 0, "text": p.content, "logprobs": null, "finish_reason": null})
                }
            };
            out.push(sse(&self.chunk(json!([choice]))));
        }
        if let Some(d) = &p.done {
            let reason = self.finish_reason(d);
            let choice = match self.kind {
                OpenAiKind::Chat => {
                    json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                                           "finish_reason": reason})
                }
                OpenAiKind::Text => {
                    json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})
                }
            };
            out.push(sse(&self.chunk(json!([choice]))));
            if self.include_usage {
                let mut u = self.chunk(json!([]));
                u["usage"] = usage(d);
                out.push(sse(&u));
            }
            out.push(sse_done());
        }
        out
    }

    /// The whole reply as one object (`"stream": false`).
    pub fn whole(&mut self, c: &Collected) -> Value {
        self.tools_sent = c.tool_calls.len();
        let reason = self.finish_reason(&c.done);
        let choice = match self.kind {
            OpenAiKind::Chat => {
                let mut msg = json!({"role": "assistant", "content": c.content});
                if !c.thinking.is_empty() {
                    msg["reasoning"] = json!(c.thinking);
                }
                if !c.tool_calls.is_empty() {
                    msg["tool_calls"] = Value::Array(tool_calls_to_openai(&c.tool_calls, 0));
                }
                json!({"index": 0, "message": msg, "finish_reason": reason})
            }
            OpenAiKind::Text => {
                json!({"index": 0, "text": c.content, "logprobs": null, "finish_reason": reason})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created,
               "model": self.model, "system_fingerprint": "fp_synapticllamas",
               "choices": [choice], "usage": usage(&c.done)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn openai_chat_becomes_an_ollama_chat() {
        let r = chat_request_from_openai(&obj(json!({
            "model": "llama3.2", "temperature": 0.2, "max_tokens": 9, "stop": "END",
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is "}, {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]}
            ]
        })))
        .unwrap();
        assert_eq!(r["stream"], true);
        assert_eq!(r["format"], "json");
        assert_eq!(r["options"]["num_predict"], 9);
        assert_eq!(r["options"]["stop"], json!(["END"]));
        assert_eq!(r["messages"][1]["content"], "what is this?");
        assert_eq!(r["messages"][1]["images"], json!(["AAAA"]));
        assert_eq!(
            r["messages"][2]["tool_calls"][0]["function"]["arguments"]["x"],
            1
        );
    }

    #[test]
    fn only_data_urls_are_accepted_for_images() {
        let e = chat_request_from_openai(&obj(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}]}
        ]})))
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("does not fetch"), "{}", e.message);
    }

    #[test]
    fn ollama_generate_becomes_an_openai_chat_with_max_tokens() {
        let r = openai_request_from_ollama(
            &obj(
                json!({"model": "big:13b", "prompt": "hi", "system": "s", "format": "json",
                        "options": {"temperature": 0.1}}),
            ),
            Shape::Generate,
            64,
        );
        assert_eq!(r["messages"][0]["role"], "system");
        assert_eq!(r["messages"][1]["content"], "hi");
        assert_eq!(r["max_tokens"], 64);
        assert_eq!(r["temperature"], 0.1);
        assert_eq!(r["response_format"]["type"], "json_object");
        assert_eq!(r["stream"], true);
    }

    #[test]
    fn ollama_lines_become_pieces_and_errors() {
        let p = ollama_piece(
            br#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}"#,
        )
        .unwrap();
        assert_eq!(p.content, "Hi");
        assert!(p.done.is_none());
        let d = ollama_piece(br#"{"model":"m","response":"","done":true,"done_reason":"length","eval_count":5,"eval_duration":1000,"context":[1,2]}"#)
            .unwrap();
        let done = d.done.unwrap();
        assert_eq!((done.reason.as_str(), done.eval_count), ("length", 5));
        assert_eq!(done.last.unwrap()["context"], json!([1, 2]));
        assert_eq!(
            ollama_piece(br#"{"error":"boom"}"#).unwrap_err(),
            LineError::Model("boom".into())
        );
        assert!(matches!(ollama_piece(b"nope"), Err(LineError::Bad(_))));
    }

    #[test]
    fn sse_events_become_pieces_with_tool_calls_and_usage() {
        let mut r = SseReader::default();
        assert!(r
            .line(br#"data: {"choices":[{"delta":{"role":"assistant","content":null}}]}"#)
            .unwrap()
            .is_empty());
        let p = r
            .line(br#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#)
            .unwrap();
        assert_eq!(p[0].content, "Hel");
        r.line(br#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#).unwrap();
        r.line(br#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":2}"}}]}}]}"#).unwrap();
        r.line(br#"data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#)
            .unwrap();
        r.line(br#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#)
            .unwrap();
        let end = r.line(b"data: [DONE]").unwrap();
        assert_eq!(end[0].tool_calls[0]["function"]["arguments"]["x"], 2);
        let d = end[1].done.as_ref().unwrap();
        assert_eq!((d.prompt_eval_count, d.eval_count), (3, 4));
        assert!(r.finished());
        let mut cut = SseReader::default();
        cut.line(br#"data: {"choices":[{"delta":{"content":"x"}}]}"#)
            .unwrap();
        assert_eq!(cut.end_of_body(), None, "no finish reason: cut short");
    }

    #[test]
    fn pieces_written_for_openai_clients() {
        let mut out = OpenAiOut::new(OpenAiKind::Chat, "llama3.2", true);
        let ev = out.events(&Piece {
            content: "Hi".into(),
            ..Default::default()
        });
        let s = String::from_utf8(ev[0].to_vec()).unwrap();
        assert!(s.starts_with("data: {") && s.ends_with("\n\n"), "{s}");
        assert!(s.contains(r#""object":"chat.completion.chunk""#));
        let end = out.events(&Piece {
            done: Some(Done {
                reason: "stop".into(),
                prompt_eval_count: 2,
                eval_count: 3,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(end.len(), 3, "finish, usage, [DONE]");
        assert!(String::from_utf8_lossy(&end[1]).contains(r#""total_tokens":5"#));
        assert_eq!(&end[2][..], b"data: [DONE]\n\n");
        let whole = out.whole(&Collected {
            content: "Hi".into(),
            ..Default::default()
        });
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "Hi");
    }

    #[test]
    fn pieces_written_for_ollama_clients_keep_the_nodes_lines() {
        let raw = br#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":false,"extra":1}"#;
        let p = ollama_piece(raw).unwrap();
        let relay = OllamaOut {
            shape: Shape::Chat,
            model: "llama3.2".into(),
            relay_raw: true,
        };
        assert_eq!(&relay.line(&p)[..raw.len()], &raw[..]);
        let made = OllamaOut {
            shape: Shape::Generate,
            model: "big:13b".into(),
            relay_raw: false,
        };
        let v: Value = serde_json::from_slice(&made.line(&p)).unwrap();
        assert_eq!(
            (v["response"].as_str(), v["done"].as_bool()),
            (Some("Hi"), Some(false))
        );
        let mut c = Collected::default();
        c.add(p);
        c.add(
            ollama_piece(br#"{"model":"llama3.2","message":{"role":"assistant","content":"!"},"done":true,"done_reason":"stop","eval_count":2}"#)
                .unwrap(),
        );
        let w = relay.whole(&c);
        assert_eq!(w["message"]["content"], "Hi!");
        assert_eq!(w["eval_count"], 2);
        assert_eq!(w["done"], true);
    }
}
