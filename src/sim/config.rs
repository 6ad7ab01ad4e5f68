//! What a simulated host does: speed, contention and faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault a simulated host can be told to show. Faults apply to inference
/// (`/api/generate`, `/api/chat`) requests numbered above `SimConfig::fault_after`,
/// and to embedding requests by the same rules (counted on their own, matched
/// against their inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// The host goes away: listeners close, open connections break.
    Die,
    /// HTTP 500 with Ollama's error JSON.
    Http500,
    /// The connection is cut halfway through the stream.
    Drop,
    /// Accept the request, never answer.
    Hang,
    /// An `{"error": …}` line halfway through a 200 stream.
    ErrorLine,
    /// The connection breaks right after the headers, before any token.
    Reset,
    /// The stream starts, then goes silent halfway (the connection stays open).
    Stall,
    /// A 200 reply with no text at all, in whatever `format` was asked for
    /// (a model that wrote nothing).
    Empty,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!(
                "unknown fault `{s}` (none, die, http500, drop, hang, error_line, reset, stall, empty)"
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SimConfig {
    pub models: Vec<String>,
    /// Tokens per second for one request alone on the host; 0 = as fast as possible.
    pub tokens_per_sec: f64,
    pub ttft_ms: u64,
    /// Words of prose in the main text of a reply.
    pub reply_words: usize,
    /// Requests the host serves at full speed at once.
    pub capacity: u32,
    /// With n > capacity in flight every token takes n/capacity × penalty as long.
    pub penalty: f64,
    pub fault: Fault,
    /// The fault applies to inference requests numbered above this (0 = all).
    pub fault_after: u64,
    /// ... and of those, to every n-th one only (0 or 1 = every one).
    pub fault_every: u64,
    /// ... and only to requests whose prompt contains this text (None = any).
    pub fault_match: Option<String>,
    /// ... and only to requests for this model (`llama3.2` is
    /// `llama3.2:latest`; None = any): a model broken on this host.
    pub fault_model: Option<String>,
    /// VRAM reported in `/api/ps` as a fraction of the model size.
    pub vram_fraction: f64,
    /// Ignore `format` and answer in plain prose, as small models often do.
    pub plain_replies: bool,
    /// Length of the vectors `/api/embed` returns (for models in `models`).
    pub embed_dims: usize,
    /// The model's context window in tokens (None = unlimited): reported in
    /// `/api/show` (`model_info`) and `/api/ps`; a request whose prompt does
    /// not fit gets llama-server's HTTP 400, and a reply stops where the
    /// context ends (`done_reason: "length"`).
    pub context_length: Option<u64>,
    /// The context the model was trained for, reported by `/api/show` and the
    /// most a request's `num_ctx` loads it with (default: `context_length`).
    pub trained_context: Option<u64>,
    /// Repeat the whole request (the last user message) before the reply's text.
    pub echo_prompt: bool,
    /// Send JSON replies cut off before their end (the last quarter, at most
    /// 80 bytes), as a model stopped by a length limit.
    pub broken_json: bool,
    /// Answer a request whose `format` is a JSON Schema as if it had asked
    /// for `"json"` only (a generic object), as a server that ignores schemas.
    pub ignore_schema: bool,
    /// The release `/api/version` reports (below 0.5.0, an Ollama that takes
    /// no JSON Schema in `format`: clients send `"json"`).
    pub version: String,
    /// The models `/api/pull` can fetch (besides those installed); any other
    /// name gets Ollama's "pull model manifest: file does not exist".
    pub library: Vec<String>,
    /// Download speed of a pull in bytes per second (0 = at once); a model's
    /// size is what `/api/tags` reports for it.
    pub pull_bytes_per_sec: u64,
    /// Pulls fail halfway through the download with this `{"error"}` line.
    pub pull_error: Option<String>,
}

/// The models a simulated host's library holds unless told otherwise.
pub const SIM_LIBRARY: &[&str] = &[
    "llama3.2:latest",
    "llama3.2:1b",
    "qwen2.5:0.5b",
    "tinyllama:latest",
    "phi3:mini",
    "gemma3:1b",
    "mxbai-embed-large:latest",
    "nomic-embed-text:latest",
];

/// The release a simulated host reports unless told otherwise.
pub const SIM_VERSION: &str = "0.12.6-simulated";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            models: vec!["llama3.2:latest".into(), "qwen2.5:0.5b".into()],
            tokens_per_sec: 0.0,
            ttft_ms: 0,
            reply_words: 120,
            capacity: 1,
            penalty: 1.5,
            fault: Fault::None,
            fault_after: 0,
            fault_every: 0,
            fault_match: None,
            fault_model: None,
            vram_fraction: 0.0,
            plain_replies: false,
            embed_dims: 1024,
            context_length: None,
            trained_context: None,
            echo_prompt: false,
            broken_json: false,
            ignore_schema: false,
            version: SIM_VERSION.into(),
            library: SIM_LIBRARY.iter().map(|m| m.to_string()).collect(),
            pull_bytes_per_sec: 0,
            pull_error: None,
        }
    }
}

