//! One request's account: a `Tally` made when the request arrives, filled in
//! by its handler (model, node, host, queue wait) and by its reply stream
//! (broken after it began, the client gone), recorded — counters, the log
//! line, the dashboard — when the last part of the request lets go of it,
//! which for a streamed reply is when the stream ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::metrics::{Done, Key};
use super::state::Shared;
use crate::nodes::Node;
use crate::scheduler::{NoSlot, TaskFailed};

/// Response headers naming where a request ran.
pub const NODE_HEADER: &str = "x-synapticllamas-node";
pub const HOST_HEADER: &str = "x-synapticllamas-host";
pub const QUEUE_HEADER: &str = "x-synapticllamas-queue-ms";

/// How a streamed reply ended, if it did not simply finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Finished,
    /// It broke after it began; the client got an error line.
    Broken,
    /// The client went away first.
    Gone,
}

struct Inner {
    shared: Arc<Shared>,
    method: Method,
    /// The route's pattern once the router matched it (`unmatched` until then:
    /// a bounded label whatever paths clients make up).
    route: String,
    /// The path asked for, for the log line of a request no route matched.
    path: String,
    started: Instant,
    status: u16,
    model: Option<String>,
    node: Option<String>,
    host: Option<String>,
    queue_ms: Option<u64>,
    retries: usize,
    hedges: usize,
    /// A streamed reply: how it ended (None while it runs).
    stream: Option<Option<End>>,
    note: Option<String>,
}

/// A request's account (cheap to clone; recorded when the last clone drops).
#[derive(Clone)]
pub(crate) struct Tally(Arc<Mutex<Inner>>);

