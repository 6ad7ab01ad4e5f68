//! Relaying one generation through the process's scheduler: a slot on a free
//! host, deadlines from the node's latency model, retries on other hosts and
//! hedges on idle ones — all before the reply begins, so the client sees
//! only bytes from the attempt that won. A whole reply (`"stream": false`) is
//! gathered inside the attempt, so any failure is retried. A streamed reply
//! is committed at its first piece: from there it is passed on as it arrives,
//! the winner's slot held until it ends; if it breaks, the client gets an
//! error line (Ollama) or error event (OpenAI), never a silent cut.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::anthropic_out::AnthropicOut;
use super::errors::ApiError;
use super::observe::{End, Tally};
use super::replies::{ollama_piece_owned, Done, LineError, Piece, SseReader};
use super::responses_out::ResponsesOut;
use super::state::Shared;
use super::writers::{ollama_error_line, sse_error, Collected, OllamaOut, OpenAiOut};
use crate::nodes::Node;
use crate::ollama::client::Reader;
use crate::ollama::{ClientError, ErrorKind, Timeouts};
use crate::scheduler::{Attempt, Held, Measured, Pool, Task, TaskFailed};

/// The API a node speaks for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Ollama NDJSON (`/api/chat`, `/api/generate`).
    Ollama,
    /// OpenAI server-sent events (llama-server's `/v1/chat/completions`).
    OpenAi,
}

/// A generation to relay.
pub(crate) struct Job {
    pub pool: Pool,
    /// For notices: what and for which model.
    pub label: String,
    pub model: String,
    pub path: &'static str,
    /// The body for the node (always asking for a stream).
    pub body: Bytes,
    pub wire: Wire,
}

impl Job {
    fn task(&self, limits: Timeouts) -> Task<'_> {
        Task {
            label: &self.label,
            model: &self.model,
            prompt_tokens: self.body.len() / 4,
            limits,
            own_bound: false,
        }
    }
}

/// A node's answer that is the client's problem (bad options, a model it
/// lacks after all): passed on as it is, neither retried nor held against the node.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub status: u16,
    pub message: String,
}

impl Refused {
    pub fn error(&self) -> ApiError {
        ApiError::new(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            self.message.clone(),
        )
    }
}

/// Statuses that say the request was wrong, not the node.
fn client_fault(status: u16) -> bool {
    matches!(status, 400 | 404 | 405 | 413 | 422)
}

enum Opened {
    Reply(Box<Upstream>),
    Refused(Refused),
}

/// A node's reply being read, piece by piece.
pub struct Upstream {
    reader: Reader,
    url: String,
    wire: Wire,
    sse: SseReader,
    queue: VecDeque<Piece>,
    /// The final piece was read (or the reply failed).
    ended: bool,
}

impl Upstream {
    /// Send the request and read until its first piece that a client would see.
    async fn open(
        client: &crate::ollama::Client,
        a: &Attempt,
        job: &Job,
    ) -> Result<Opened, ClientError> {
        let url = format!("{}{}", a.node.url().trim_end_matches('/'), job.path);
        let accept = match job.wire {
            Wire::Ollama => "application/x-ndjson",
            Wire::OpenAi => "text/event-stream",
        };
        let started = Instant::now();
        let t = a.timeouts;
        let resp = match client
            .send_bytes(&url, job.body.clone(), accept, &t, started + t.total)
            .await
        {
            Ok(r) => r,
            Err(ClientError {
                kind: ErrorKind::Http { status, message },
                ..
            }) if client_fault(status) => return Ok(Opened::Refused(Refused { status, message })),
            Err(ClientError {
                kind: ErrorKind::TooLarge { message },
                ..
            }) => {
                return Ok(Opened::Refused(Refused {
                    status: 400,
                    message,
                }))
            }
            Err(e) => return Err(e),
        };
        let mut up = Upstream {
            reader: Reader::new(resp, t, started),
            url,
            wire: job.wire,
            sse: SseReader::default(),
            queue: VecDeque::new(),
            ended: false,
        };
        loop {
            if let Some(p) = up.queue.iter().find(|p| p.meaningful()) {
                a.progress.piece(&p.content);
                return Ok(Opened::Reply(Box::new(up)));
            }
            if up.ended {
                return Err(up.fail(ErrorKind::Reset {
                    after_first_token: false,
                    detail: " (the reply ended before it said anything)".into(),
                }));
            }
            up.fill().await?;
        }
    }