impl SimConfig {
    /// A pleasant default for interactive demos (`--simulate N`).
    pub(crate) fn demo() -> SimConfig {
        SimConfig {
            tokens_per_sec: 400.0,
            ttft_ms: 40,
            reply_words: 140,
            models: vec![
                "llama3.2:latest".into(),
                "qwen2.5:0.5b".into(),
                "mxbai-embed-large:latest".into(),
            ],
            // A pull of a 1-2 GB model takes a few seconds.
            pull_bytes_per_sec: 400_000_000,
            ..SimConfig::default()
        }
    }

    pub(crate) fn token_delay(&self) -> Duration {
        if self.tokens_per_sec <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(1.0 / self.tokens_per_sec)
        }
    }

    /// The fault for inference request number `n` (1-based) for `model` with this prompt.
    pub(crate) fn fault_for(&self, n: u64, model: &str, prompt: &str) -> Fault {
        let after = n.saturating_sub(self.fault_after);
        let due = n > self.fault_after
            && (self.fault_every <= 1 || after.is_multiple_of(self.fault_every));
        let matches = self
            .fault_match
            .as_deref()
            .is_none_or(|m| prompt.contains(m))
            && self
                .fault_model
                .as_deref()
                .is_none_or(|m| crate::ollama::types::same_model(m, model));
        if due && matches {
            self.fault
        } else {
            Fault::None
        }
    }

    /// The model's trained context, when known.
    pub fn trained(&self) -> Option<u64> {
        self.trained_context.or(self.context_length)
    }

    /// Tokens of a prompt as this host counts them (about 4 bytes a token,
    /// as a Llama-style tokenizer does for English, plus the chat template).
    pub fn prompt_tokens(messages: &[&str]) -> u64 {
        messages
            .iter()
            .map(|m| (m.len() as u64).div_ceil(4) + 4)
            .sum::<u64>()
            + 8
    }

    /// Slow-down factor with `in_flight` requests on the host.
    pub fn contention(&self, in_flight: u64) -> f64 {
        let cap = self.capacity.max(1) as f64;
        let n = in_flight as f64;
        if n > cap {
            n / cap * self.penalty.max(1.0)
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_model() {
        let c = SimConfig::default();
        assert_eq!(c.contention(1), 1.0);
        assert_eq!(c.contention(2), 3.0);
        assert_eq!("error_line".parse::<Fault>().unwrap(), Fault::ErrorLine);
        assert!("boom".parse::<Fault>().is_err());
        assert_eq!("stall".parse::<Fault>().unwrap(), Fault::Stall);
        assert_eq!("empty".parse::<Fault>().unwrap(), Fault::Empty);
    }

    #[test]
    fn fault_schedule() {
        let c = SimConfig {
            fault: Fault::Drop,
            fault_after: 1,
            fault_every: 2,
            ..SimConfig::default()
        };
        let hits: Vec<bool> = (1..=6)
            .map(|n| c.fault_for(n, "m", "p") == Fault::Drop)
            .collect();
        assert_eq!(hits, [false, false, true, false, true, false]);
        let m = SimConfig {
            fault: Fault::Http500,
            fault_match: Some("Part 3 of 5".into()),
            ..SimConfig::default()
        };
        assert_eq!(m.fault_for(1, "m", "Part 3 of 5. Focus"), Fault::Http500);
        assert_eq!(m.fault_for(2, "m", "Part 2 of 5. Focus"), Fault::None);
        let q = SimConfig {
            fault: Fault::Http500,
            fault_model: Some("qwen2.5:0.5b".into()),
            ..SimConfig::default()
        };
        assert_eq!(q.fault_for(1, "qwen2.5:0.5b", "p"), Fault::Http500);
        assert_eq!(q.fault_for(2, "llama3.2", "p"), Fault::None);
    }
}
