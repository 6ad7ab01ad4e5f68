//! Pieces written for clients of OpenAI's Responses API (`/v1/responses`):
//! one `response` object, or server-sent events (`event:` and `data:` lines,
//! each with its `sequence_number`) in the order OpenAI sends them —
//! `response.created`, `response.in_progress`, then for each output item
//! `response.output_item.added`, its content part, its deltas and their
//! `.done` events, `response.output_item.done`, and last
//! `response.completed` (or `response.incomplete` when the reply hit its
//! token limit). The model's thinking is a `reasoning` item, each tool call
//! a `function_call` item.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::replies::{Done, Piece};
use super::translate::{fresh_id_underscored, now_unix};
use super::writers::{arguments_text, call_id_underscored, Collected};

/// The item being streamed.
#[derive(Debug, Clone)]
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
}

/// Writes pieces as a Responses API reply.
#[derive(Debug, Clone)]
pub(crate) struct ResponsesOut {
    id: String,
    created_at: u64,
    model: String,
    /// Request fields the response object repeats (instructions, tools, …).
    echo: Map<String, Value>,
    seq: u64,
    started: bool,
    /// Items finished so far.
    output: Vec<Value>,
    open: Option<Open>,
}

/// The request fields a response object repeats.
const ECHOED: &[&str] = &[
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "metadata",
    "previous_response_id",
    "store",
    "user",
];

/// What OpenAI's response object says for a field the request left out.
fn echo_default(field: &str) -> Value {
    match field {
        "temperature" | "top_p" => json!(1.0),
        "tools" => json!([]),
        "tool_choice" => json!("auto"),
        "parallel_tool_calls" => json!(true),
        "text" => json!({"format": {"type": "text"}}),
        "metadata" => json!({}),
        "store" => json!(false),
        _ => Value::Null,
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_part(text: &str) -> Value {
    json!({"type": "reasoning_text", "text": text})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "role": "assistant", "status": status, "content": content})
}

fn reasoning_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [], "status": status, "content": content})
}

fn function_call_item(call: &Value, status: &str, arguments: &str) -> Value {
    json!({"id": fresh_id_underscored("fc"), "type": "function_call", "status": status,
           "call_id": call_id_underscored(call, "call"), "name": call["function"]["name"],
           "arguments": arguments})
}