    fn fail(&self, kind: ErrorKind) -> ClientError {
        ClientError::new(&self.url, kind)
    }

    /// Read the next lines into the queue.
    async fn fill(&mut self) -> Result<(), ClientError> {
        let lines = match self.reader.next_lines().await {
            Ok(l) => l,
            Err(kind) => {
                self.ended = true;
                return Err(self.fail(kind));
            }
        };
        for line in lines {
            if self.ended {
                break;
            }
            let pieces = match self.wire {
                Wire::Ollama => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    ollama_piece_owned(line).map(|p| vec![p])
                }
                Wire::OpenAi => self.sse.line(&line),
            };
            match pieces {
                Ok(ps) => {
                    for p in ps {
                        self.ended |= p.done.is_some();
                        self.queue.push_back(p);
                    }
                }
                Err(e) => {
                    self.ended = true;
                    return Err(self.fail(match e {
                        LineError::Model(message) => ErrorKind::Model { message },
                        LineError::Bad(message) => ErrorKind::BadReply { message },
                    }));
                }
            }
        }
        if self.reader.ended && !self.ended {
            self.ended = true;
            let tail = match self.wire {
                Wire::OpenAi => self.sse.end_of_body(),
                Wire::Ollama => None,
            };
            match tail {
                Some(ps) => self.queue.extend(ps),
                None => {
                    return Err(self.fail(ErrorKind::Reset {
                        after_first_token: self.reader.first_at.is_some(),
                        detail: " (the reply ended before its final piece)".into(),
                    }))
                }
            }
        }
        Ok(())
    }

    /// The next piece; `None` after the final one.
    pub async fn next(&mut self) -> Option<Result<Piece, ClientError>> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Some(Ok(p));
            }
            if self.ended {
                return None;
            }
            if let Err(e) = self.fill().await {
                return Some(Err(e));
            }
        }
    }

    /// What the whole reply measured, for the node's latency model.
    pub fn measured(&self, d: &Done) -> Measured {
        let d = &d.counts;
        let rate = |n: u64, ns: u64| (n > 0 && ns > 0).then(|| n as f64 * 1e9 / ns as f64);
        Measured {
            first_token_ms: self.reader.first_token_ms(),
            tokens_per_sec: rate(d.eval_count, d.eval_duration),
            prompt_tokens_per_sec: rate(d.prompt_eval_count, d.prompt_eval_duration),
            load_ms: (d.load_duration > 0).then(|| d.load_duration as f64 / 1e6),
            reply_tokens: (d.eval_count > 0).then_some(d.eval_count),
        }
    }
}

/// Scheduler notices (retries, hedges) go to the log and the dashboard.
pub(crate) fn notice(shared: &Shared) -> impl Fn(String) + Sync + '_ {
    move |line: String| {
        shared.log(&line);
        shared.hub.notice(line);
    }
}

/// A request the scheduler gave up on: counted on its tally; the error its
/// client gets (busy, with a Retry-After for the pool, when the line was full).
pub(crate) fn gave_up(
    shared: &Shared,
    tally: &Tally,
    f: &TaskFailed,
    model: &str,
    pool: &Pool,
) -> ApiError {
    tally.gave_up(f);
    ApiError::from_failure(f, model, shared.retry_after(pool.nodes()))
}