impl Tally {
    fn new(shared: Arc<Shared>, method: Method, route: String, path: String) -> Tally {
        shared.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Tally(Arc::new(Mutex::new(Inner {
            shared,
            method,
            route,
            path,
            started: Instant::now(),
            status: 0,
            model: None,
            node: None,
            host: None,
            queue_ms: None,
            retries: 0,
            hedges: 0,
            stream: None,
            note: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The route the router matched (its pattern, e.g. `/v1/models/{model}`).
    pub(crate) fn route(&self, pattern: &str) {
        self.lock().route = pattern.to_string();
    }

    /// The model asked for (known to the cluster).
    pub fn model(&self, m: &str) {
        self.lock().model = Some(m.to_string());
    }

    /// Where it ran, after how long in the queue, with how many retries and hedges.
    pub fn ran(&self, node: &Node, waited: Duration, retries: usize, hedges: usize) {
        let mut t = self.lock();
        t.node = Some(node.name().to_string());
        t.host = Some(node.host.clone());
        t.queue_ms = Some(waited.as_millis() as u64);
        t.retries = retries;
        t.hedges = hedges;
        let m = &t.shared.metrics;
        m.observe_wait(waited);
        m.retries.fetch_add(retries as u64, Ordering::Relaxed);
        m.hedges.fetch_add(hedges as u64, Ordering::Relaxed);
    }

    /// Where the parts of a split request ran (a batch of embeddings).
    pub(crate) fn ran_on(
        &self,
        nodes: &[Arc<Node>],
        waited: Duration,
        retries: usize,
        hedges: usize,
    ) {
        let Some(first) = nodes.first() else { return };
        self.ran(first, waited, retries, hedges);
        if nodes.len() > 1 {
            let mut t = self.lock();
            t.node = Some(nodes.iter().map(|n| n.name()).collect::<Vec<_>>().join(","));
            let mut hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
            hosts.dedup();
            t.host = Some(hosts.join(","));
        }
    }

    /// The request could not run: count its retries, or its rejection when
    /// the queue was full.
    pub(crate) fn gave_up(&self, f: &TaskFailed) {
        let t = self.lock();
        let m = &t.shared.metrics;
        m.retries
            .fetch_add(f.attempts.len().saturating_sub(1) as u64, Ordering::Relaxed);
        if f.stopped == NoSlot::QueueFull {
            m.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Turned away before it was queued (the queue was full).
    pub fn rejected(&self) {
        self.lock()
            .shared
            .metrics
            .rejected
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The reply streams: it is recorded when the stream ends.
    pub fn streaming(&self) {
        self.lock().stream = Some(None);
    }

    pub(crate) fn stream_ended(&self, end: End, note: Option<String>) {
        let mut t = self.lock();
        if let Some(s) = &mut t.stream {
            if s.is_none() {
                *s = Some(end);
                t.note = note;
            }
        }
    }

    /// A line for the log and the dashboard (a node failed mid-reply).
    pub fn notice(&self, line: String) {
        let shared = self.lock().shared.clone();
        shared.log(&line);
        shared.hub.notice(line);
    }

    /// The headers naming the node, its host and the queue wait.
    pub fn headers(&self, resp: &mut Response) {
        let t = self.lock();
        let h = resp.headers_mut();
        for (name, value) in [
            (NODE_HEADER, t.node.clone()),
            (HOST_HEADER, t.host.clone()),
            (QUEUE_HEADER, t.queue_ms.map(|m| m.to_string())),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert(name, v);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let m = &self.shared.metrics;
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        let end = match self.stream {
            // No response was ever made: the client left while it waited.
            None if self.status == 0 => Some(End::Gone),
            None => Some(End::Finished),
            Some(e) => e,
        };
        let status = match end {
            // A reply abandoned by its client, as nginx counts it.
            None | Some(End::Gone) => {
                m.disconnects.fetch_add(1, Ordering::Relaxed);
                499
            }
            Some(End::Broken) => {
                m.broken_streams.fetch_add(1, Ordering::Relaxed);
                self.status
            }
            Some(End::Finished) => self.status,
        };
        let seconds = self.started.elapsed().as_secs_f64();
        let done = Done {
            key: Key {
                route: self.route.clone(),
                model: self.model.clone().unwrap_or_else(|| "-".into()),
                node: self.node.clone().unwrap_or_else(|| "-".into()),
                status,
            },
            seconds,
            queue_ms: self.queue_ms,
            host: self.host.clone(),
        };
        m.record(&done);
        let shown = if self.route == UNMATCHED {
            &self.path
        } else {
            &self.route
        };
        let mut line = format!("{} {shown}", self.method);
        if let Some(model) = &self.model {
            line.push_str(&format!(" {model}"));
        }
        if let (Some(n), Some(h)) = (&self.node, &self.host) {
            line.push_str(&format!(" → {n} ({h})"));
        }
        line.push_str(&format!(" {status} · {:.0} ms", seconds * 1000.0));
        if let Some(q) = self.queue_ms {
            line.push_str(&format!(" · queued {q} ms"));
        }
        if self.retries > 0 {
            line.push_str(&format!(
                " · {} retr{}",
                self.retries,
                if self.retries == 1 { "y" } else { "ies" }
            ));
        }
        if self.hedges > 0 {
            line.push_str(" · hedged");
        }
        match end {
            Some(End::Broken) => line.push_str(" · broke after it began"),
            None | Some(End::Gone) => line.push_str(" · client went away"),
            Some(End::Finished) => {}
        }
        if let Some(n) = &self.note {
            line.push_str(&format!(" ({n})"));
        }
        self.shared.log(&line);
        self.shared.hub.touch();
    }
}

/// The route label of a request no route matched.
pub(crate) const UNMATCHED: &str = "unmatched";

/// The dashboard's pages, all under one label.
const DASHBOARD: &str = "/dashboard";

/// A path as a log line shows it: printable, and not too long.
fn shown_path(path: &str) -> String {
    let mut s: String = path
        .chars()
        .take(120)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if path.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// Middleware around everything: a `Tally` for every request, refused or
/// unknown ones included (handlers find it in the request's extensions); the
/// status is filled in from the response.
pub(crate) async fn observe(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let route = if path == DASHBOARD || path.starts_with("/dashboard/") {
        DASHBOARD
    } else {
        UNMATCHED
    };
    let tally = Tally::new(
        shared,
        req.method().clone(),
        route.to_string(),
        shown_path(path),
    );
    req.extensions_mut().insert(tally.clone());
    let resp = next.run(req).await;
    tally.lock().status = resp.status().as_u16();
    resp
}

/// Route middleware: the request's route label, once the router matched it.
pub(crate) async fn label(req: Request, next: Next) -> Response {
    if let (Some(t), Some(p)) = (
        req.extensions().get::<Tally>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        t.route(p.as_str());
    }
    next.run(req).await
}
