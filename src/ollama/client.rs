//! An Ollama HTTP client: reqwest on tokio, NDJSON streams read incrementally,
//! with connect, idle (silence) and total timeouts.

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::ndjson::{LineDecoder, MAX_LINE};
use super::types::*;

/// Why a request failed; callers decide what to do by kind.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: no answer within {secs:.1}s ({what})")]
    Timeout {
        url: String,
        what: &'static str,
        secs: f64,
    },
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: error inside the stream: {message}")]
    Stream { url: String, message: String },
    #[error("{url}: connection dropped before the reply was complete{detail}")]
    Dropped { url: String, detail: String },
    #[error("{url}: unexpected reply: {message}")]
    Protocol { url: String, message: String },
}

impl ClientError {
    /// True when the node could not be reached at all (as opposed to a bad reply).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest silence allowed between two pieces of a reply (and before the first).
    pub idle: Duration,
    pub total: Duration,
}

impl Timeouts {
    /// For quick probes of `/api/tags`, `/api/ps` and the like.
    pub const PROBE: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        idle: Duration::from_secs(2),
        total: Duration::from_secs(2),
    };

    /// For a generation that may take `total` overall.
    pub fn generation(total: Duration) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(3),
            idle: Duration::from_secs(120).min(total),
            total,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new(Duration::from_secs(3))
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

