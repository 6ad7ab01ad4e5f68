//! Pieces written for clients of Anthropic's Messages API (`/v1/messages`):
//! one `message` object, or server-sent events in Anthropic's order —
//! `message_start`, `ping`, then for each content block (`thinking`, `text`,
//! `tool_use`) `content_block_start`, its `content_block_delta`s
//! (`thinking_delta`, `text_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, usage) and
//! `message_stop`. A reply that breaks after it began ends with an `error`
//! event, which Anthropic's clients raise.

use bytes::Bytes;
use serde_json::{json, Value};

use super::errors::anthropic_kind;
use super::replies::{Done, Piece};
use super::translate::fresh_id_underscored;
use super::writers::{arguments_text, call_id_underscored, Collected};

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// Writes pieces as a Messages API reply.
#[derive(Debug, Clone)]
pub(crate) struct AnthropicOut {
    id: String,
    model: String,
    started: bool,
    /// The index of the next content block.
    next: usize,
    open: Option<Open>,
    tools: usize,
}

/// Why the reply stopped, in Anthropic's words.
fn stop_reason(d: &Done, tools: usize) -> &'static str {
    if tools > 0 {
        "tool_use"
    } else if d.reason == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// A tool call as a `tool_use` block (its input an object, as Anthropic sends it).
fn tool_use(call: &Value) -> Value {
    let input = match &call["function"]["arguments"] {
        Value::Object(o) => Value::Object(o.clone()),
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": call_id_underscored(call, "toolu"), "name": call["function"]["name"],
           "input": input})
}

fn event(kind: &str, body: Value) -> Bytes {
    let mut body = body;
    body["type"] = json!(kind);
    Bytes::from(format!("event: {kind}\ndata: {body}\n\n"))
}

impl AnthropicOut {
    pub fn new(model: &str) -> AnthropicOut {
        AnthropicOut {
            id: fresh_id_underscored("msg"),
            model: model.to_string(),
            started: false,
            next: 0,
            open: None,
            tools: 0,
        }
    }

