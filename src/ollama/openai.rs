//! The OpenAI-style chat endpoint that llama.cpp's `llama-server` serves
//! (`POST /v1/chat/completions`), streamed as server-sent events.

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::client::{Client, ClientError, Timeouts};
use super::ndjson::{LineDecoder, MAX_LINE};
use super::types::{Completion, Message};

/// One `data:` payload's text, or the error it carries.
fn piece(v: &Value) -> Result<&str, String> {
    if let Some(e) = v.get("error") {
        return Err(e
            .get("message")
            .and_then(|m| m.as_str())
            .map(String::from)
            .unwrap_or_else(|| e.to_string()));
    }
    let choice = &v["choices"][0];
    Ok(choice["delta"]["content"]
        .as_str()
        .or_else(|| choice["message"]["content"].as_str())
        .unwrap_or(""))
}

fn counts(v: &Value, out: &mut Completion) {
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
    }
    if let Some(r) = v["choices"][0]["finish_reason"].as_str() {
        out.done_reason = Some(r.to_string());
    }
}

impl Client {
    /// Stream a chat completion from an OpenAI-compatible server.
    pub async fn openai_chat(
        &self,
        base: &str,
        model: &str,
        messages: &[Message],
        max_tokens: u64,
        t: Timeouts,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        let url = format!("{}/v1/chat/completions", base.trim_end_matches('/'));
        let body = serde_json::json!({
            "model": model, "messages": messages, "max_tokens": max_tokens, "stream": true,
        });
        let deadline = Instant::now() + t.total;
        let resp = self.send_json(&url, &body, &t, deadline).await?;
        let mut out = Completion::default();
        let mut decoder = LineDecoder::new(MAX_LINE);
        let mut stream = resp.bytes_stream();
        loop {
            let wait = deadline.min(Instant::now() + t.idle);
            let next = timeout_at(wait, stream.next())
                .await
                .map_err(|_| ClientError::Timeout {
                    url: url.clone(),
                    what: if Instant::now() >= deadline {
                        "total"
                    } else {
                        "silent too long"
                    },
                    secs: t.idle.as_secs_f64(),
                })?;
            let (lines, end) = match next {
                Some(Ok(b)) => (
                    decoder.push(&b).map_err(|e| ClientError::Protocol {
                        url: url.clone(),
                        message: format!("a line of {} bytes", e.0),
                    })?,
                    false,
                ),
                Some(Err(e)) => {
                    return Err(ClientError::Dropped {
                        url,
                        detail: format!(" ({e})"),
                    })
                }
                None => (decoder.finish().into_iter().collect(), true),
            };
            for line in lines {
                let text = String::from_utf8_lossy(&line);
                let Some(data) = text.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    return Ok(out);
                }
                let v: Value = serde_json::from_str(data).map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    message: format!("an event is not JSON ({e})"),
                })?;
                let p = piece(&v).map_err(|message| ClientError::Stream {
                    url: url.clone(),
                    message,
                })?;
                if !p.is_empty() {
                    on_text(p);
                    out.text.push_str(p);
                }
                counts(&v, &mut out);
            }
            if end {
                return if out.done_reason.is_some() {
                    Ok(out)
                } else {
                    Err(ClientError::Dropped {
                        url,
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
        assert_eq!(piece(&e).unwrap_err(), "boom");
        let mut c = Completion::default();
        let f: Value = serde_json::from_str(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"predicted_n":12,"predicted_ms":100.0}}"#).unwrap();
        counts(&f, &mut c);
        assert_eq!(c.eval_count, 12);
        assert!((c.tokens_per_second().unwrap() - 120.0).abs() < 1e-6);
    }
}
