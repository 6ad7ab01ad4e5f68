//! Why a request to a node failed, classified so callers decide by kind: the
//! fault rules (cool a node down, retry elsewhere, never retry a request that
//! cannot fit) need to know whether the node was unreachable, broke the
//! connection, went silent, answered an HTTP error or sent a bad reply.

use std::fmt;

/// How a connection attempt that timed out begins its reason.
pub(crate) const CONNECT_TIMED_OUT: &str = "connect timed out";

/// A failed request: the URL it went to and what went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{url}: {kind}")]
pub struct ClientError {
    pub url: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// Nothing accepted the connection (refused, unreachable, connect timeout).
    Refused { reason: String },
    /// The connection broke; `after_first_token` says whether text had arrived.
    Reset {
        after_first_token: bool,
        detail: String,
    },
    /// No first piece of the reply within the first-token deadline.
    NoFirstToken { secs: f64 },
    /// The reply started, then went silent for longer than the stall deadline.
    Stall { secs: f64 },
    /// The outer deadline (the agent timeout) passed.
    Deadline { secs: f64 },
    /// An HTTP error status other than "request too large".
    Http { status: u16, message: String },
    /// The request does not fit the node's context window (HTTP 400 about
    /// context size): not a node fault, and no node with the same or a smaller
    /// context can serve it.
    TooLarge { message: String },
    /// The model reported an error inside a 200 stream (an `{"error"}` line).
    Model { message: String },
    /// The reply is not what the API promises (not JSON, a line too long).
    BadReply { message: String },
    /// The request was given up on purpose (another attempt won, the user cancelled).
    Cancelled,
}

impl ClientError {
    pub fn new(url: impl Into<String>, kind: ErrorKind) -> ClientError {
        ClientError {
            url: url.into(),
            kind,
        }
    }

    /// True when the node could not be reached at all (as opposed to a bad reply).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, ErrorKind::Refused { .. })
    }

    /// Nothing listens there: the connection was refused (or the network
    /// said at once that the address cannot be reached), as opposed to a
    /// connection attempt that timed out.
    pub fn is_refused(&self) -> bool {
        matches!(&self.kind, ErrorKind::Refused { reason } if !reason.starts_with(CONNECT_TIMED_OUT))
    }

    /// True when the failure says something about the node (it should be
    /// suspected or cooled); false for a request that was too large or
    /// cancelled, or for a model the node says it does not have.
    pub(crate) fn is_node_fault(&self) -> bool {
        !matches!(self.kind, ErrorKind::TooLarge { .. } | ErrorKind::Cancelled)
            && !self.is_missing_model()
    }

    /// The node says it does not have the model: Ollama's 404 `model 'x' not
    /// found` (`model "x" not found, try pulling it first` in newer releases).
    pub(crate) fn is_missing_model(&self) -> bool {
        match &self.kind {
            ErrorKind::Http { status, message } => {
                let m = message.to_ascii_lowercase();
                *status == 404 && m.contains("model") && m.contains("not found")
            }
            _ => false,
        }
    }

    /// The kind alone, short enough for a one-line notice.
    pub fn short(&self) -> String {
        let s = self.kind.to_string();
        if s.chars().count() > 160 {
            s.chars().take(157).collect::<String>() + "..."
        } else {
            s
        }
    }
}

impl ErrorKind {
    /// A stable one-word name (metrics, JSON, the dashboard).
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::Refused { .. } => "refused",
            ErrorKind::Reset { .. } => "reset",
            ErrorKind::NoFirstToken { .. } => "no_first_token",
            ErrorKind::Stall { .. } => "stall",
            ErrorKind::Deadline { .. } => "deadline",
            ErrorKind::Http { .. } => "http",
            ErrorKind::TooLarge { .. } => "too_large",
            ErrorKind::Model { .. } => "model_error",
            ErrorKind::BadReply { .. } => "bad_reply",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Refused { reason } => write!(f, "cannot connect: {reason}"),
            ErrorKind::Reset {
                after_first_token,
                detail,
            } => {
                let when = if *after_first_token {
                    "in the middle of the reply"
                } else {
                    "before the reply started"
                };
                write!(f, "connection dropped {when}{detail}")
            }
            ErrorKind::NoFirstToken { secs } => {
                write!(f, "no answer within {secs:.1}s (no first token)")
            }
            ErrorKind::Stall { secs } => {
                write!(f, "the reply stalled: silent for {secs:.1}s")
            }
            ErrorKind::Deadline { secs } => write!(f, "no complete answer within {secs:.1}s"),
            ErrorKind::Http { status, message } => write!(f, "HTTP {status}: {message}"),
            ErrorKind::TooLarge { message } => write!(f, "request too large: {message}"),
            ErrorKind::Model { message } => write!(f, "error inside the stream: {message}"),
            ErrorKind::BadReply { message } => write!(f, "unexpected reply: {message}"),
            ErrorKind::Cancelled => write!(f, "cancelled"),
        }
    }
}

/// Whether an HTTP 400 message says the request exceeds the context window
/// (llama-server: "exceeds the available context size"; Ollama: "input length
/// exceeds the context length", "prompt is too long").
pub(crate) fn is_context_overflow(status: u16, message: &str) -> bool {
    if status != 400 && status != 413 {
        return false;
    }
    let m = message.to_ascii_lowercase();
    (m.contains("context") && (m.contains("exceed") || m.contains("too long")))
        || m.contains("prompt is too long")
        || m.contains("too many tokens")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_overflow_messages() {
        assert!(is_context_overflow(
            400,
            "request (1794 tokens) exceeds the available context size (1024 tokens), try increasing it"
        ));
        assert!(is_context_overflow(
            400,
            "input length exceeds the context length"
        ));
        assert!(!is_context_overflow(
            500,
            "exceeds the available context size"
        ));
        assert!(!is_context_overflow(400, "invalid JSON body"));
    }

    #[test]
    fn display_names_the_url_and_the_kind() {
        let e = ClientError::new(
            "http://h:1/api/chat",
            ErrorKind::Http {
                status: 500,
                message: "boom".into(),
            },
        );
        assert_eq!(e.to_string(), "http://h:1/api/chat: HTTP 500: boom");
        assert_eq!(e.short(), "HTTP 500: boom");
        assert!(e.is_node_fault());
        assert!(!ClientError::new("u", ErrorKind::Cancelled).is_node_fault());
        for message in [
            "model 'nope' not found",
            "model \"nope\" not found, try pulling it first",
        ] {
            let missing = ClientError::new(
                "u",
                ErrorKind::Http {
                    status: 404,
                    message: message.into(),
                },
            );
            assert!(missing.is_missing_model() && !missing.is_node_fault());
        }
    }
}