fn usage(d: &Done) -> Value {
    let c = &d.counts;
    json!({"input_tokens": c.prompt_eval_count, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
           "output_tokens": c.eval_count, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": c.prompt_eval_count + c.eval_count})
}

impl ResponsesOut {
    pub fn new(model: &str, req: &Map<String, Value>) -> ResponsesOut {
        let echo = ECHOED
            .iter()
            .map(|k| {
                let v = req.get(*k).filter(|v| !v.is_null()).cloned();
                (k.to_string(), v.unwrap_or_else(|| echo_default(k)))
            })
            .collect();
        ResponsesOut {
            id: fresh_id_underscored("resp"),
            created_at: now_unix(),
            model: model.to_string(),
            echo,
            seq: 0,
            started: false,
            output: Vec::new(),
            open: None,
        }
    }

    /// The response object as it stands.
    fn response(&self, status: &str, done: Option<&Done>) -> Value {
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.model, "output": self.output,
            "error": null, "incomplete_details": null, "usage": null,
        });
        for (k, v) in &self.echo {
            r[k] = v.clone();
        }
        if let Some(d) = done {
            r["usage"] = usage(d);
            if d.reason == "length" {
                r["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
        }
        r
    }

    /// One server-sent event of `kind`.
    fn event(&mut self, kind: &str, body: Value) -> Bytes {
        let mut body = body;
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {body}\n\n"))
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.response("in_progress", None);
        out.push(self.event("response.created", json!({ "response": r })));
        out.push(self.event("response.in_progress", json!({ "response": r })));
    }

    /// Open an item of the kind `reasoning` says, closing another first.
    fn open(&mut self, reasoning: bool, out: &mut Vec<Bytes>) -> (String, usize) {
        let index = self.output.len();
        match &self.open {
            Some(Open::Reasoning { id, .. }) if reasoning => return (id.clone(), index),
            Some(Open::Message { id, .. }) if !reasoning => return (id.clone(), index),
            Some(_) => self.close(out),
            None => {}
        }
        let (id, item, part) = if reasoning {
            let id = fresh_id_underscored("rs");
            let item = reasoning_item(&id, "in_progress", vec![]);
            (id, item, reasoning_part(""))
        } else {
            let id = fresh_id_underscored("msg");
            let item = message_item(&id, "in_progress", vec![]);
            (id, item, text_part(""))
        };
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        self.open = Some(if reasoning {
            Open::Reasoning {
                id: id.clone(),
                text: String::new(),
            }
        } else {
            Open::Message {
                id: id.clone(),
                text: String::new(),
            }
        });
        (id, index)
    }

    /// Finish the item being streamed.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        let index = self.output.len();
        let (id, text_done, part, item) = match &open {
            Open::Reasoning { id, text } => (
                id,
                "response.reasoning_text.done",
                reasoning_part(text),
                reasoning_item(id, "completed", vec![reasoning_part(text)]),
            ),
            Open::Message { id, text } => (
                id,
                "response.output_text.done",
                text_part(text),
                message_item(id, "completed", vec![text_part(text)]),
            ),
        };
        let text = part["text"].clone();
        let mut done =
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
        if matches!(open, Open::Message { .. }) {
            done["logprobs"] = json!([]);
        }
        out.push(self.event(text_done, done));
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.output.push(item);
    }

    fn delta(&mut self, reasoning: bool, delta: &str, out: &mut Vec<Bytes>) {
        let (id, index) = self.open(reasoning, out);
        match &mut self.open {
            Some(Open::Reasoning { text, .. }) | Some(Open::Message { text, .. }) => {
                text.push_str(delta)
            }
            None => {}
        }
        let mut ev =
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta});
        let kind = if reasoning {
            "response.reasoning_text.delta"
        } else {
            ev["logprobs"] = json!([]);
            "response.output_text.delta"
        };
        out.push(self.event(kind, ev));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.output.len();
        let args = arguments_text(call);
        let mut item = function_call_item(call, "in_progress", "");
        let id = item["id"].clone();
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        out.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": args}),
        ));
        out.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": args}),
        ));
        item["status"] = json!("completed");
        item["arguments"] = json!(args);
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.output.push(item);
    }

    /// Events for one piece (the final piece also ends the stream).
    pub fn events(&mut self, p: &Piece) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        if !p.thinking.is_empty() {
            self.delta(true, &p.thinking, &mut out);
        }
        if !p.content.is_empty() {
            self.delta(false, &p.content, &mut out);
        }
        for call in &p.tool_calls {
            self.tool_call(call, &mut out);
        }
        if let Some(d) = &p.done {
            if self.output.is_empty() && self.open.is_none() {
                // An empty reply is still a message.
                self.open(false, &mut out);
            }
            self.close(&mut out);
            let (status, kind) = match d.reason.as_str() {
                "length" => ("incomplete", "response.incomplete"),
                _ => ("completed", "response.completed"),
            };
            let r = self.response(status, Some(d));
            out.push(self.event(kind, json!({ "response": r })));
        }
        out
    }

    /// A reply that broke after it began: an `error` event, then `response.failed`.
    pub fn error(&mut self, msg: &str) -> Bytes {
        let mut out = Vec::new();
        self.start(&mut out);
        out.push(self.event(
            "error",
            json!({"code": "server_error", "message": msg, "param": null}),
        ));
        let mut r = self.response("failed", None);
        r["error"] = json!({"code": "server_error", "message": msg});
        out.push(self.event("response.failed", json!({ "response": r })));
        Bytes::from(out.concat())
    }

    /// The whole reply as one response object (`"stream": false`).
    pub fn whole(&mut self, c: &Collected) -> Value {
        self.output.clear();
        if !c.thinking.is_empty() {
            let item = reasoning_item(
                &fresh_id_underscored("rs"),
                "completed",
                vec![reasoning_part(&c.thinking)],
            );
            self.output.push(item);
        }
        if !c.content.is_empty() || c.tool_calls.is_empty() {
            let item = message_item(
                &fresh_id_underscored("msg"),
                "completed",
                vec![text_part(&c.content)],
            );
            self.output.push(item);
        }
        for call in &c.tool_calls {
            let item = function_call_item(call, "completed", &arguments_text(call));
            self.output.push(item);
        }
        let status = match c.done.reason.as_str() {
            "length" => "incomplete",
            _ => "completed",
        };
        self.response(status, Some(&c.done))
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
                    prompt_eval_count: 4,
                    eval_count: 6,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// (event name, data) of each event.
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
                assert_eq!(data["type"], name.as_str(), "type matches the event name");
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_streamed_reply_is_events_in_openais_order() {
        let req = json!({"model": "m", "instructions": "be brief"});
        let mut w = ResponsesOut::new("llama3.2", req.as_object().unwrap());
        let mut chunks = w.events(&piece("", "hmm"));
        chunks.extend(w.events(&piece("Hel", "")));
        chunks.extend(w.events(&piece("lo", "")));
        chunks.extend(w.events(&done("stop")));
        let ev = parse(&chunks);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = ev
            .iter()
            .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
        assert_eq!(ev[0].1["response"]["status"], "in_progress");
        assert_eq!(ev[0].1["response"]["instructions"], "be brief");
        assert_eq!(ev[12].1["text"], "Hello");
        assert_eq!(ev[14].1["output_index"], 1);
        let last = &ev.last().unwrap().1["response"];
        assert_eq!(last["status"], "completed");
        assert_eq!(last["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(last["output"][0]["type"], "reasoning");
        assert_eq!(last["usage"]["total_tokens"], 10);
    }

    #[test]
    fn tool_calls_are_function_call_items_streamed_and_whole() {
        let call = json!({"id": "call_7", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}});
        let mut w = ResponsesOut::new("m", &Map::new());
        let mut chunks = w.events(&Piece {
            tool_calls: vec![call.clone()],
            ..Default::default()
        });
        chunks.extend(w.events(&done("stop")));
        let ev = parse(&chunks);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[2..],
            [
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let item = &ev[5].1["item"];
        assert_eq!(
            (item["type"].as_str(), item["call_id"].as_str()),
            (Some("function_call"), Some("call_7"))
        );
        assert_eq!(item["arguments"], r#"{"city":"Oslo"}"#);
        let whole = ResponsesOut::new("m", &Map::new()).whole(&Collected {
            tool_calls: vec![call],
            ..Default::default()
        });
        assert_eq!(whole["output"].as_array().unwrap().len(), 1);
        assert_eq!(whole["output"][0]["name"], "get_weather");
        assert_eq!(whole["status"], "completed");
    }

    #[test]
    fn a_reply_cut_by_its_limit_is_incomplete_and_a_broken_one_failed() {
        let mut w = ResponsesOut::new("m", &Map::new());
        let mut chunks = w.events(&piece("Hi", ""));
        chunks.extend(w.events(&done("length")));
        let ev = parse(&chunks);
        let (name, last) = ev.last().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        let mut w = ResponsesOut::new("m", &Map::new());
        let mut chunks = w.events(&piece("Hi", ""));
        chunks.push(w.error("node a failed"));
        let ev = parse(&chunks);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["error", "response.failed"]);
        assert_eq!(ev.last().unwrap().1["response"]["status"], "failed");
    }

    #[test]
    fn a_whole_reply_is_one_response_object() {
        let mut w = ResponsesOut::new("llama3.2", &Map::new());
        let mut c = Collected::default();
        c.add(piece("Hello", ""));
        c.add(done("stop"));
        let r = w.whole(&c);
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["type"], "message");
        assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(r["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(
            (
                r["usage"]["input_tokens"].as_u64(),
                r["usage"]["output_tokens"].as_u64()
            ),
            (Some(4), Some(6))
        );
    }
}
