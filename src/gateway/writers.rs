//! Pieces written for the client: Ollama's NDJSON lines or whole object, and
//! OpenAI's chunks (server-sent events ending in `[DONE]`) or whole object.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::replies::{Done, Piece};
use super::translate::{created_at, fresh_id, fresh_id_underscored, now_unix, Shape};

// ---- replies: writing for Ollama clients -------------------------------------------

/// Writes pieces as Ollama NDJSON lines of one shape.
#[derive(Debug, Clone)]
pub(crate) struct OllamaOut {
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

    fn put_logprobs(m: &mut Map<String, Value>, logprobs: &[Value]) {
        if !logprobs.is_empty() {
            m.insert("logprobs".into(), Value::Array(logprobs.to_vec()));
        }
    }

    fn put_done(m: &mut Map<String, Value>, d: &Done) {
        m.insert("done".into(), json!(true));
        m.insert("done_reason".into(), json!(d.reason));
        for (k, v) in [
            ("total_duration", d.counts.total_duration),
            ("load_duration", d.counts.load_duration),
            ("prompt_eval_count", d.counts.prompt_eval_count),
            ("prompt_eval_duration", d.counts.prompt_eval_duration),
            ("eval_count", d.counts.eval_count),
            ("eval_duration", d.counts.eval_duration),
        ] {
            m.insert(k.into(), json!(v));
        }
    }

    /// One streamed line for a piece.
    pub fn line(&self, p: &Piece) -> Bytes {
        if self.relay_raw {
            if let Some(raw) = &p.raw {
                return raw.clone();
            }
        }
        let mut m = self.base();
        self.put_text(&mut m, &p.content, &p.thinking, &p.tool_calls);
        Self::put_logprobs(&mut m, &p.logprobs);
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
        Self::put_logprobs(&mut m, &c.logprobs);
        Value::Object(m)
    }
}

/// `{"error": msg}` as a line (a reply that broke after it began).
pub(crate) fn ollama_error_line(msg: &str) -> Bytes {
    ndjson(&json!({ "error": msg }))
}

fn ndjson(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A whole reply, gathered from its pieces.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Collected {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<Value>,
    pub logprobs: Vec<Value>,
    pub done: Done,
}

impl Collected {
    pub fn add(&mut self, p: Piece) {
        self.content.push_str(&p.content);
        self.thinking.push_str(&p.thinking);
        self.tool_calls.extend(p.tool_calls);
        self.logprobs.extend(p.logprobs);
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
pub(crate) fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// An error event (a reply that broke after it began); OpenAI's client raises it.
pub(crate) fn sse_error(msg: &str) -> Bytes {
    sse(&json!({"error": {"message": msg, "type": "api_error", "param": null, "code": null}}))
}

fn usage(d: &Done) -> Value {
    let c = &d.counts;
    json!({"prompt_tokens": c.prompt_eval_count, "completion_tokens": c.eval_count,
           "total_tokens": c.prompt_eval_count + c.eval_count})
}

/// A tool call's arguments as JSON text (Ollama sends an object).
pub(crate) fn arguments_text(call: &Value) -> String {
    match &call["function"]["arguments"] {
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_string(),
        v => v.to_string(),
    }
}

/// A tool call's id: the node's, or a fresh one with `prefix` (`call-…`).
pub(crate) fn call_id(call: &Value, prefix: &str) -> String {
    node_call_id(call).unwrap_or_else(|| fresh_id(prefix))
}

/// A tool call's id: the node's, or a fresh one with `prefix` (`toolu_…`).
pub(crate) fn call_id_underscored(call: &Value, prefix: &str) -> String {
    node_call_id(call).unwrap_or_else(|| fresh_id_underscored(prefix))
}

fn node_call_id(call: &Value) -> Option<String> {
    call["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(String::from)
}

fn tool_calls_to_openai(calls: &[Value], first_index: usize) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"index": first_index + i, "id": call_id(c, "call"), "type": "function",
                   "function": {"name": c["function"]["name"], "arguments": arguments_text(c)}})
        })
        .collect()
}

