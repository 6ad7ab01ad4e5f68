//! Request shapes: OpenAI requests as Ollama requests (for Ollama nodes) and
//! Ollama requests as OpenAI ones (for llama.cpp's `llama-server`, the
//! coordinator). Replies: `replies.rs` reads them, `writers.rs` writes them.
//! Pure functions: no I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::errors::ApiError;

/// Ollama's reply shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Chat,
    Generate,
}

/// A field of a JSON object, `null` when absent (indexing a `Map` would panic).
pub fn field<'a>(m: &'a Map<String, Value>, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    m.get(key).unwrap_or(&NULL)
}

pub(crate) fn now_unix() -> u64 {
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
pub(crate) fn fresh_id(prefix: &str) -> String {
    format!("{prefix}-{}", unique())
}

/// A fresh id such as `resp_1a2b3c` (the Responses and Messages APIs' style).
pub(crate) fn fresh_id_underscored(prefix: &str) -> String {
    format!("{prefix}_{}", unique())
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}{n:x}", t & 0xffff_ffff_ffff)
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

/// Tool-call arguments as Ollama wants them: an object (OpenAI sends JSON text).
pub(crate) fn arguments_object(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        v if v.is_object() => v.clone(),
        _ => json!({}),
    }
}

/// One tool call in Ollama's shape (its id kept when there is one).
pub(crate) fn ollama_tool_call(id: Option<&str>, name: &Value, args: Value) -> Value {
    let mut call = json!({"function": {"name": name, "arguments": args}});
    if let Some(id) = id.filter(|i| !i.is_empty()) {
        call["id"] = json!(id);
    }
    call
}

/// OpenAI `tool_calls` (arguments as JSON text) in Ollama's shape (arguments as an object).
fn tool_calls_to_ollama(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let f = &c["function"];
            ollama_tool_call(
                c["id"].as_str(),
                &f["name"],
                arguments_object(&f["arguments"]),
            )
        })
        .collect()
}

/// OpenAI's reasoning effort (`reasoning_effort`, or the Responses API's
/// `reasoning.effort`) as Ollama's `think`.
pub(crate) fn think_from_effort(
    effort: &Value,
    param: &'static str,
) -> Result<Option<Value>, ApiError> {
    let think = match effort {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "none" => json!(false),
            "minimal" | "low" => json!("low"),
            "medium" => json!("medium"),
            "high" | "xhigh" => json!("high"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{param} `{other}` is not one of none, minimal, low, medium, high"
                ))
                .with_param(param))
            }
        },
        _ => {
            return Err(ApiError::bad_request(format!("{param} must be a string")).with_param(param))
        }
    };
    Ok(Some(think))
}

fn openai_messages(req: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let Some(msgs) = req.get("messages").and_then(|m| m.as_array()) else {
        return Err(ApiError::bad_request("messages must be a list").with_param("messages"));
    };
    let mut out = Vec::with_capacity(msgs.len());
    // Tool names by call id, from the assistant's calls, for the tool results.
    let mut names: HashMap<String, Value> = HashMap::new();
    for m in msgs {
        if !m.is_object() {
            return Err(
                ApiError::bad_request("each message must be an object").with_param("messages")
            );
        }
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
            for c in calls {
                if let Some(id) = c["id"].as_str() {
                    names.insert(id.to_string(), c["function"]["name"].clone());
                }
            }
            msg.insert(
                "tool_calls".into(),
                Value::Array(tool_calls_to_ollama(calls)),
            );
        }
        if role == "tool" {
            let id = m["tool_call_id"].as_str();
            if let Some(id) = id {
                msg.insert("tool_call_id".into(), json!(id));
            }
            let name = id
                .and_then(|id| names.get(id).cloned())
                .or_else(|| m["name"].as_str().map(|n| json!(n)));
            if let Some(name) = name {
                msg.insert("tool_name".into(), name);
            }
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
pub(crate) fn chat_request_from_openai(
    req: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
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
    if let Some(think) = think_from_effort(field(req, "reasoning_effort"), "reasoning_effort")? {
        out.insert("think".into(), think);
    }
    if req.get("logprobs").and_then(|l| l.as_bool()) == Some(true) {
        out.insert("logprobs".into(), json!(true));
        if let Some(n) = req.get("top_logprobs").filter(|n| n.is_u64()) {
            out.insert("top_logprobs".into(), n.clone());
        }
    }
    Ok(out)
}

/// An OpenAI `/v1/completions` body as an Ollama `/api/generate` body (streamed).
pub(crate) fn generate_request_from_openai(
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
pub(crate) fn openai_request_from_ollama(
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
pub(crate) fn openai_request_for_coordinator(
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
    fn effort_logprobs_and_tool_results_reach_ollama_as_it_expects() {
        let r = chat_request_from_openai(&obj(json!({
            "model": "m", "reasoning_effort": "minimal", "logprobs": true, "top_logprobs": 3,
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"}
            ]
        })))
        .unwrap();
        assert_eq!(r["think"], "low");
        assert_eq!(
            (r["logprobs"].clone(), r["top_logprobs"].clone()),
            (json!(true), json!(3))
        );
        assert_eq!(r["messages"][1]["tool_calls"][1]["id"], "call_b");
        assert_eq!(
            r["messages"][2],
            json!({"role": "tool", "content": "noon", "tool_call_id": "call_b", "tool_name": "get_time"})
        );
        assert_eq!(r["messages"][3]["tool_name"], "get_weather");
        let none = chat_request_from_openai(&obj(
            json!({"model": "m", "messages": [], "reasoning_effort": "none"}),
        ))
        .unwrap();
        assert_eq!(none["think"], false);
        assert!(none.get("logprobs").is_none());
        let bad = chat_request_from_openai(&obj(
            json!({"model": "m", "messages": [], "reasoning_effort": "max"}),
        ))
        .unwrap_err();
        assert_eq!(bad.param, Some("reasoning_effort"));
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
}