impl Client {
    /// `connect` is the TCP connect timeout applied to every request.
    pub fn new(connect: Duration) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("synapticllamas/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client builds");
        Client { http }
    }

    fn map_send_error(url: &str, e: reqwest::Error, t: &Timeouts) -> ClientError {
        if e.is_connect() {
            let reason = if e.is_timeout() {
                format!("connect timed out after {:.1}s", t.connect.as_secs_f64())
            } else {
                root_cause(&e)
            };
            ClientError::Connect {
                url: url.to_string(),
                reason,
            }
        } else if e.is_timeout() {
            ClientError::Timeout {
                url: url.to_string(),
                what: "total",
                secs: t.total.as_secs_f64(),
            }
        } else {
            ClientError::Dropped {
                url: url.to_string(),
                detail: format!(" ({})", root_cause(&e)),
            }
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = match timeout_at(
            deadline.min(Instant::now() + t.idle + t.connect),
            req.send(),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url: url.to_string(),
                    what: "waiting for the reply to start",
                    secs: (t.idle + t.connect)
                        .as_secs_f64()
                        .min(t.total.as_secs_f64()),
                })
            }
            Ok(r) => r.map_err(|e| Self::map_send_error(url, e, t))?,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = timeout_at(deadline, resp.bytes())
            .await
            .ok()
            .and_then(|b| b.ok());
        let message = body
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .or_else(|| {
                body.as_deref().map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(200)
                        .collect()
                })
            })
            .filter(|s: &String| !s.is_empty())
            .unwrap_or_else(|| "no error message".to_string());
        Err(ClientError::Http {
            url: url.to_string(),
            status,
            message,
        })
    }

    /// POST a JSON body; the response once its status is a success.
    pub(crate) async fn send_json(
        &self,
        url: &str,
        body: &Value,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(self.http.post(url).json(body), url, t, deadline)
            .await
    }

    /// The HTTP status of a GET, or None when nothing answered.
    pub async fn get_status(&self, url: &str, t: Timeouts) -> Option<u16> {
        let r = tokio::time::timeout(t.total, self.http.get(url).send())
            .await
            .ok()?
            .ok()?;
        Some(r.status().as_u16())
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        t: Timeouts,
    ) -> Result<T, ClientError> {
        let url = join(base, path);
        let deadline = Instant::now() + t.total;
        let resp = self
            .send(self.http.get(&url).timeout(t.total), &url, &t, deadline)
            .await?;
        let bytes = match timeout_at(deadline, resp.bytes()).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    url,
                    what: "total",
                    secs: t.total.as_secs_f64(),
                })
            }
            Ok(b) => b.map_err(|e| ClientError::Dropped {
                url: url.clone(),
                detail: format!(" ({})", root_cause(&e)),
            })?,
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url,
            message: format!("not the JSON Ollama sends ({e})"),
        })
    }

    /// `GET /` — Ollama answers "Ollama is running".
    pub async fn root(&self, base: &str, t: Timeouts) -> Result<String, ClientError> {
        let url = join(base, "/");
        let deadline = Instant::now() + t.total;
        let resp = self
            .send(self.http.get(&url).timeout(t.total), &url, &t, deadline)
            .await?;
        resp.text().await.map_err(|e| ClientError::Dropped {
            url,
            detail: format!(" ({})", root_cause(&e)),
        })
    }

    pub async fn version(&self, base: &str, t: Timeouts) -> Result<String, ClientError> {
        let v: Value = self.get_json(base, "/api/version", t).await?;
        Ok(v.get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string())
    }

    /// `GET /api/tags`: the models a node has installed.
    pub async fn tags(&self, base: &str, t: Timeouts) -> Result<Vec<ModelInfo>, ClientError> {
        let r: TagsResponse = self.get_json(base, "/api/tags", t).await?;
        Ok(r.models)
    }

    /// `GET /api/ps`: the models loaded in memory.
    pub async fn ps(&self, base: &str, t: Timeouts) -> Result<Vec<LoadedModel>, ClientError> {
        let r: PsResponse = self.get_json(base, "/api/ps", t).await?;
        Ok(r.models)
    }

    /// `POST /api/show`.
    pub async fn show(&self, base: &str, model: &str, t: Timeouts) -> Result<Value, ClientError> {
        let url = join(base, "/api/show");
        let deadline = Instant::now() + t.total;
        let req = self
            .http
            .post(&url)
            .timeout(t.total)
            .json(&serde_json::json!({ "model": model }));
        let resp = self.send(req, &url, &t, deadline).await?;
        resp.json().await.map_err(|e| ClientError::Protocol {
            url,
            message: e.to_string(),
        })
    }

    /// `POST /api/chat`, streamed or not; `on_text` sees each piece of text as it arrives.
    pub async fn chat(
        &self,
        base: &str,
        req: &ChatRequest,
        t: Timeouts,
        on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        self.complete(base, "/api/chat", req, req.stream, t, on_text)
            .await
    }

    /// `POST /api/generate`, streamed or not.
    pub async fn generate(
        &self,
        base: &str,
        req: &GenerateRequest,
        t: Timeouts,
        on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        self.complete(base, "/api/generate", req, req.stream, t, on_text)
            .await
    }

    async fn complete<B: Serialize>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        stream: bool,
        t: Timeouts,
        mut on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        let url = join(base, path);
        let deadline = Instant::now() + t.total;
        let req = self
            .http
            .post(&url)
            .header(
                "Accept",
                if stream {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            )
            .json(body);
        let resp = self.send(req, &url, &t, deadline).await?;
        let mut out = Completion::default();
        let mut decoder = LineDecoder::new(MAX_LINE);
        let mut body = resp.bytes_stream();
        let mut finished = false;
        loop {
            let wait = deadline.min(Instant::now() + t.idle);
            let next = match timeout_at(wait, body.next()).await {
                Err(_) => {
                    let (what, secs) = if Instant::now() >= deadline {
                        ("total", t.total.as_secs_f64())
                    } else {
                        ("silent too long", t.idle.as_secs_f64())
                    };
                    return Err(ClientError::Timeout { url, what, secs });
                }
                Ok(n) => n,
            };
            let lines = match next {
                Some(Ok(bytes)) => decoder.push(&bytes),
                Some(Err(e)) => {
                    return Err(ClientError::Dropped {
                        url,
                        detail: format!(" ({})", root_cause(&e)),
                    })
                }
                None => {
                    // The body ended: handle what is left, then stop.
                    finished = true;
                    Ok(decoder.finish().into_iter().collect())
                }
            }
            .map_err(|e| ClientError::Protocol {
                url: url.clone(),
                message: format!("a reply line is longer than {} bytes", e.0.min(MAX_LINE)),
            })?;
            for line in lines {
                let chunk: StreamChunk =
                    serde_json::from_slice(&line).map_err(|e| ClientError::Protocol {
                        url: url.clone(),
                        message: format!(
                            "a reply line is not JSON ({e}): {}",
                            String::from_utf8_lossy(&line)
                                .chars()
                                .take(120)
                                .collect::<String>()
                        ),
                    })?;
                if let Some(message) = chunk.error {
                    return Err(ClientError::Stream { url, message });
                }
                let text = chunk.text();
                if !text.is_empty() {
                    on_text(text);
                    out.text.push_str(text);
                }
                if chunk.done {
                    out.done_reason = chunk.done_reason;
                    out.prompt_eval_count = chunk.prompt_eval_count.unwrap_or(0);
                    out.eval_count = chunk.eval_count.unwrap_or(0);
                    out.eval_duration = chunk.eval_duration.unwrap_or(0);
                    out.total_duration = chunk.total_duration.unwrap_or(0);
                    out.load_duration = chunk.load_duration.unwrap_or(0);
                    return Ok(out);
                }
                if !stream {
                    // A non-streamed reply without done:true is still the whole reply.
                    return Ok(out);
                }
            }
            if finished {
                return Err(ClientError::Dropped {
                    url,
                    detail: " (the stream ended without a final `done` line)".into(),
                });
            }
        }
    }
}

/// The innermost cause of a reqwest error, which is the part a user can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
