//! A node's model store through the client: pull (its progress read line by
//! line), delete, copy, and load or unload a model (an empty generate). Each
//! failure is a classified `ClientError`, as for generations: an answer the
//! node gave (`Http`, or `Model` for an `{"error"}` line of a pull) apart from
//! a node that could not be reached or broke off.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{Client, Reader, Timeouts};
use super::error::{ClientError, ErrorKind};
use super::types::{CopyRequest, DeleteRequest, ProgressLine, PullRequest};

/// How long a pull may stay silent (a large layer's digest is checked without
/// a word) and last in all.
pub const PULL_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    first_token: Duration::from_secs(60),
    idle: Duration::from_secs(900),
    total: Duration::from_secs(24 * 3600),
};

/// Deleting or copying a model: quick, but the disk may be busy.
pub const STORE_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    first_token: Duration::from_secs(60),
    idle: Duration::from_secs(60),
    total: Duration::from_secs(120),
};

/// Loading a model into memory can take minutes on a slow disk.
pub const LOAD_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    first_token: Duration::from_secs(600),
    idle: Duration::from_secs(600),
    total: Duration::from_secs(600),
};

/// Load or unload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    Load,
    Unload,
}

impl Residency {
    /// Ollama's `done_reason` for it.
    pub fn word(self) -> &'static str {
        match self {
            Residency::Load => "load",
            Residency::Unload => "unload",
        }
    }
}

fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

impl Client {
    /// `POST /api/pull` on `base`, streamed: `on_line` sees every progress
    /// line; an `{"error"}` line or a stream that ends before `success` is
    /// the error.
    pub async fn pull(
        &self,
        base: &str,
        model: &str,
        insecure: bool,
        t: Timeouts,
        mut on_line: impl FnMut(&ProgressLine),
    ) -> Result<(), ClientError> {
        let url = url(base, "/api/pull");
        let started = Instant::now();
        let body = PullRequest {
            model: model.to_string(),
            name: None,
            insecure: insecure.then_some(true),
            stream: true,
        };
        let resp = self.send_json(&url, &body, &t, started + t.total).await?;
        let mut reader = Reader::new(resp, t, started);
        loop {
            for raw in reader
                .next_lines()
                .await
                .map_err(|k| ClientError::new(&url, k))?
            {
                let line: ProgressLine = serde_json::from_slice(&raw).map_err(|e| {
                    ClientError::new(
                        &url,
                        ErrorKind::BadReply {
                            message: format!("a pull progress line is not JSON ({e})"),
                        },
                    )
                })?;
                if let Some(message) = line.error {
                    return Err(ClientError::new(&url, ErrorKind::Model { message }));
                }
                on_line(&line);
                if line.status == "success" {
                    return Ok(());
                }
            }
            if reader.ended {
                return Err(ClientError::new(
                    &url,
                    ErrorKind::Reset {
                        after_first_token: reader.first_at.is_some(),
                        detail: " (the pull ended without `success`)".into(),
                    },
                ));
            }
        }
    }

    /// `DELETE /api/delete`.
    pub async fn delete_model(&self, base: &str, model: &str) -> Result<(), ClientError> {
        let url = url(base, "/api/delete");
        let t = STORE_TIMEOUTS;
        let deadline = Instant::now() + t.total;
        let body = DeleteRequest {
            model: model.to_string(),
            name: None,
        };
        let req = self.http.delete(&url).json(&body);
        let resp = self.send(req, &url, &t, deadline).await?;
        Client::body(resp, &url, &t, deadline).await.map(drop)
    }

    /// `POST /api/copy`.
    pub async fn copy_model(
        &self,
        base: &str,
        source: &str,
        destination: &str,
    ) -> Result<(), ClientError> {
        let url = url(base, "/api/copy");
        let t = STORE_TIMEOUTS;
        let deadline = Instant::now() + t.total;
        let body = CopyRequest {
            source: source.to_string(),
            destination: destination.to_string(),
        };
        let resp = self.send_json(&url, &body, &t, deadline).await?;
        Client::body(resp, &url, &t, deadline).await.map(drop)
    }

    /// Load `model` into memory (`keep_alive` passed on when given) or unload
    /// it: an empty `/api/generate`, as Ollama's clients send.
    pub async fn residency(
        &self,
        base: &str,
        model: &str,
        what: Residency,
        keep_alive: Option<&Value>,
    ) -> Result<(), ClientError> {
        let url = url(base, "/api/generate");
        let t = match what {
            Residency::Load => LOAD_TIMEOUTS,
            Residency::Unload => STORE_TIMEOUTS,
        };
        let deadline = Instant::now() + t.total;
        let mut body = json!({"model": model, "stream": false});
        match (what, keep_alive) {
            (Residency::Unload, _) => body["keep_alive"] = json!(0),
            (Residency::Load, Some(k)) => body["keep_alive"] = k.clone(),
            (Residency::Load, None) => {}
        }
        let resp = self.send_json(&url, &body, &t, deadline).await?;
        Client::body(resp, &url, &t, deadline).await.map(drop)
    }
}
