//! Why a command failed, by kind, and the one place a failure is printed
//! ([`render_error`]). Handlers return `Err(CommandError)` instead of printing
//! their own `❌` lines; the text each kind prints is the text users (and the
//! tests) have always read.

use super::{Line, Sink};
use crate::command::Usage;

/// Why a command did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The arguments do not fit the command (the parser's message and usage line).
    #[error("{0}")]
    BadArgument(#[from] Usage),
    /// What the command names is not there: a node, a backend, a running
    /// server, a result.
    #[error("{0}")]
    NotFound(String),
    /// The command would duplicate or contradict what is there; nothing changed.
    #[error("{message}")]
    Refused {
        message: String,
        /// A second line: what to do instead.
        hint: Option<String>,
        /// Said as a warning (`⚠️`) rather than a failure: nothing was lost.
        warning: bool,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    File(String),
    /// A node, a subnet, a port: the network did not cooperate.
    #[error("{message}")]
    Network {
        message: String,
        hint: Option<String>,
    },
    /// The knowledge base could not be used or written.
    #[error("{0}")]
    Rag(String),
    /// The Redis settings or environment name no usable server (Redis is
    /// then not used).
    #[error("redis: {0} — Redis stays off")]
    Redis(#[from] crate::redis::target::TargetError),
    /// A query produced no answer.
    #[error("{0}")]
    Query(String),
}

impl CommandError {
    pub fn refused(message: impl Into<String>) -> CommandError {
        CommandError::Refused {
            message: message.into(),
            hint: None,
            warning: false,
        }
    }

    pub fn network(message: impl Into<String>) -> CommandError {
        CommandError::Network {
            message: message.into(),
            hint: None,
        }
    }

    /// The line after the message, if the error says what to do instead.
    fn hint(&self) -> Option<&str> {
        match self {
            CommandError::Refused { hint, .. } | CommandError::Network { hint, .. } => {
                hint.as_deref()
            }
            _ => None,
        }
    }

    fn is_warning(&self) -> bool {
        matches!(self, CommandError::Refused { warning: true, .. })
    }
}

/// Print a failed command's error: its mark and message, then its hint.
pub fn render_error(e: &CommandError, sink: &mut dyn Sink) {
    let (kind, mark) = if e.is_warning() {
        (Line::Warning, "⚠️ ")
    } else {
        (Line::Failure, "❌")
    };
    sink.line(kind, &format!("{mark} {e}"));
    if let Some(h) = e.hint() {
        sink.line(kind, &format!("   {h}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Captured;

    #[derive(Default)]
    struct Kinds(Vec<(Line, String)>);

    impl Sink for Kinds {
        fn line(&mut self, kind: Line, text: &str) {
            self.0.push((kind, text.to_string()));
        }
    }

    #[test]
    fn one_place_prints_a_failure_by_its_kind() {
        let mut k = Kinds::default();
        render_error(
            &CommandError::Network {
                message: "Failed to add node: x is not reachable (refused)".into(),
                hint: Some("Use `add URL --force` to add it anyway.".into()),
            },
            &mut k,
        );
        assert_eq!(
            k.0,
            [
                (
                    Line::Failure,
                    "❌ Failed to add node: x is not reachable (refused)".to_string()
                ),
                (
                    Line::Failure,
                    "   Use `add URL --force` to add it anyway.".to_string()
                )
            ]
        );
        let mut c = Captured::default();
        render_error(
            &CommandError::Refused {
                message: "Backend already configured: h:1".into(),
                hint: None,
                warning: true,
            },
            &mut c,
        );
        assert_eq!(c.err, "⚠️  Backend already configured: h:1\n");
        assert!(c.out.is_empty());
        let usage = crate::command::parse("refine 9").unwrap_err();
        let mut c = Captured::default();
        render_error(&usage.into(), &mut c);
        assert_eq!(
            c.err,
            "❌ refinement rounds must be between 0 and 5, got 9\n   Usage: refine N (0-5)\n"
        );
    }
}
