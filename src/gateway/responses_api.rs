//! OpenAI's Responses API (`POST /v1/responses`, what agent tools such as
//! Codex CLI speak), translated to an Ollama chat and run through the same
//! queue, retries and relay as every other request. The gateway keeps no
//! state: each request carries its whole conversation (`store` is ignored,
//! `previous_response_id` refused). `responses_out.rs` writes the replies.

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::call::Call;
use super::errors::ApiError;
use super::fields;
use super::ollama_api::{model_of, object, respond};
use super::relay::Writer;
use super::responses_out::ResponsesOut;
use super::route;
use super::translate::{arguments_object, field, ollama_tool_call, think_from_effort};

pub(crate) async fn responses(Call(shared, tally, caller, body): Call) -> Response {
    let prepared = async {
        let req = object(body)?;
        fields::check(&req, fields::RESPONSES)?;
        let model = model_of(&req)?;
        let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let chat = chat_request_from_responses(&req)?;
        let label = format!("v1 response {model}");
        let job = route::chat_job(&shared, caller.0, &model, &chat, label).await?;
        tally.model(&model);
        let writer = Writer::Responses(Box::new(ResponsesOut::new(&model, &req)));
        Ok::<_, ApiError>((job, writer, stream))
    }
    .await;
    match prepared {
        Ok((job, writer, stream)) => respond(&shared, job, writer, stream, tally).await,
        Err(e) => e.openai(),
    }
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

/// The text of a content list (`input_text`/`output_text` parts) and its images.
fn content_parts(content: &Value) -> Result<(String, Vec<Value>), ApiError> {
    let parts = match content {
        Value::String(s) => return Ok((s.clone(), Vec::new())),
        Value::Null => return Ok((String::new(), Vec::new())),
        Value::Array(parts) => parts,
        _ => return Err(bad("content must be a string or a list of parts", "input")),
    };
    let (mut text, mut images) = (String::new(), Vec::new());
    for p in parts {
        match p["type"].as_str() {
            Some("input_text" | "output_text" | "text" | "refusal") => {
                text.push_str(p["text"].as_str().or(p["refusal"].as_str()).unwrap_or(""))
            }
            Some("input_image") => {
                let url = p["image_url"].as_str().unwrap_or("");
                match url
                    .strip_prefix("data:")
                    .and_then(|r| r.split_once(";base64,"))
                {
                    Some((_, data)) => images.push(json!(data)),
                    None => {
                        return Err(bad(
                            "input_image must carry a data: URL with base64 content (the gateway \
                             does not fetch URLs or files)",
                            "input",
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(bad(
                    format!("content part type `{other}` is not supported (input_text, output_text, input_image)"),
                    "input",
                ))
            }
            None => return Err(bad("each content part needs a type", "input")),
        }
    }
    Ok((text, images))
}

/// The input items as Ollama chat messages.
fn input_messages(items: &[Value], out: &mut Vec<Value>) -> Result<(), ApiError> {
    // Tool names by call id, for the outputs that answer them.
    let mut names: HashMap<String, Value> = HashMap::new();
    for item in items {
        let kind = match item["type"].as_str() {
            Some(k) => k,
            None if item.get("role").is_some() => "message",
            None => return Err(bad("each input item needs a type or a role", "input")),
        };
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("developer" | "system") => "system",
                    Some(r @ ("user" | "assistant")) => r,
                    other => {
                        return Err(bad(
                            format!("message role {other:?} is not one of user, assistant, system, developer"),
                            "input",
                        ))
                    }
                };
                let (text, images) = content_parts(&item["content"])?;
                let mut m = json!({"role": role, "content": text});
                if !images.is_empty() {
                    m["images"] = Value::Array(images);
                }
                out.push(m);
            }
            "function_call" => {
                let id = item["call_id"].as_str();
                if let Some(id) = id {
                    names.insert(id.to_string(), item["name"].clone());
                }
                let call = ollama_tool_call(id, &item["name"], arguments_object(&item["arguments"]));
                // Calls after the assistant's text belong to that message.
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        match last["tool_calls"].as_array_mut() {
                            Some(calls) => calls.push(call),
                            None => last["tool_calls"] = json!([call]),
                        }
                    }
                    _ => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let (text, _) = content_parts(&item["output"])?;
                let mut m = json!({"role": "tool", "content": text});
                if let Some(id) = item["call_id"].as_str() {
                    m["tool_call_id"] = json!(id);
                    if let Some(name) = names.get(id) {
                        m["tool_name"] = name.clone();
                    }
                }
                out.push(m);
            }
            // The model's earlier thinking is not sent back to it.
            "reasoning" => {}
            "item_reference" => {
                return Err(bad(
                    "item_reference is not supported: the gateway keeps no items, so send the items themselves",
                    "input",
                ))
            }
            other => return Err(bad(format!("input item type `{other}` is not supported"), "input")),
        }
    }
    Ok(())
}

/// Function tools in Ollama's shape; `tool_choice` `none` drops them, a named
/// function keeps only that one. Other tool types (web search, …) are left out:
/// the nodes cannot run them.
fn tools(req: &Map<String, Value>) -> Option<Value> {
    let list = req.get("tools")?.as_array()?;
    let choice = field(req, "tool_choice");
    if choice.as_str() == Some("none") {
        return None;
    }
    let only = match choice["type"].as_str() {
        Some("function") => choice["name"].as_str(),
        _ => None,
    };
    let tools: Vec<Value> = list
        .iter()
        .filter(|t| t["type"] == "function")
        .filter(|t| only.is_none_or(|n| t["name"] == n))
        .map(|t| {
            let mut f = json!({"name": t["name"], "parameters": t["parameters"]});
            if let Some(d) = t["description"].as_str() {
                f["description"] = json!(d);
            }
            json!({"type": "function", "function": f})
        })
        .collect();
    (!tools.is_empty()).then_some(Value::Array(tools))
}

/// A Responses API body as an Ollama `/api/chat` body (streamed).
pub(crate) fn chat_request_from_responses(
    req: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    if req
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "previous_response_id is not supported: the gateway keeps no responses, so send the \
             whole conversation as input",
            "previous_response_id",
        ));
    }
    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match field(req, "input") {
        Value::String(s) => messages.push(json!({"role": "user", "content": s})),
        Value::Array(items) => input_messages(items, &mut messages)?,
        _ => return Err(bad("input is required", "input")),
    }
    let mut out = Map::new();
    out.insert("model".into(), field(req, "model").clone());
    out.insert("messages".into(), Value::Array(messages));
    out.insert("stream".into(), json!(true));
    let mut options = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("max_output_tokens", "num_predict"),
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
    let effort = &field(req, "reasoning")["effort"];
    if let Some(think) = think_from_effort(effort, "reasoning")? {
        out.insert("think".into(), think);
    }
    let format = &field(req, "text")["format"];
    match format["type"].as_str() {
        Some("json_schema") => {
            out.insert("format".into(), format["schema"].clone());
        }
        Some("json_object") => {
            out.insert("format".into(), json!("json"));
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
    fn a_string_input_with_instructions_becomes_a_chat() {
        let r = chat_request_from_responses(&obj(json!({
            "model": "llama3.2", "instructions": "be brief", "input": "Why is the sky blue?",
            "max_output_tokens": 50, "temperature": 0.2, "reasoning": {"effort": "high"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}
        })))
        .unwrap();
        assert_eq!(
            r["messages"],
            json!([{"role": "system", "content": "be brief"},
                   {"role": "user", "content": "Why is the sky blue?"}])
        );
        assert_eq!(r["options"], json!({"temperature": 0.2, "num_predict": 50}));
        assert_eq!(r["think"], "high");
        assert_eq!(r["format"], json!({"type": "object"}));
        assert_eq!(r["stream"], true);
    }

    #[test]
    fn items_with_a_tool_round_trip_become_messages_with_tool_names() {
        let r = chat_request_from_responses(&obj(json!({
            "model": "m",
            "input": [
                {"role": "developer", "content": "use tools"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Weather in "},
                    {"type": "input_text", "text": "Oslo?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
            ],
            "tools": [
                {"type": "function", "name": "get_weather", "description": "weather",
                 "parameters": {"type": "object"}},
                {"type": "web_search"}
            ],
            "tool_choice": "auto"
        })))
        .unwrap();
        let m = r["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[1]["content"], "Weather in Oslo?");
        assert_eq!(m[1]["images"], json!(["AAAA"]));
        assert_eq!(m[2]["role"], "assistant");
        assert_eq!(
            m[2]["tool_calls"][0],
            json!({"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "call_1"})
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1",
                   "tool_name": "get_weather"})
        );
        assert_eq!(
            r["tools"],
            json!([{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object"}, "description": "weather"}}])
        );
    }

    #[test]
    fn tool_choice_none_drops_the_tools_and_a_named_one_keeps_only_it() {
        let tools = json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]);
        let none = chat_request_from_responses(&obj(
            json!({"model": "m", "input": "x", "tools": tools, "tool_choice": "none"}),
        ))
        .unwrap();
        assert!(none.get("tools").is_none());
        let named = chat_request_from_responses(&obj(json!({"model": "m", "input": "x",
            "tools": tools, "tool_choice": {"type": "function", "name": "b"}})))
        .unwrap();
        assert_eq!(named["tools"].as_array().unwrap().len(), 1);
        assert_eq!(named["tools"][0]["function"]["name"], "b");
    }

    #[test]
    fn what_the_gateway_cannot_do_is_a_400_naming_it() {
        for (body, words) in [
            (json!({"model": "m"}), "input is required"),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "keeps no responses",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "item_reference",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "http://10.0.0.1/x.png"}]}]}),
                "does not fetch",
            ),
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}),
                "huge",
            ),
        ] {
            let e = chat_request_from_responses(&obj(body)).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(words), "{}", e.message);
        }
    }
}