/// The whole reply, retried or hedged as a whole.
pub async fn collect(
    shared: &Shared,
    job: &Job,
    tally: &Tally,
) -> Result<Result<Collected, Refused>, ApiError> {
    let task = job.task(shared.limits());
    let say = notice(shared);
    let result = shared
        .sched
        .run(
            &job.pool,
            &task,
            |a: Attempt| async move {
                let (node, waited) = (a.node.clone(), a.waited);
                let mut up = match Upstream::open(&shared.client, &a, job).await? {
                    Opened::Refused(r) => return Ok(((Err(r), node, waited), Measured::default())),
                    Opened::Reply(up) => *up,
                };
                let mut c = Collected::default();
                while let Some(p) = up.next().await {
                    let p = p?;
                    if p.meaningful() {
                        a.progress.piece(&p.content);
                    }
                    c.add(p);
                }
                let m = up.measured(&c.done);
                Ok(((Ok(c), node, waited), m))
            },
            &say,
        )
        .await;
    match result {
        Ok(((reply, node, waited), attr)) => {
            tally.ran(&node, waited, attr.retries, attr.hedges);
            Ok(reply)
        }
        Err(f) => Err(gave_up(shared, tally, &f, &job.model, &job.pool)),
    }
}

/// A reply that has begun: its node's slot held while the rest is read.
pub(crate) struct Begun {
    pub upstream: Upstream,
    pub held: Held,
}

/// Start a streamed reply: returns once its first piece arrived.
pub(crate) async fn begin(
    shared: &Shared,
    job: &Job,
    tally: &Tally,
) -> Result<Result<Begun, Refused>, ApiError> {
    let task = job.task(shared.limits());
    let say = notice(shared);
    let result = shared
        .sched
        .run_held(
            &job.pool,
            &task,
            |a: Attempt| async move {
                let (node, waited) = (a.node.clone(), a.waited);
                match Upstream::open(&shared.client, &a, job).await? {
                    Opened::Refused(r) => Ok(((Err(r), node, waited), Measured::default())),
                    Opened::Reply(up) => {
                        let m = Measured {
                            first_token_ms: up.reader.first_token_ms(),
                            ..Default::default()
                        };
                        Ok(((Ok(*up), node, waited), m))
                    }
                }
            },
            &say,
        )
        .await;
    match result {
        Ok(((reply, node, waited), attr, held)) => {
            tally.ran(&node, waited, attr.retries, attr.hedges);
            // A refusal lets go of the node's slot here.
            Ok(reply.map(|upstream| Begun { upstream, held }))
        }
        Err(f) => Err(gave_up(shared, tally, &f, &job.model, &job.pool)),
    }
}

/// How pieces are written for the client.
pub enum Writer {
    Ollama(OllamaOut),
    OpenAi(OpenAiOut),
    /// OpenAI's Responses API.
    Responses(Box<ResponsesOut>),
    /// Anthropic's Messages API.
    Anthropic(AnthropicOut),
}

impl Writer {
    fn pieces(&mut self, p: &Piece) -> Vec<Bytes> {
        match self {
            Writer::Ollama(o) => vec![o.line(p)],
            Writer::OpenAi(o) => o.events(p),
            Writer::Responses(o) => o.events(p),
            Writer::Anthropic(o) => o.events(p),
        }
    }

    fn error(&mut self, msg: &str) -> Bytes {
        match self {
            Writer::Ollama(_) => ollama_error_line(msg),
            Writer::OpenAi(_) => sse_error(msg),
            Writer::Responses(o) => o.error(msg),
            Writer::Anthropic(o) => o.error(msg),
        }
    }

    fn content_type(&self) -> &'static str {
        match self {
            Writer::Ollama(_) => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }

    /// The whole reply as one JSON object.
    pub fn whole(&mut self, c: &Collected) -> Value {
        match self {
            Writer::Ollama(o) => o.whole(c),
            Writer::OpenAi(o) => o.whole(c),
            Writer::Responses(o) => o.whole(c),
            Writer::Anthropic(o) => o.whole(c),
        }
    }

    /// An error in this client's API.
    pub(crate) fn reject(&self, e: ApiError) -> Response {
        match self {
            Writer::Ollama(_) => e.ollama(),
            Writer::OpenAi(_) | Writer::Responses(_) => e.openai(),
            Writer::Anthropic(_) => e.anthropic(),
        }
    }
}

