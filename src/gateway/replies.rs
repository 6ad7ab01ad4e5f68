//! Replies read into neutral `Piece`s, whichever API they came in: Ollama's
//! NDJSON lines and OpenAI's server-sent events (llama-server's).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::ollama::openai::counts as openai_counts;
use crate::ollama::types::Counts;

/// One piece of a reply, whichever API it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Piece {
    /// The Ollama line exactly as the node sent it, with a newline (relayed
    /// as is when the client speaks the same shape).
    pub raw: Option<Bytes>,
    pub content: String,
    pub thinking: String,
    /// In Ollama's shape: `{"function": {"name", "arguments": {…}}}`.
    pub tool_calls: Vec<Value>,
    /// Ollama's `logprobs` entries (when asked for): `{token, logprob, bytes, top_logprobs}`.
    pub logprobs: Vec<Value>,
    pub done: Option<Done>,
}

impl Piece {
    /// Carries something a client would see (the first such piece decides
    /// which attempt won).
    pub(crate) fn meaningful(&self) -> bool {
        !self.content.is_empty()
            || !self.thinking.is_empty()
            || !self.tool_calls.is_empty()
            || self.done.is_some()
    }
}

/// The end of a reply: why it stopped, and Ollama's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Done {
    pub reason: String,
    pub counts: Counts,
    /// The node's final Ollama line, parsed (keeps fields such as `context`).
    pub last: Option<Map<String, Value>>,
}

// ---- replies: reading ------------------------------------------------------------

/// Why a reply line could not be used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LineError {
    /// The node reported an error (`{"error": …}`).
    Model(String),
    /// Not what the API sends.
    Bad(String),
}

/// The fields of an Ollama reply line the gateway reads (the rest is skipped
/// unparsed: only the final line is read whole).
#[derive(serde::Deserialize)]
struct Line {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    logprobs: Option<Vec<Value>>,
}

#[derive(serde::Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

fn not_json(line: &[u8], e: serde_json::Error) -> LineError {
    LineError::Bad(format!(
        "a reply line is not JSON ({e}): {}",
        String::from_utf8_lossy(line)
            .chars()
            .take(120)
            .collect::<String>()
    ))
}

/// One NDJSON line of an Ollama reply (kept, with its newline, to be relayed).
pub(crate) fn ollama_piece_owned(mut owned: Vec<u8>) -> Result<Piece, LineError> {
    let line = &owned[..];
    let l: Line = serde_json::from_slice(line).map_err(|e| not_json(line, e))?;
    if let Some(e) = l.error {
        return Err(LineError::Model(match e {
            Value::String(s) => s,
            other => other.to_string(),
        }));
    }
    let (content, thinking, tool_calls) = match l.message {
        Some(m) => (
            m.content.unwrap_or_default(),
            m.thinking.unwrap_or_default(),
            m.tool_calls.unwrap_or_default(),
        ),
        None => (
            l.response.unwrap_or_default(),
            l.thinking.unwrap_or_default(),
            Vec::new(),
        ),
    };
    let done = match l.done {
        Some(true) => {
            let v: Map<String, Value> =
                serde_json::from_slice(line).map_err(|e| not_json(line, e))?;
            let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
            Some(Done {
                reason: v
                    .get("done_reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("stop")
                    .to_string(),
                counts: Counts {
                    prompt_eval_count: n("prompt_eval_count"),
                    prompt_eval_duration: n("prompt_eval_duration"),
                    eval_count: n("eval_count"),
                    eval_duration: n("eval_duration"),
                    total_duration: n("total_duration"),
                    load_duration: n("load_duration"),
                },
                last: Some(v),
            })
        }
        _ => None,
    };
    owned.push(b'\n');
    Ok(Piece {
        raw: Some(Bytes::from(owned)),
        content,
        thinking,
        tool_calls,
        logprobs: l.logprobs.unwrap_or_default(),
        done,
    })
}

/// Reads an OpenAI server-sent-event stream (llama-server) into pieces.
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    /// Tool calls arrive in fragments: (id, name, arguments text) by index.
    tools: Vec<(String, String, String)>,
    done: Option<Done>,
    finished: bool,
}

impl SseReader {
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
        openai_counts(&v, &mut d.counts);
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
            logprobs: Vec::new(),
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
    pub(crate) fn end_of_body(&mut self) -> Option<Vec<Piece>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ollama_piece(line: &[u8]) -> Result<Piece, LineError> {
        ollama_piece_owned(line.to_vec())
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
        assert_eq!(
            (done.reason.as_str(), done.counts.eval_count),
            ("length", 5)
        );
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
        assert_eq!((d.counts.prompt_eval_count, d.counts.eval_count), (3, 4));
        assert!(r.finished);
        let mut cut = SseReader::default();
        cut.line(br#"data: {"choices":[{"delta":{"content":"x"}}]}"#)
            .unwrap();
        assert_eq!(cut.end_of_body(), None, "no finish reason: cut short");
    }
}
