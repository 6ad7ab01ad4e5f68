//! An Ollama HTTP client: reqwest on tokio, NDJSON streams read incrementally,
//! with connect, first-token, idle (stall) and total deadlines. Every failure is
//! a classified `ClientError` (see `error.rs`).

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::error::is_context_overflow;
pub use super::error::{ClientError, ErrorKind};
use super::ndjson::{LineDecoder, MAX_LINE};
use super::types::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the reply to start (headers and its first piece).
    pub first_token: Duration,
    /// Longest silence allowed between two pieces once the reply has started.
    pub idle: Duration,
    /// The outer bound for the whole request.
    pub total: Duration,
}

impl Timeouts {
    /// For quick probes of `/api/tags`, `/api/ps` and the like.
    pub const PROBE: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_secs(2),
        idle: Duration::from_secs(2),
        total: Duration::from_secs(2),
    };

    /// Connect, silence and total limits; the reply may take connect + idle to start.
    pub fn new(connect: Duration, idle: Duration, total: Duration) -> Timeouts {
        Timeouts {
            connect,
            first_token: (connect + idle).min(total),
            idle: idle.min(total),
            total,
        }
    }

    /// For a generation that may take `total` overall.
    pub fn generation(total: Duration) -> Timeouts {
        Timeouts::new(Duration::from_secs(3), Duration::from_secs(120), total)
    }
}

