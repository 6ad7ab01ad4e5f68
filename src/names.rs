//! The names a user types or saves: model, node and agent names. Each is a
//! string checked once, by the one rule every name keeps (not blank, no control
//! characters, at most [`NAME_MAX`] characters; a model name also keeps to the
//! characters model tags use), so whoever holds one need not check it again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most characters a name (model, synthesis model, node, agent) may have.
pub const NAME_MAX: usize = 200;

/// Why a name was refused, in one line that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

/// The check behind every name type: `what` is how the error names it.
fn check(what: &str, model_chars: bool, s: &str) -> Result<(), NameError> {
    if s.trim().is_empty() {
        return Err(NameError(format!("the {what} is empty")));
    }
    let len = s.chars().count();
    if len > NAME_MAX {
        return Err(NameError(format!(
            "the {what} is {len} characters long (at most {NAME_MAX})"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(NameError(format!(
            "`{}` is not a valid {what} (control characters)",
            s.escape_debug()
        )));
    }
    if model_chars
        && !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        return Err(NameError(format!(
            "`{}` is not a valid {what} (letters, digits and - _ . : / only)",
            s.escape_debug()
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, model_chars: $model:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check($what, $model, s).map(|()| $name(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check($what, $model, &s).map(|()| $name(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A model's name as Ollama knows it (`llama3.2`, `hf.co/User/Repo:Q4_K_M`).
    ModelName,
    "model name",
    model_chars: true
);
name_type!(
    /// A node's name in the registry (any printable text).
    NodeName,
    "node name",
    model_chars: false
);
name_type!(
    /// An agent's name (any printable text).
    AgentName,
    "agent name",
    model_chars: false
);

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(s: &str) -> [String; 3] {
        [
            s.parse::<ModelName>().unwrap_err().to_string(),
            s.parse::<NodeName>().unwrap_err().to_string(),
            s.parse::<AgentName>().unwrap_err().to_string(),
        ]
    }

    #[test]
    fn one_rule_for_every_name() {
        assert!("hf.co/User/Repo-GGUF:Q4_K_M".parse::<ModelName>().is_ok());
        assert!("Kitchen box (GPU)".parse::<NodeName>().is_ok());
        assert!("Kitchen box (GPU)".parse::<AgentName>().is_ok());
        assert_eq!(
            errors("  "),
            [
                "the model name is empty",
                "the node name is empty",
                "the agent name is empty"
            ]
        );
        for e in errors("a\u{7}b") {
            assert!(
                e.ends_with("(control characters)") && !e.contains('\u{7}'),
                "{e}"
            );
        }
        for e in errors(&"x".repeat(NAME_MAX + 1)) {
            assert!(e.contains("is 201 characters long (at most 200)"), "{e}");
        }
        assert!("x".repeat(NAME_MAX).parse::<ModelName>().is_ok());
        assert!("x".repeat(NAME_MAX).parse::<NodeName>().is_ok());
        assert_eq!(
            "a;b".parse::<ModelName>().unwrap_err().to_string(),
            "`a;b` is not a valid model name (letters, digits and - _ . : / only)"
        );
        assert!("a;b".parse::<NodeName>().is_ok());
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let m: ModelName = serde_json::from_str("\"llama3.2\"").unwrap();
        assert_eq!(m.as_str(), "llama3.2");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"llama3.2\"");
        let e = serde_json::from_str::<ModelName>("\"a b\"").unwrap_err();
        assert!(e.to_string().contains("not a valid model name"), "{e}");
    }
}
