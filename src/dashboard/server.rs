//! The dashboard's HTTP server: the page, JSON endpoints, `/metrics` and a
//! server-sent-event stream of snapshots.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::hub::Hub;
use super::prom;

/// Least time between two snapshots on one event stream (changes in between coalesce).
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// How often an event stream looks for changes nobody announced (a node's
/// counters changed without a hub call); a snapshot goes out only if it differs.
pub const POLL: Duration = Duration::from_secs(1);
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long `stop` waits for open connections before cutting them.
const STOP_GRACE: Duration = Duration::from_secs(3);

const PAGE: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

#[derive(Clone)]
struct Ctx {
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
    loopback_only: bool,
}

/// A running dashboard; it stops when dropped.
pub struct Dashboard {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Dashboard {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stop serving: event streams end, open requests finish (for at most a
    /// few seconds), the port is free when this returns.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            // Stops accepting at once; open connections are told to close.
            t.abort();
        }
    }
}

/// Serve the dashboard for `hub` on `bind:port` (port 0 = any free port).
/// Bound to a loopback address, requests naming another host are refused
/// (a guard against DNS rebinding).
pub async fn start(hub: Arc<Hub>, bind: IpAddr, port: u16) -> anyhow::Result<super::Dashboard> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let ctx = Ctx {
        hub,
        shutdown: rx.clone(),
        loopback_only: bind.is_loopback(),
    };
    let app = router(ctx);
    let mut stop = rx;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(Dashboard {
        addr,
        shutdown: tx,
        task: Some(task),
    })
}

/// The dashboard's routes, for another server to serve under a path of its
/// own (the gateway serves them under `/dashboard/`). The page's links are
/// relative, so it works under any prefix.
pub fn routes(hub: Arc<Hub>, shutdown: watch::Receiver<bool>, loopback_only: bool) -> Router {
    router(Ctx {
        hub,
        shutdown,
        loopback_only,
    })
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard.css", get(css))
        .route("/dashboard.js", get(js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/api/snapshot",
            get(|s: State<Ctx>| async move { Json(s.hub.snapshot()) }),
        )
        .route(
            "/api/nodes",
            get(|s: State<Ctx>| async move { Json(s.hub.node_views()) }),
        )
        .route(
            "/api/backends",
            get(|s: State<Ctx>| async move { Json(s.hub.backends()) }),
        )
        .route(
            "/api/coordinator",
            get(|s: State<Ctx>| async move { Json(s.hub.coordinator()) }),
        )
        .route(
            "/api/metrics",
            get(|s: State<Ctx>| async move { Json(s.hub.metrics().as_deref().cloned()) }),
        )
        .route("/metrics", get(metrics))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// True when a `Host` header names this machine's loopback (or is absent).
pub fn loopback_host(host: Option<&str>) -> bool {
    let Some(h) = host else { return true };
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip: IpAddr| ip.is_loopback())
}

async fn guard(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if ctx.loopback_only && !loopback_host(host) {
        return (StatusCode::MISDIRECTED_REQUEST, "unknown host\n").into_response();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn text(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page(uri: OriginalUri) -> Response {
    // Served under a prefix without its trailing slash, the page's relative
    // links would miss: send the browser to the slashed address.
    let path = uri.path();
    if !path.ends_with('/') {
        return Redirect::permanent(&format!("{path}/")).into_response();
    }
    text("text/html; charset=utf-8", PAGE)
}

async fn css() -> Response {
    text("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    text("text/javascript; charset=utf-8", JS)
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        prom::render(&ctx.hub),
    )
        .into_response()
}

async fn events(State(ctx): State<Ctx>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = snapshots(ctx.hub.clone(), ctx.shutdown.clone());
    Sse::new(futures_util::StreamExt::map(stream, |v| {
        Ok(Event::default().event("snapshot").data(v))
    }))
    .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

struct Feed {
    hub: Arc<Hub>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    last: Option<String>,
    last_sent: Option<Instant>,
}

/// Snapshots as JSON text: one at once, then one after each change (at most
/// one per `MIN_GAP`), plus any change found by polling every `POLL`. Ends at shutdown.
pub fn snapshots(hub: Arc<Hub>, shutdown: watch::Receiver<bool>) -> impl Stream<Item = String> {
    let feed = Feed {
        changes: hub.subscribe(),
        hub,
        shutdown,
        last: None,
        last_sent: None,
    };
    futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if *f.shutdown.borrow() {
                return None;
            }
            if let Some(at) = f.last_sent {
                tokio::select! {
                    r = f.changes.changed() => if r.is_err() { return None },
                    _ = tokio::time::sleep(POLL) => {}
                    _ = f.shutdown.wait_for(|s| *s) => return None,
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at + MIN_GAP) => {}
                    _ = f.shutdown.wait_for(|s| *s) => return None,
                }
            }
            f.changes.borrow_and_update();
            let json = serde_json::to_string(&f.hub.snapshot()).unwrap_or_default();
            f.last_sent = Some(Instant::now());
            if f.last.as_deref() != Some(json.as_str()) {
                f.last = Some(json.clone());
                return Some((json, f));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_guard() {
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("localhost:8080"),
            Some("LOCALHOST"),
            Some("[::1]:8080"),
            Some("127.0.0.5"),
        ] {
            assert!(loopback_host(ok), "{ok:?}");
        }
        for bad in [
            Some("evil.example:8080"),
            Some("10.0.0.1:8080"),
            Some("[::2]"),
        ] {
            assert!(!loopback_host(bad), "{bad:?}");
        }
    }

    /// On a paused clock: a node's counter changed without any hub call goes
    /// out on the open stream one `POLL` later.
    #[tokio::test(start_paused = true)]
    async fn a_change_nobody_announced_goes_out_one_poll_later() {
        use crate::config::nodes_file::NodeEntry;
        use futures_util::StreamExt;
        let hub = Arc::new(Hub::new());
        let node = Arc::new(crate::nodes::Node::new(
            NodeEntry {
                url: "http://127.0.0.1:1".into(),
                name: "alpha".into(),
                priority: 0,
                host_id: Some("box-a".into()),
                extra: Default::default(),
            },
            false,
        ));
        hub.set_nodes(vec![node.clone()]);
        let (_stop, shutdown) = watch::channel(false);
        let mut stream = Box::pin(snapshots(hub, shutdown));
        let first = stream.next().await.unwrap();
        assert!(first.contains(r#""errors":0"#), "{first}");
        let changed = tokio::time::Instant::now();
        node.state()
            .record_request(Duration::from_millis(5), false, None);
        let next = stream.next().await.unwrap();
        assert!(next.contains(r#""errors":1"#), "{next}");
        assert_eq!(changed.elapsed(), POLL);
    }
}
