//! Errors as the client's API spells them: Ollama's `{"error": "…"}` or
//! OpenAI's `{"error": {"message", "type", "param", "code"}}`, with the right
//! status, and `Retry-After` when waiting would help.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ollama::ErrorKind;
use crate::scheduler::{NoSlot, TaskFailed};

/// Ollama's wording when its own queue is full.
pub const BUSY: &str = "server busy, please try again.  maximum pending requests exceeded";

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds a client should wait before trying again.
    pub retry_after: Option<u64>,
    /// OpenAI's `param` (the field at fault), when known.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            param: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Ollama's words for a model no node has.
    pub fn model_not_found(model: &str) -> ApiError {
        ApiError {
            param: Some("model"),
            ..ApiError::new(StatusCode::NOT_FOUND, format!("model '{model}' not found"))
        }
    }

    pub fn busy(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, BUSY)
        }
    }

    pub(crate) fn with_param(mut self, param: &'static str) -> ApiError {
        self.param = Some(param);
        self
    }

    /// What a task that could not run means for the client.
    pub(crate) fn from_failure(f: &TaskFailed, model: &str, retry_after: u64) -> ApiError {
        if f.stopped == NoSlot::QueueFull {
            return ApiError::busy(retry_after);
        }
        let Some(last) = f.attempts.last() else {
            return match f.stopped {
                NoSlot::Deadline => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the request timed out waiting for a free host",
                ),
                other => ApiError {
                    retry_after: Some(retry_after.max(1)),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        match &f.pool_health {
                            Some(h) => {
                                format!("no node can take a request for {model} now: {other} ({h})")
                            }
                            None => format!("no node can take a request for {model} now: {other}"),
                        },
                    )
                },
            };
        };
        match &last.error.kind {
            ErrorKind::TooLarge { message } => ApiError::bad_request(message.clone()),
            ErrorKind::Deadline { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, failure_text(f))
            }
            ErrorKind::Model { message } if f.attempts.len() == 1 => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.clone())
            }
            _ => ApiError::new(StatusCode::BAD_GATEWAY, failure_text(f)),
        }
    }

    /// `{"error": "message"}`.
    pub fn ollama(self) -> Response {
        let body = json!({ "error": self.message });
        self.respond(body)
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai(self) -> Response {
        let (kind, code) = match self.status.as_u16() {
            400 | 413 | 422 => ("invalid_request_error", None),
            401 => ("authentication_error", Some("invalid_api_key")),
            404 => ("not_found_error", Some("model_not_found")),
            405 => ("invalid_request_error", Some("method_not_allowed")),
            429 | 503 => ("server_busy", None),
            _ => ("api_error", None),
        };
        let code = match self.status.as_u16() {
            404 if self.param != Some("model") => None,
            _ => code,
        };
        let body = json!({ "error": {
            "message": self.message, "type": kind, "param": self.param, "code": code,
        }});
        self.respond(body)
    }

    /// Anthropic's `{"type": "error", "error": {"type", "message"}}`.
    pub fn anthropic(self) -> Response {
        let body = json!({"type": "error", "error": {
            "type": anthropic_kind(self.status.as_u16()), "message": self.message,
        }});
        self.respond(body)
    }

    /// In the shape of the API `path` belongs to (for answers given before a
    /// handler runs: unknown paths, wrong methods, keys, declared sizes).
    pub(crate) fn for_path(self, path: &str) -> Response {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            self.anthropic()
        } else if path.starts_with("/v1/") {
            self.openai()
        } else {
            self.ollama()
        }
    }

    fn respond(self, body: serde_json::Value) -> Response {
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Anthropic's error `type` for a status.
pub(crate) fn anthropic_kind(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Which nodes were tried and how each failed, in one line.
fn failure_text(f: &TaskFailed) -> String {
    let tried: Vec<String> = f
        .attempts
        .iter()
        .map(|a| format!("{} ({})", a.node, a.error.short()))
        .collect();
    format!("every node tried failed: {}", tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ollama::ClientError;
    use crate::scheduler::FailedAttempt;

    #[test]
    fn a_full_queue_is_ollamas_busy_with_retry_after() {
        let f = TaskFailed {
            label: "x".into(),
            attempts: vec![],
            stopped: NoSlot::QueueFull,
            pool_health: None,
        };
        let e = ApiError::from_failure(&f, "m", 3);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.message, BUSY);
        let r = e.ollama();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn node_failures_are_a_bad_gateway_naming_each_node() {
        let f = TaskFailed {
            label: "x".into(),
            attempts: vec![FailedAttempt {
                node: "a".into(),
                host: "A".into(),
                error: ClientError::new(
                    "http://a",
                    ErrorKind::Refused {
                        reason: "connection refused".into(),
                    },
                ),
            }],
            stopped: NoSlot::NoUsableHost,
            pool_health: None,
        };
        let e = ApiError::from_failure(&f, "m", 1);
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.message.contains("a (cannot connect"), "{}", e.message);
    }
}
