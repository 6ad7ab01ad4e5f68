//! A prompt as this program builds it: the text sent, and which pieces of it
//! this program wrote. The pipeline's agents and retrieval's excerpts both
//! build their messages from it.

/// A user message: its text, and the pieces of it this program wrote
/// (instructions, labels, the question) as opposed to the material it quotes
/// (findings, drafts, parts). A reply that repeats its own pieces is echoing
/// the prompt (see `pipeline::clean`); one that repeats material may be doing its job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub own: Vec<String>,
}

impl Prompt {
    /// Text this program wrote.
    pub fn says(mut self, s: impl Into<String>) -> Prompt {
        let s = s.into();
        self.text.push_str(&s);
        self.own.push(s);
        self
    }

    /// Material the prompt quotes.
    pub fn quotes(mut self, s: impl AsRef<str>) -> Prompt {
        self.text.push_str(s.as_ref());
        self
    }

    /// Another prompt after this one, its pieces as they were.
    pub fn then(mut self, other: &Prompt) -> Prompt {
        self.text.push_str(&other.text);
        self.own.extend(other.own.iter().cloned());
        self
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Prompt {
        Prompt::default().says(text)
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Prompt {
        Prompt::default().says(text)
    }
}
