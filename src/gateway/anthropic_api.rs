//! Anthropic's Messages API (`POST /v1/messages`, what Claude Code and
//! Anthropic's SDKs speak), translated to an Ollama chat and run through the
//! same queue, retries and relay as every other request; errors in
//! Anthropic's shape. Keys may come as `x-api-key` (see `auth.rs`).
//! `anthropic_out.rs` writes the replies.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::anthropic_out::AnthropicOut;
use super::call::Call;
use super::errors::ApiError;
use super::fields;
use super::ollama_api::{model_of, object, respond};
use super::relay::Writer;
use super::route;
use super::translate::{field, ollama_tool_call};

pub(crate) async fn messages(Call(shared, tally, caller, body): Call) -> Response {
    let prepared = async {
        let req = object(body)?;
        fields::check(&req, fields::ANTHROPIC)?;
        let model = model_of(&req)?;
        let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let chat = chat_request_from_anthropic(&req)?;
        let label = format!("v1 message {model}");
        let job = route::chat_job(&shared, caller.0, &model, &chat, label).await?;
        tally.model(&model);
        Ok::<_, ApiError>((job, Writer::Anthropic(AnthropicOut::new(&model)), stream))
    }
    .await;
    match prepared {
        Ok((job, writer, stream)) => respond(&shared, job, writer, stream, tally).await,
        Err(e) => e.anthropic(),
    }
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

/// The text of a string or of a list of `text` blocks.
fn text_of(v: &Value, param: &'static str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for b in blocks {
                match b["type"].as_str() {
                    Some("text") => texts.push(b["text"].as_str().unwrap_or("")),
                    // Pictures a tool returned cannot go into Ollama's tool message.
                    Some("image") => {}
                    other => {
                        return Err(bad(
                            format!(
                                "a {param} block of type {other:?} is not supported here (text)"
                            ),
                            param,
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(bad(
            format!("{param} must be a string or a list of text blocks"),
            param,
        )),
    }
}

/// An `image` block's base64 data (only base64 sources: the gateway never fetches).
fn image_data(block: &Value) -> Result<Value, ApiError> {
    let source = &block["source"];
    match (source["type"].as_str(), source["data"].as_str()) {
        (Some("base64"), Some(data)) => Ok(json!(data)),
        _ => Err(bad(
            "image blocks must have a base64 source (the gateway does not fetch URLs or files)",
            "messages",
        )),
    }
}

/// One message's blocks as Ollama chat messages: a user message's tool
/// results first (one `tool` message each), then its text and images; an
/// assistant's text, thinking and tool calls as one message.
fn message(
    m: &Value,
    names: &mut HashMap<String, Value>,
    out: &mut Vec<Value>,
) -> Result<(), ApiError> {
    let role = match m["role"].as_str() {
        Some(r @ ("user" | "assistant")) => r,
        other => {
            return Err(bad(
                format!("message role {other:?} is not user or assistant"),
                "messages",
            ))
        }
    };
    let blocks = match &m["content"] {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => {
            return Err(bad(
                "content must be a string or a list of blocks",
                "messages",
            ))
        }
    };
    let (mut text, mut thinking) = (String::new(), String::new());
    let (mut images, mut calls) = (Vec::new(), Vec::new());
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("image") => images.push(image_data(b)?),
            Some("thinking") => thinking.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("redacted_thinking") => {}
            Some("tool_use") => {
                let id = b["id"].as_str();
                if let Some(id) = id {
                    names.insert(id.to_string(), b["name"].clone());
                }
                let input = match &b["input"] {
                    Value::Object(o) => Value::Object(o.clone()),
                    _ => json!({}),
                };
                calls.push(ollama_tool_call(id, &b["name"], input));
            }
            Some("tool_result") => {
                let mut content = text_of(&b["content"], "tool_result")?;
                if b["is_error"] == true {
                    content = format!("Error: {content}");
                }
                let mut t = json!({"role": "tool", "content": content});
                if let Some(id) = b["tool_use_id"].as_str() {
                    t["tool_call_id"] = json!(id);
                    if let Some(name) = names.get(id) {
                        t["tool_name"] = name.clone();
                    }
                }
                out.push(t);
            }
            other => {
                return Err(bad(
                    format!("content block type {other:?} is not supported (text, image, tool_use, tool_result, thinking)"),
                    "messages",
                ))
            }
        }
    }
    if text.is_empty() && images.is_empty() && calls.is_empty() && thinking.is_empty() {
        // Only tool results (already out), or nothing at all.
        if out.last().is_some_and(|l| l["role"] == "tool") {
            return Ok(());
        }
    }
    let mut msg = json!({"role": role, "content": text});
    if !images.is_empty() {
        msg["images"] = Value::Array(images);
    }
    if !thinking.is_empty() {
        msg["thinking"] = json!(thinking);
    }
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    out.push(msg);
    Ok(())
}

/// Custom tools in Ollama's shape; `tool_choice` `none` drops them, a named
/// tool keeps only that one. Anthropic's server tools (web search, …) are left
/// out: the nodes cannot run them.
fn tools(req: &Map<String, Value>) -> Option<Value> {
    let list = req.get("tools")?.as_array()?;
    let choice = field(req, "tool_choice");
    let only = match choice["type"].as_str() {
        Some("none") => return None,
        Some("tool") => choice["name"].as_str(),
        _ => None,
    };
    let tools: Vec<Value> = list
        .iter()
        .filter(|t| t["type"].is_null() || t["type"] == "custom")
        .filter(|t| only.is_none_or(|n| t["name"] == n))
        .map(|t| {
            let mut f = json!({"name": t["name"], "parameters": t["input_schema"]});
            if let Some(d) = t["description"].as_str() {
                f["description"] = json!(d);
            }
            json!({"type": "function", "function": f})
        })
        .collect();
    (!tools.is_empty()).then_some(Value::Array(tools))
}

/// A Messages API body as an Ollama `/api/chat` body (streamed).
pub(crate) fn chat_request_from_anthropic(
    req: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return Err(bad("messages is required", "messages"));
    };
    let mut messages = Vec::new();
    let system = text_of(field(req, "system"), "system")?;
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    let mut names = HashMap::new();
    for m in msgs {
        message(m, &mut names, &mut messages)?;
    }
    let mut out = Map::new();
    out.insert("model".into(), field(req, "model").clone());
    out.insert("messages".into(), Value::Array(messages));
    out.insert("stream".into(), json!(true));
    let mut options = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("max_tokens", "num_predict"),
        ("stop_sequences", "stop"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            options.insert(to.into(), v.clone());
        }
    }
    if !options.is_empty() {
        out.insert("options".into(), Value::Object(options));
    }
    if let Some(t) = tools(req) {
        out.insert("tools".into(), t);
    }
    match field(req, "thinking")["type"].as_str() {
        Some("enabled" | "adaptive") => {
            out.insert("think".into(), json!(true));
        }
        Some("disabled") => {
            out.insert("think".into(), json!(false));
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn system_blocks_and_options_become_an_ollama_chat() {
        let r = chat_request_from_anthropic(&obj(json!({
            "model": "llama3.2", "max_tokens": 64, "temperature": 0.3, "top_k": 5,
            "stop_sequences": ["END"], "thinking": {"type": "enabled", "budget_tokens": 1024},
            "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]
        })))
        .unwrap();
        assert_eq!(
            r["messages"],
            json!([{"role": "system", "content": "be brief\nbe kind"},
                   {"role": "user", "content": "Why is the sky blue?"}])
        );
        assert_eq!(
            r["options"],
            json!({"temperature": 0.3, "top_k": 5, "num_predict": 64, "stop": ["END"]})
        );
        assert_eq!(r["think"], true);
    }

    #[test]
    fn a_tool_round_trip_becomes_calls_and_named_tool_messages() {
        let r = chat_request_from_anthropic(&obj(json!({
            "model": "m", "max_tokens": 10,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Oslo?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "use the tool", "signature": "x"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1",
                     "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "And tomorrow?"}]}
            ],
            "tools": [
                {"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"}
            ],
            "tool_choice": {"type": "auto"}
        })))
        .unwrap();
        let m = r["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0]["images"], json!(["AAAA"]));
        assert_eq!(m[1]["content"], "Let me look.");
        assert_eq!(m[1]["thinking"], "use the tool");
        assert_eq!(
            m[1]["tool_calls"],
            json!([{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "toolu_1"}])
        );
        assert_eq!(
            m[2],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "toolu_1",
                   "tool_name": "get_weather"})
        );
        assert_eq!(m[3], json!({"role": "user", "content": "And tomorrow?"}));
        assert_eq!(
            r["tools"],
            json!([{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object"}, "description": "weather"}}])
        );
    }

    #[test]
    fn a_message_of_tool_results_alone_adds_no_empty_user_message() {
        let r = chat_request_from_anthropic(&obj(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42", "is_error": true}]}
        ]})))
        .unwrap();
        assert_eq!(
            r["messages"],
            json!([{"role": "tool", "content": "Error: 42", "tool_call_id": "t"}])
        );
        let none = chat_request_from_anthropic(&obj(json!({"model": "m", "messages": [],
            "tools": [{"name": "a", "input_schema": {}}], "tool_choice": {"type": "none"}})))
        .unwrap();
        assert!(none.get("tools").is_none());
    }

    #[test]
    fn what_the_gateway_cannot_do_is_a_400_naming_it() {
        for (body, words) in [
            (json!({"model": "m"}), "messages is required"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
                "not user or assistant",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "http://10.0.0.1/x.png"}}]}]}),
                "does not fetch",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "document", "source": {}}]}]}),
                "\"document\"",
            ),
        ] {
            let e = chat_request_from_anthropic(&obj(body)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(words), "{}", e.message);
        }
    }
}
