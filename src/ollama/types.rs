//! The parts of Ollama's API this program sends and reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(c: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: c.into(),
        }
    }
    pub fn user(c: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: c.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: String,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// One NDJSON line of a generate or chat stream (or the whole non-streamed reply).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct StreamChunk {
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
}

impl StreamChunk {
    pub fn text(&self) -> &str {
        if let Some(m) = &self.message {
            return &m.content;
        }
        self.response.as_deref().unwrap_or("")
    }
}

/// A finished generation: the whole text plus the final line's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Completion {
    pub text: String,
    pub done_reason: Option<String>,
    pub prompt_eval_count: u64,
    /// Nanoseconds, as Ollama reports them.
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    /// Nanoseconds, as Ollama reports them.
    pub eval_duration: u64,
    pub total_duration: u64,
    pub load_duration: u64,
    /// Milliseconds from sending the request to the first piece of the reply.
    pub first_token_ms: Option<f64>,
}

impl Completion {
    pub fn tokens_per_second(&self) -> Option<f64> {
        (self.eval_duration > 0).then(|| self.eval_count as f64 * 1e9 / self.eval_duration as f64)
    }

    /// Prompt tokens evaluated per second, when the node reports it.
    pub fn prompt_tokens_per_second(&self) -> Option<f64> {
        (self.prompt_eval_duration > 0 && self.prompt_eval_count > 0)
            .then(|| self.prompt_eval_count as f64 * 1e9 / self.prompt_eval_duration as f64)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct ModelInfo {
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub details: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub size_vram: u64,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TagsResponse {
    pub models: Vec<ModelInfo>,
}

#[derive(Debug, Deserialize)]
pub struct PsResponse {
    #[serde(default)]
    pub models: Vec<LoadedModel>,
}

/// Ollama treats a model name without a tag as `:latest` (and names ignore case).
pub fn same_model(a: &str, b: &str) -> bool {
    /// Name and tag, without allocating (this runs for every node on every pick).
    fn parts(s: &str) -> (&str, &str) {
        let s = s.trim();
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') {
            s.rsplit_once(':').unwrap_or((s, "latest"))
        } else {
            (s, "latest")
        }
    }
    let ((an, at), (bn, bt)) = (parts(a), parts(b));
    an.eq_ignore_ascii_case(bn) && at.eq_ignore_ascii_case(bt)
}

/// A model name as Ollama resolves it: lower case, `:latest` when untagged.
pub fn model_key(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    if s.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        s
    } else {
        format!("{s}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(!same_model("llama3.2:1b", "llama3.2:latest"));
        assert!(same_model("Qwen2.5:0.5B", "qwen2.5:0.5b"));
        assert!(same_model(" hf.co/User/Repo:Q4 ", "hf.co/user/repo:q4"));
        assert!(same_model(
            "host:5000/ns/model",
            "host:5000/ns/model:latest"
        ));
        assert!(!same_model("host:5000/ns/model", "host:5000/ns/other"));
        assert!(!same_model("llama3.2", "llama3"));
    }
}