    fn message(&self, content: Vec<Value>, stop: Option<&str>, d: &Done) -> Value {
        json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model,
               "content": content, "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": d.counts.prompt_eval_count,
                         "output_tokens": d.counts.eval_count}})
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let m = self.message(Vec::new(), None, &Done::default());
        out.push(event("message_start", json!({ "message": m })));
        out.push(event("ping", json!({})));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            out.push(event("content_block_stop", json!({"index": self.next - 1})));
        }
    }

    fn delta(&mut self, kind: Open, text: &str, out: &mut Vec<Bytes>) {
        if self.open != Some(kind) {
            self.close(out);
            let block = match kind {
                Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                Open::Text => json!({"type": "text", "text": ""}),
            };
            out.push(event(
                "content_block_start",
                json!({"index": self.next, "content_block": block}),
            ));
            self.next += 1;
            self.open = Some(kind);
        }
        let delta = match kind {
            Open::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            Open::Text => json!({"type": "text_delta", "text": text}),
        };
        out.push(event(
            "content_block_delta",
            json!({"index": self.next - 1, "delta": delta}),
        ));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        self.close(out);
        let mut block = tool_use(call);
        block["input"] = json!({});
        let index = self.next;
        self.next += 1;
        self.tools += 1;
        out.push(event(
            "content_block_start",
            json!({"index": index, "content_block": block}),
        ));
        let args = match &call["function"]["arguments"] {
            Value::Null => "{}".to_string(),
            _ => arguments_text(call),
        };
        out.push(event(
            "content_block_delta",
            json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
        ));
        out.push(event("content_block_stop", json!({ "index": index })));
    }

    /// Events for one piece (the final piece also ends the stream).
    pub fn events(&mut self, p: &Piece) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        if !p.thinking.is_empty() {
            self.delta(Open::Thinking, &p.thinking, &mut out);
        }
        if !p.content.is_empty() {
            self.delta(Open::Text, &p.content, &mut out);
        }
        for call in &p.tool_calls {
            self.tool_call(call, &mut out);
        }
        if let Some(d) = &p.done {
            self.close(&mut out);
            let c = &d.counts;
            out.push(event(
                "message_delta",
                json!({"delta": {"stop_reason": stop_reason(d, self.tools), "stop_sequence": null},
                       "usage": {"input_tokens": c.prompt_eval_count, "output_tokens": c.eval_count}}),
            ));
            out.push(event("message_stop", json!({})));
        }
        out
    }

    /// An `error` event (a reply that broke after it began).
    pub fn error(&mut self, msg: &str) -> Bytes {
        event(
            "error",
            json!({"error": {"type": anthropic_kind(500), "message": msg}}),
        )
    }

    /// The whole reply as one message object (`"stream": false`).
    pub fn whole(&mut self, c: &Collected) -> Value {
        let mut content = Vec::new();
        if !c.thinking.is_empty() {
            content.push(json!({"type": "thinking", "thinking": c.thinking, "signature": ""}));
        }
        if !c.content.is_empty() || c.tool_calls.is_empty() {
            content.push(json!({"type": "text", "text": c.content}));
        }
        content.extend(c.tool_calls.iter().map(tool_use));
        let stop = stop_reason(&c.done, c.tool_calls.len());
        self.message(content, Some(stop), &c.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ollama::types::Counts;

    fn piece(content: &str, thinking: &str) -> Piece {
        Piece {
            content: content.into(),
            thinking: thinking.into(),
            ..Default::default()
        }
    }

    fn done(reason: &str) -> Piece {
        Piece {
            done: Some(Done {
                reason: reason.into(),
                counts: Counts {
                    prompt_eval_count: 3,
                    eval_count: 5,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn parse(chunks: &[Bytes]) -> Vec<(String, Value)> {
        let all: String = chunks
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        all.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (ev, data) = e.split_once('\n').unwrap();
                let name = ev.strip_prefix("event: ").unwrap().to_string();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_streamed_reply_is_events_in_anthropics_order() {
        let mut w = AnthropicOut::new("llama3.2");
        let mut chunks = w.events(&piece("", "let me see"));
        chunks.extend(w.events(&piece("Hel", "")));
        chunks.extend(w.events(&piece("lo", "")));
        chunks.extend(w.events(&Piece {
            tool_calls: vec![json!({"function": {"name": "f", "arguments": {"x": 1}}})],
            ..Default::default()
        }));
        chunks.extend(w.events(&done("stop")));
        let ev = parse(&chunks);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(ev[0].1["message"]["role"], "assistant");
        assert_eq!(ev[2].1["content_block"]["type"], "thinking");
        assert_eq!(ev[3].1["delta"]["type"], "thinking_delta");
        assert_eq!(ev[5].1["index"], 1);
        assert_eq!(ev[7].1["delta"]["text"], "lo");
        assert_eq!(ev[9].1["content_block"]["type"], "tool_use");
        assert!(ev[9].1["content_block"]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu"));
        assert_eq!(ev[10].1["delta"]["partial_json"], r#"{"x":1}"#);
        assert_eq!(ev[12].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[12].1["usage"]["output_tokens"], 5);
    }

    #[test]
    fn a_whole_reply_is_one_message_with_its_stop_reason() {
        let mut c = Collected::default();
        c.add(piece("Hi", ""));
        c.add(done("length"));
        let m = AnthropicOut::new("m").whole(&c);
        assert_eq!(m["type"], "message");
        assert_eq!(m["content"], json!([{"type": "text", "text": "Hi"}]));
        assert_eq!(m["stop_reason"], "max_tokens");
        assert_eq!(m["usage"], json!({"input_tokens": 3, "output_tokens": 5}));
        let mut t = Collected::default();
        t.add(Piece {
            tool_calls: vec![
                json!({"id": "toolu_9", "function": {"name": "f", "arguments": {"x": 1}}}),
            ],
            ..Default::default()
        });
        t.add(done("stop"));
        let m = AnthropicOut::new("m").whole(&t);
        assert_eq!(
            m["content"],
            json!([{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"x": 1}}])
        );
        assert_eq!(m["stop_reason"], "tool_use");
    }

    #[test]
    fn a_broken_reply_ends_with_an_error_event() {
        let ev = parse(&[AnthropicOut::new("m").error("node a failed")]);
        assert_eq!(ev[0].0, "error");
        assert_eq!(
            ev[0].1["error"],
            json!({"type": "api_error", "message": "node a failed"})
        );
    }
}