/// Ollama's `logprobs` entries as OpenAI's `choices[].logprobs`.
pub(crate) fn openai_logprobs(entries: &[Value]) -> Value {
    let one =
        |e: &Value| json!({"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"]});
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = one(e);
            let top: Vec<Value> = e["top_logprobs"]
                .as_array()
                .map(|t| t.iter().map(one).collect())
                .unwrap_or_default();
            v["top_logprobs"] = Value::Array(top);
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// OpenAI's reply kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenAiKind {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Text,
}

/// Writes pieces as OpenAI chunks (server-sent events) or one whole object.
#[derive(Debug, Clone)]
pub(crate) struct OpenAiOut {
    pub kind: OpenAiKind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    /// The client asked for `logprobs` (chat only).
    pub logprobs: bool,
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
            logprobs: false,
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
        let has_text = !p.content.is_empty()
            || !p.thinking.is_empty()
            || !p.tool_calls.is_empty()
            || !p.logprobs.is_empty();
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
                    let logprobs = match self.logprobs {
                        true => openai_logprobs(&p.logprobs),
                        false => Value::Null,
                    };
                    json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": null})
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
                let logprobs = match self.logprobs {
                    true => openai_logprobs(&c.logprobs),
                    false => Value::Null,
                };
                json!({"index": 0, "message": msg, "logprobs": logprobs, "finish_reason": reason})
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
    use crate::gateway::replies::ollama_piece_owned;
    use crate::ollama::types::Counts;

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
                counts: Counts {
                    prompt_eval_count: 2,
                    eval_count: 3,
                    ..Default::default()
                },
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
    fn ollamas_logprobs_become_openais_when_asked_for() {
        let line = br#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false,"logprobs":[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.5,"bytes":[72,105]},{"token":"Yo","logprob":-1.5}]}]}"#;
        let p = ollama_piece_owned(line.to_vec()).unwrap();
        let mut out = OpenAiOut::new(OpenAiKind::Chat, "m", false);
        out.logprobs = true;
        let ev = String::from_utf8(out.events(&p)[0].to_vec()).unwrap();
        let v: Value = serde_json::from_str(ev.trim().strip_prefix("data: ").unwrap()).unwrap();
        let lp = &v["choices"][0]["logprobs"]["content"][0];
        assert_eq!(
            (lp["token"].as_str(), lp["logprob"].as_f64()),
            (Some("Hi"), Some(-0.5))
        );
        assert_eq!(lp["bytes"], json!([72, 105]));
        assert_eq!(lp["top_logprobs"][1]["token"], "Yo");
        assert_eq!(lp["top_logprobs"][1]["bytes"], Value::Null);
        let mut c = Collected::default();
        c.add(p);
        assert_eq!(
            out.whole(&c)["choices"][0]["logprobs"]["content"][0]["token"],
            "Hi"
        );
        let mut plain = OpenAiOut::new(OpenAiKind::Chat, "m", false);
        assert_eq!(plain.whole(&c)["choices"][0]["logprobs"], Value::Null);
    }

    #[test]
    fn pieces_written_for_ollama_clients_keep_the_nodes_lines() {
        let raw = br#"{"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":false,"extra":1}"#;
        let p = ollama_piece_owned(raw.to_vec()).unwrap();
        let relay = OllamaOut {
            shape: Shape::Chat,
            model: "llama3.2".into(),
            relay_raw: true,
        };
        let line = relay.line(&p);
        assert_eq!(&line[..raw.len()], &raw[..]);
        assert_eq!(&line[raw.len()..], b"\n");
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
            ollama_piece_owned(br#"{"model":"llama3.2","message":{"role":"assistant","content":"!"},"done":true,"done_reason":"stop","eval_count":2}"#.to_vec())
                .unwrap(),
        );
        let w = relay.whole(&c);
        assert_eq!(w["message"]["content"], "Hi!");
        assert_eq!(w["eval_count"], 2);
        assert_eq!(w["done"], true);
    }
}
