//! The gateway's connections, served by hyper's HTTP/1.1 (axum's own `serve`
//! has no settings):
//!
//! - a connection has `--header-timeout` seconds to send a request's head,
//!   counted from when it connected or its previous reply ended — hyper's
//!   header read timeout, which therefore also closes keep-alive connections
//!   left idle that long, and a client trickling its head byte by byte;
//! - at most `--max-connections` are open at once: beyond it a new connection
//!   is accepted but not read until another closes (the rest wait in the
//!   kernel's listen backlog), as Go's `LimitListener` does; the first one
//!   that waits in a while says so in the log, and each is counted;
//! - on stop no new connection is accepted, idle ones close, and those with a
//!   request in flight close when it ends (hyper-util's graceful shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::state::Shared;

/// Accept errors that concern one connection only (it went away first).
fn lost_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serve `app` on `listener` until `stop` turns true, then let the open
/// connections finish.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let max = shared.config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout);
    // Said once each time the limit is reached (not for every connection).
    let mut said_full = false;
    let mut said_accept_error = false;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if lost_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                if !said_accept_error {
                    shared.log(&format!("cannot accept a connection: {e} (retrying)"));
                    said_accept_error = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        said_accept_error = false;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                said_full = false;
                p
            }
            Err(_) => {
                shared
                    .metrics
                    .connections_waited
                    .fetch_add(1, Ordering::Relaxed);
                if !said_full {
                    shared.log(&format!(
                        "connection from {peer} waits: {max} connections are open \
                         (--max-connections); new ones wait until one closes"
                    ));
                    said_full = true;
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let conn = connection(&http, tcp, app.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(Open::counted(&shared, permit).run(conn));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection served by hyper.
fn connection(
    http: &http1::Builder,
    tcp: TcpStream,
    app: Router,
) -> http1::Connection<TokioIo<TcpStream>, TowerToHyperService<Router>> {
    // Small NDJSON lines go out at once.
    let _ = tcp.set_nodelay(true);
    http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
}

/// An open connection: its slot and its count, both let go when it closes.
struct Open {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Open {
    fn counted(shared: &Arc<Shared>, permit: OwnedSemaphorePermit) -> Open {
        shared.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Open {
            shared: shared.clone(),
            _permit: permit,
        }
    }

    async fn run<F: std::future::Future<Output = hyper::Result<()>>>(self, conn: F) {
        // A connection's own failure (reset, header timeout) ends only it.
        if let Err(e) = conn.await {
            if e.is_timeout() {
                let m = &self.shared.metrics;
                m.header_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(self);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared
            .metrics
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: a body whose declared length is over `--max-body-mb` is
/// refused at once (413, in the client's API), before a byte of it is read.
pub(super) async fn declared_length(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = shared.config.max_body as u64;
    match declared {
        Some(n) if n > max => super::errors::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is too large: {n} bytes declared, at most {max} accepted \
                 (--max-body-mb {})",
                max / (1024 * 1024)
            ),
        )
        .for_path(req.uri().path()),
        _ => next.run(req).await,
    }
}