#[derive(Clone)]
pub struct Client {
    pub(super) http: reqwest::Client,
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
            // Nothing here depends on the environment (no proxies, bundled
            // TLS roots): only a bug in these settings could make it fail.
            .expect("the HTTP client's fixed settings are valid");
        Client { http }
    }

    fn map_send_error(url: &str, e: reqwest::Error, t: &Timeouts) -> ClientError {
        let kind = if e.is_connect() {
            let reason = if e.is_timeout() {
                format!(
                    "{} after {:.1}s",
                    super::error::CONNECT_TIMED_OUT,
                    t.connect.as_secs_f64()
                )
            } else {
                root_cause(&e)
            };
            ErrorKind::Refused { reason }
        } else if e.is_timeout() {
            ErrorKind::Deadline {
                secs: t.total.as_secs_f64(),
            }
        } else {
            ErrorKind::Reset {
                after_first_token: false,
                detail: format!(" ({})", root_cause(&e)),
            }
        };
        ClientError::new(url, kind)
    }

    /// Send a request and wait for its headers (at most `first_token`, never past
    /// `deadline`); an error status becomes a classified error.
    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<reqwest::Response, ClientError> {
        let started = Instant::now();
        let resp = match timeout_at(deadline.min(started + t.first_token), req.send()).await {
            Err(_) => return Err(ClientError::new(url, waited_out(started, t, deadline))),
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
            .and_then(|v| error_message(&v))
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
        let kind = if is_context_overflow(status, &message) {
            ErrorKind::TooLarge { message }
        } else {
            ErrorKind::Http { status, message }
        };
        Err(ClientError::new(url, kind))
    }

    /// POST a JSON body; the response once its status is a success.
    pub(crate) async fn send_json<B: Serialize + ?Sized>(
        &self,
        url: &str,
        body: &B,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<reqwest::Response, ClientError> {
        self.send(self.http.post(url).json(body), url, t, deadline)
            .await
    }

    /// POST a body that is already JSON text (relayed as it came, so nothing is
    /// lost in a round trip through a parser); the response once its status is
    /// a success.
    pub(crate) async fn send_bytes(
        &self,
        url: &str,
        body: bytes::Bytes,
        accept: &str,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<reqwest::Response, ClientError> {
        let req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, accept)
            .body(body);
        self.send(req, url, t, deadline).await
    }

    /// `GET base+path`, the body as it came (the gateway relays `/api/tags`,
    /// `/api/ps` and the like), within the probe deadlines `t`.
    pub(crate) async fn get_raw(
        &self,
        base: &str,
        path: &str,
        t: Timeouts,
    ) -> Result<bytes::Bytes, ClientError> {
        let url = join(base, path);
        let deadline = Instant::now() + t.total;
        let resp = self
            .send(self.http.get(&url).timeout(t.total), &url, &t, deadline)
            .await?;
        Self::body(resp, &url, &t, deadline).await
    }

    /// `POST base+path` with a JSON body; the whole (small) reply as it came.
    pub(crate) async fn post_raw(
        &self,
        base: &str,
        path: &str,
        body: bytes::Bytes,
        t: Timeouts,
    ) -> Result<bytes::Bytes, ClientError> {
        let url = join(base, path);
        let deadline = Instant::now() + t.total;
        let resp = self
            .send_bytes(&url, body, "application/json", &t, deadline)
            .await?;
        Self::body(resp, &url, &t, deadline).await
    }

    /// The HTTP status of a GET (any status), or why nothing answered: refused
    /// (nothing listening) or no answer in time (connected, but busy or hung).
    pub(crate) async fn get_status_classified(
        &self,
        url: &str,
        t: Timeouts,
    ) -> Result<u16, ClientError> {
        let started = Instant::now();
        match timeout_at(started + t.total, self.http.get(url).send()).await {
            Err(_) => Err(ClientError::new(
                url,
                ErrorKind::NoFirstToken {
                    secs: t.total.as_secs_f64(),
                },
            )),
            Ok(Err(e)) => Err(Self::map_send_error(url, e, &t)),
            Ok(Ok(r)) => Ok(r.status().as_u16()),
        }
    }

    /// `GET base+path` as JSON (llama-server's `/props`, and the like).
    pub(crate) async fn get_value(
        &self,
        base: &str,
        path: &str,
        t: Timeouts,
    ) -> Result<Value, ClientError> {
        self.get_json(base, path, t).await
    }

    /// A whole (small) body, within the deadline.
    pub(super) async fn body(
        resp: reqwest::Response,
        url: &str,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<bytes::Bytes, ClientError> {
        match timeout_at(deadline, resp.bytes()).await {
            Err(_) => Err(ClientError::new(
                url,
                ErrorKind::Deadline {
                    secs: t.total.as_secs_f64(),
                },
            )),
            Ok(b) => b.map_err(|e| {
                ClientError::new(
                    url,
                    ErrorKind::Reset {
                        after_first_token: true,
                        detail: format!(" ({})", root_cause(&e)),
                    },
                )
            }),
        }
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
        let bytes = Self::body(resp, &url, &t, deadline).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::new(
                &url,
                ErrorKind::BadReply {
                    message: format!("not the JSON Ollama sends ({e})"),
                },
            )
        })
    }

    /// `GET /` — Ollama answers "Ollama is running".
    pub async fn root(&self, base: &str, t: Timeouts) -> Result<String, ClientError> {
        let url = join(base, "/");
        let deadline = Instant::now() + t.total;
        let resp = self
            .send(self.http.get(&url).timeout(t.total), &url, &t, deadline)
            .await?;
        let bytes = Self::body(resp, &url, &t, deadline).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn version(&self, base: &str, t: Timeouts) -> Result<String, ClientError> {
        let v: VersionResponse = self.get_json(base, "/api/version", t).await?;
        Ok(v.version.unwrap_or_else(|| "?".to_string()))
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
        let req = self.http.post(&url).timeout(t.total).json(&ShowRequest {
            model: model.to_string(),
            name: None,
        });
        let resp = self.send(req, &url, &t, deadline).await?;
        let bytes = Self::body(resp, &url, &t, deadline).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::new(
                &url,
                ErrorKind::BadReply {
                    message: e.to_string(),
                },
            )
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

    /// POST `body` to `base+path` and read the reply (a stream when `stream`)
    /// into a completion; `on_text` sees each piece of text as it arrives.
    async fn complete<B: Serialize>(
        &self,
        base: &str,
        path: &str,
        body: &B,
        stream: bool,
        t: Timeouts,
        on_text: impl FnMut(&str),
    ) -> Result<Completion, ClientError> {
        let url = join(base, path);
        let started = Instant::now();
        let deadline = started + t.total;
        let accept = if stream {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let req = self.http.post(&url).header("Accept", accept).json(body);
        let resp = self.send(req, &url, &t, deadline).await?;
        let mut reader = Reader::new(resp, t, started);
        read_completion(&mut reader, stream, on_text)
            .await
            .map_err(|kind| ClientError::new(&url, kind))
    }
}

/// Read a reply to its end: each piece of text goes to `on_text` and into the
/// completion, the counts come from its final (`done`) line. A non-streamed
/// reply is whole in its first line, `done` or not; a stream that ends
/// without a final line was cut off.
async fn read_completion(
    reader: &mut Reader,
    stream: bool,
    mut on_text: impl FnMut(&str),
) -> Result<Completion, ErrorKind> {
    let mut out = Completion::default();
    loop {
        for line in reader.next_lines().await? {
            let chunk: StreamChunk = parse_line(&line)?;
            if let Some(message) = chunk.error {
                return Err(ErrorKind::Model { message });
            }
            let text = chunk.text();
            if !text.is_empty() {
                on_text(text);
                out.text.push_str(text);
            }
            if chunk.done {
                out.counts = chunk.counts();
                out.done_reason = chunk.done_reason;
                out.first_token_ms = reader.first_token_ms();
                return Ok(out);
            }
            if !stream {
                // A non-streamed reply without done:true is still the whole reply.
                out.first_token_ms = reader.first_token_ms();
                return Ok(out);
            }
        }
        if reader.ended {
            return Err(ErrorKind::Reset {
                after_first_token: reader.first_at.is_some(),
                detail: " (the stream ended without a final `done` line)".into(),
            });
        }
    }
}

/// One line of a reply as JSON; a bad reply (quoting the line's start) when
/// it is not.
fn parse_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, ErrorKind> {
    serde_json::from_slice(line).map_err(|e| ErrorKind::BadReply {
        message: format!(
            "a reply line is not JSON ({e}): {}",
            String::from_utf8_lossy(line)
                .chars()
                .take(120)
                .collect::<String>()
        ),
    })
}

/// Reads a streamed body line by line under the first-token, stall and total
/// deadlines. Shared by the Ollama (NDJSON) and OpenAI (SSE) readers.
pub(crate) struct Reader {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>,
    >,
    decoder: LineDecoder,
    t: Timeouts,
    started: Instant,
    deadline: Instant,
    /// When the first piece of the body arrived.
    pub first_at: Option<Instant>,
    /// The body has ended (what it held has been returned).
    pub ended: bool,
}

impl Reader {
    pub(crate) fn new(resp: reqwest::Response, t: Timeouts, started: Instant) -> Reader {
        Reader {
            body: Box::pin(resp.bytes_stream()),
            decoder: LineDecoder::new(MAX_LINE),
            t,
            started,
            deadline: started + t.total,
            first_at: None,
            ended: false,
        }
    }

    pub(crate) fn first_token_ms(&self) -> Option<f64> {
        self.first_at
            .map(|f| (f - self.started).as_secs_f64() * 1000.0)
    }

    /// The next complete lines (possibly none); at the end of the body, what is left.
    pub(crate) async fn next_lines(&mut self) -> Result<Vec<Vec<u8>>, ErrorKind> {
        if self.ended {
            return Ok(Vec::new());
        }
        let wait = match self.first_at {
            None => self.started + self.t.first_token,
            Some(_) => Instant::now() + self.t.idle,
        }
        .min(self.deadline);
        let next = match timeout_at(wait, self.body.next()).await {
            Err(_) => return Err(waited_out_after(self.first_at, &self.t, self.deadline)),
            Ok(n) => n,
        };
        let lines = match next {
            Some(Ok(bytes)) => {
                if self.first_at.is_none() && !bytes.is_empty() {
                    self.first_at = Some(Instant::now());
                }
                self.decoder.push(&bytes)
            }
            Some(Err(e)) => {
                return Err(ErrorKind::Reset {
                    after_first_token: self.first_at.is_some(),
                    detail: format!(" ({})", root_cause(&e)),
                })
            }
            None => {
                self.ended = true;
                Ok(self.decoder.finish().into_iter().collect())
            }
        };
        lines.map_err(|e| ErrorKind::BadReply {
            message: format!("a reply line is longer than {} bytes", e.0.min(MAX_LINE)),
        })
    }
}

/// What ran out while waiting for the reply to start.
fn waited_out(started: Instant, t: &Timeouts, deadline: Instant) -> ErrorKind {
    if Instant::now() >= deadline {
        ErrorKind::Deadline {
            secs: (Instant::now() - started).as_secs_f64(),
        }
    } else {
        ErrorKind::NoFirstToken {
            secs: t.first_token.as_secs_f64(),
        }
    }
}

/// What ran out while reading a reply.
fn waited_out_after(first_at: Option<Instant>, t: &Timeouts, deadline: Instant) -> ErrorKind {
    if Instant::now() >= deadline {
        ErrorKind::Deadline {
            secs: t.total.as_secs_f64(),
        }
    } else if first_at.is_none() {
        ErrorKind::NoFirstToken {
            secs: t.first_token.as_secs_f64(),
        }
    } else {
        ErrorKind::Stall {
            secs: t.idle.as_secs_f64(),
        }
    }
}

/// Ollama's `{"error": "..."}` (or OpenAI's `{"error": {"message": ...}}`).
fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    e.as_str()
        .map(String::from)
        .or_else(|| e.get("message").and_then(|m| m.as_str()).map(String::from))
}

/// The innermost cause of a reqwest error, which is the part a user can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