struct Relay {
    upstream: Upstream,
    held: Option<Held>,
    node: Arc<Node>,
    writer: Writer,
    pending: VecDeque<Bytes>,
    done: bool,
    cut: watch::Receiver<bool>,
    tally: Tally,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The upstream request
        // is closed and the slot freed with it.
        self.tally.stream_ended(End::Gone, None);
    }
}

impl Relay {
    /// Everything pending as one chunk (one write for the lines read together).
    fn take_pending(&mut self) -> Option<Bytes> {
        match self.pending.len() {
            0 => None,
            1 => self.pending.pop_front(),
            _ => {
                let n = self.pending.iter().map(Bytes::len).sum();
                let mut all = Vec::with_capacity(n);
                for b in self.pending.drain(..) {
                    all.extend_from_slice(&b);
                }
                Some(Bytes::from(all))
            }
        }
    }

    /// Encode a piece; true when it was the last.
    fn put(&mut self, p: Piece) -> bool {
        let ended = p.done.clone();
        let out = self.writer.pieces(&p);
        self.pending.extend(out);
        match ended {
            Some(d) => {
                if let Some(h) = self.held.take() {
                    h.succeeded(self.upstream.measured(&d));
                }
                self.done = true;
                self.tally.stream_ended(End::Finished, None);
                true
            }
            None => false,
        }
    }

    async fn step(mut self) -> Option<(Result<Bytes, Infallible>, Relay)> {
        loop {
            if let Some(b) = self.take_pending() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                _ = self.cut.wait_for(|c| *c) => None,
                next = self.upstream.next() => Some(next),
            };
            match next {
                None => {
                    let msg = "the gateway is shutting down; the reply was cut short";
                    self.pending.push_back(self.writer.error(msg));
                    self.done = true;
                    self.held = None;
                    self.tally.stream_ended(End::Broken, Some(msg.into()));
                }
                Some(n) => {
                    self.take(n);
                    // Whatever else has arrived already goes out in the same write.
                    while !self.done {
                        match self.upstream.next().now_or_never() {
                            Some(n) => self.take(n),
                            None => break,
                        }
                    }
                }
            }
        }
    }

    /// The next piece of the node's reply (or its failure, or its end).
    fn take(&mut self, next: Option<Result<Piece, ClientError>>) {
        match next {
            Some(Ok(p)) => {
                // This piece, and those already read with it.
                let mut last = self.put(p);
                while !last {
                    match self.upstream.queue.pop_front() {
                        Some(p) => last = self.put(p),
                        None => break,
                    }
                }
            }
            Some(Err(e)) => {
                if let Some(h) = self.held.take() {
                    let line = h.failed(&e);
                    self.tally.stream_ended(End::Broken, Some(e.short()));
                    self.pending.push_back(self.writer.error(&format!(
                        "{} failed after the reply began: {}",
                        self.node.name(),
                        e.short()
                    )));
                    self.tally.notice(line);
                }
                self.done = true;
            }
            None => self.done = true,
        }
    }
}

/// The streamed response for a reply that has begun.
pub fn stream(shared: &Shared, begun: Begun, writer: Writer, tally: Tally) -> Response {
    tally.streaming();
    let node = begun.held.node().clone();
    let ct = writer.content_type();
    let relay = Relay {
        upstream: begun.upstream,
        held: Some(begun.held),
        node,
        writer,
        pending: VecDeque::new(),
        done: false,
        cut: shared.cut.clone(),
        tally: tally.clone(),
    };
    let body = Body::from_stream(futures_util::stream::unfold(relay, Relay::step));
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response();
    tally.headers(&mut resp);
    resp
}

/// The JSON response for a whole reply.
pub fn whole(mut writer: Writer, c: &Collected, tally: &Tally) -> Response {
    let mut resp = axum::Json(writer.whole(c)).into_response();
    tally.headers(&mut resp);
    resp
}
