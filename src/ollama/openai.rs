//! The OpenAI-style chat endpoint that llama.cpp's `llama-server` serves
//! (`POST /v1/chat/completions`), streamed as server-sent events.

use serde_json::Value;
use tokio::time::Instant;

use super::client::{Client, ClientError, ErrorKind, Reader, Timeouts};
use super::types::{Completion, Counts, Message};

/// One `data:` payload's text, or the model error it carries.
fn piece(v: &Value) -> Result<&str, ErrorKind> {
    if let Some(e) = v.get("error") {
        let message = e
            .get("message")
            .and_then(|m| m.as_str())
            .map(String::from)
            .unwrap_or_else(|| e.to_string());
        return Err(ErrorKind::Model { message });
    }
    let choice = &v["choices"][0];
    Ok(choice["delta"]["content"]
        .as_str()
        .or_else(|| choice["message"]["content"].as_str())
        .unwrap_or(""))
}

/// The counts an event carries over what is known: `usage`, and
/// llama-server's `timings` (which win).
pub(crate) fn counts(v: &Value, out: &mut Counts) {
    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
        out.eval_count = n;
    }
    if let Some(n) = v["usage"]["prompt_tokens"].as_u64() {
        out.prompt_eval_count = n;
    }
    if let Some(t) = v.get("timings") {
        if let Some(n) = t["predicted_n"].as_u64() {
            out.eval_count = n;
        }
        if let Some(ms) = t["predicted_ms"].as_f64() {
            out.eval_duration = (ms * 1e6) as u64;
        }
        if let Some(n) = t["prompt_n"].as_u64() {
            out.prompt_eval_count = n;
        }
        if let Some(ms) = t["prompt_ms"].as_f64() {
            out.prompt_eval_duration = (ms * 1e6) as u64;
        }
    }
}

/// A chat completion to ask an OpenAI-compatible server for.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiChat<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    pub max_tokens: u64,
    /// `response_format` (e.g. `{"type": "json_schema", "json_schema": {…}}`).
    pub response_format: Option<&'a Value>,
}

impl OpenAiChat<'_> {
    /// The request body, streamed.
    fn body(&self) -> Value {
        let mut body = serde_json::json!({
            "model": self.model, "messages": self.messages, "max_tokens": self.max_tokens, "stream": true,
        });
        if let Some(rf) = self.response_format {
            body["response_format"] = rf.clone();
        }
        body
    }
}

impl Client {
    /// Stream a chat completion from an OpenAI-compatible server.
    pub async fn openai_chat(
        &self,
        base: &str,
        ask: OpenAiChat<'_>,
        t: Timeouts,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'));
        let body = ask.body();
        let started = Instant::now();
        let resp = self.send_json(&url, &body, &t, started + t.total).await?;
        let fail = |kind| Err(ClientError::new(&url, kind));
        let mut reader = Reader::new(resp, t, started);
        let mut out = Completion::default();
        loop {
            let lines = match reader.next_lines().await {
                Ok(l) => l,
                Err(kind) => return fail(kind),
            };
            for line in lines {
                let text = String::from_utf8_lossy(&line);
                let Some(data) = text.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    out.first_token_ms = reader.first_token_ms();
                    return Ok(out);
                }
                let v: Value = match serde_json::from_str(data) {
                    Ok(v) => v,
                    Err(e) => {
                        return fail(ErrorKind::BadReply {
                            message: format!("an event is not JSON ({e})"),
                        })
                    }
                };
                let p = match piece(&v) {
                    Ok(p) => p,
                    Err(kind) => return fail(kind),
                };
                if !p.is_empty() {
                    on_text(p);
                    out.text.push_str(p);
                }
                counts(&v, &mut out.counts);
                if let Some(r) = v["choices"][0]["finish_reason"].as_str() {
                    out.done_reason = Some(r.to_string());
                }
            }
            if reader.ended {
                return if out.done_reason.is_some() {
                    out.first_token_ms = reader.first_token_ms();
                    Ok(out)
                } else {
                    fail(ErrorKind::Reset {
                        after_first_token: reader.first_at.is_some(),
                        detail: " (the stream ended before [DONE])".into(),
                    })
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_and_errors() {
        let v: Value = serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
        assert_eq!(piece(&v).unwrap(), "Hi");
        let e: Value = serde_json::from_str(r#"{"error":{"message":"boom","code":500}}"#).unwrap();
        assert_eq!(
            piece(&e).unwrap_err(),
            ErrorKind::Model {
                message: "boom".into()
            }
        );
        let mut c = Completion::default();
        let f: Value = serde_json::from_str(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"predicted_n":12,"predicted_ms":100.0}}"#).unwrap();
        counts(&f, &mut c.counts);
        assert_eq!(c.counts.eval_count, 12);
        assert!((c.tokens_per_second().unwrap() - 120.0).abs() < 1e-6);
    }
}
