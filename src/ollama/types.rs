//! The parts of Ollama's API this program sends and reads, and the simulated
//! hosts serve: the client serialises requests and reads replies with these
//! structs, the simulator (which builds on this module, never the reverse)
//! reads requests and writes replies with the same ones, so a change on one
//! side breaks the other at compile time. Fields Ollama has and neither side uses are left out: unknown fields
//! are ignored when reading, and absent ones take their default.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Ollama streams unless a request says `"stream": false`.
fn streams_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
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
    pub fn assistant(c: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: c.into(),
        }
    }
}

/// `POST /api/chat`. `Default` does not stream; a body without `stream` does
/// (as Ollama reads it).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default = "streams_by_default")]
    pub stream: bool,
    /// `"json"` or a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// An `Options` object (kept as JSON so any option passes through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// `POST /api/generate`. `Default` does not stream; a body without `stream`
/// does (as Ollama reads it).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GenerateRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default = "streams_by_default")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `"json"` or a JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// An `Options` object (kept as JSON so any option passes through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// The request `options` this program sets and the simulator reads; any
/// other option passes through in `other`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Options {
    /// Most tokens to generate (Ollama: -1 = no limit, -2 = fill the context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    /// The context window to load the model with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Options {
    /// The `options` of a request as read (none at all reads as empty).
    pub fn read(options: Option<&Value>) -> Result<Options, serde_json::Error> {
        match options {
            None | Some(Value::Null) => Ok(Options::default()),
            Some(v) => Options::deserialize(v),
        }
    }

    /// As the JSON object a request carries.
    pub fn to_value(&self) -> Value {
        let mut map = self.other.clone();
        if let Some(n) = self.num_predict {
            map.insert("num_predict".into(), n.into());
        }
        if let Some(n) = self.num_ctx {
            map.insert("num_ctx".into(), n.into());
        }
        Value::Object(map)
    }
}

/// One NDJSON line of a generate or chat stream (or the whole non-streamed
/// reply): `response` for generate, `message` for chat; the counts on the
/// last line (`done: true`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub(crate) struct StreamChunk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default)]
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl StreamChunk {
    /// The counts of a final line (what it leaves out counts 0).
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            prompt_eval_count: self.prompt_eval_count.unwrap_or(0),
            prompt_eval_duration: self.prompt_eval_duration.unwrap_or(0),
            eval_count: self.eval_count.unwrap_or(0),
            eval_duration: self.eval_duration.unwrap_or(0),
            total_duration: self.total_duration.unwrap_or(0),
            load_duration: self.load_duration.unwrap_or(0),
        }
    }
}

/// The counts on the final line of a reply (durations in nanoseconds, as
/// Ollama reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
    pub total_duration: u64,
    pub load_duration: u64,
}

/// A finished generation: the whole text plus the final line's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Completion {
    pub text: String,
    pub done_reason: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Milliseconds from sending the request to the first piece of the reply.
    pub first_token_ms: Option<f64>,
}

impl Completion {
    pub fn tokens_per_second(&self) -> Option<f64> {
        let c = &self.counts;
        (c.eval_duration > 0).then(|| c.eval_count as f64 * 1e9 / c.eval_duration as f64)
    }

    /// Prompt tokens evaluated per second, when the node reports it.
    pub(crate) fn prompt_tokens_per_second(&self) -> Option<f64> {
        let c = &self.counts;
        (c.prompt_eval_duration > 0 && c.prompt_eval_count > 0)
            .then(|| c.prompt_eval_count as f64 * 1e9 / c.prompt_eval_duration as f64)
    }
}

/// A model's `details` in `/api/tags` and `/api/show`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct ModelDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_level: Option<String>,
    /// Whatever else the server says (`families`, `parent_model`, ...).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A model in `/api/tags`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct ModelInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
}

/// A model in `/api/ps`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub size_vram: u64,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `GET /api/tags`.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct TagsResponse {
    pub models: Vec<ModelInfo>,
}

/// `GET /api/ps`.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct PsResponse {
    #[serde(default)]
    pub models: Vec<LoadedModel>,
}

/// `GET /api/version`.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct VersionResponse {
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /api/show`: `model`, or the older `name`.
#[derive(Debug, Deserialize, Serialize, Default)]
pub struct ShowRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ShowRequest {
    /// The model asked about, whichever field names it.
    pub fn model(&self) -> &str {
        match (&self.model, &self.name) {
            (m, Some(n)) if m.is_empty() => n,
            (m, _) => m,
        }
    }
}

/// `POST /api/show`'s reply.
#[derive(Debug, Deserialize, Serialize, Default)]
pub(crate) struct ShowResponse {
    #[serde(default)]
    pub modelfile: String,
    #[serde(default)]
    pub parameters: String,
    #[serde(default)]
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
    /// GGUF metadata: `general.architecture`, `<arch>.context_length`, ...
    #[serde(default)]
    pub model_info: Map<String, Value>,
    /// What the model can do: `completion`, `embedding`, `tools`, `vision`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
}

impl ShowResponse {
    /// The context the model was trained for (`<arch>.context_length`).
    pub fn context_length(&self) -> Option<u64> {
        self.model_info
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .and_then(|(_, v)| v.as_u64())
    }
}

/// `POST /api/embed`'s `input`: one text or a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged, try_from = "Value")]
pub(crate) enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<Value> for EmbedInput {
    type Error = &'static str;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        match v {
            Value::String(s) => Ok(EmbedInput::One(s)),
            Value::Array(a) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err("invalid input type"),
                })
                .collect::<Result<_, _>>()
                .map(EmbedInput::Many),
            _ => Err("invalid input type"),
        }
    }
}

impl EmbedInput {
    pub(crate) fn into_texts(self) -> Vec<String> {
        match self {
            EmbedInput::One(s) => vec![s],
            EmbedInput::Many(v) => v,
        }
    }
}

/// `POST /api/embed`: a batch of inputs in one request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct EmbedRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub input: Option<EmbedInput>,
    /// Cut inputs that do not fit the context instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// `POST /api/embed`'s reply: one vector per input, in order.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct EmbedResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
}

/// `POST /api/embeddings` (older): one `prompt` per request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct EmbeddingsRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
}

/// `POST /api/embeddings`' reply.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct EmbeddingsResponse {
    pub embedding: Vec<f32>,
}

/// `POST /api/pull`: `model` (or the older `name`), `insecure`, `stream`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PullRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default = "streams_by_default")]
    pub stream: bool,
}

impl PullRequest {
    /// The model asked for, whichever field names it.
    pub fn model(&self) -> &str {
        match (&self.model, &self.name) {
            (m, Some(n)) if m.trim().is_empty() => n.trim(),
            (m, _) => m.trim(),
        }
    }
}

/// One line of a pull's progress (Ollama's `ProgressResponse`): `status`
/// ("pulling manifest", "pulling <digest>", "verifying sha256 digest",
/// "writing manifest", "success"), with `digest`, `total` and `completed`
/// while a layer downloads; or `{"error": …}`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ProgressLine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProgressLine {
    pub fn status(s: impl Into<String>) -> ProgressLine {
        ProgressLine {
            status: s.into(),
            ..ProgressLine::default()
        }
    }
}

/// `DELETE /api/delete`: `model` (or the older `name`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeleteRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl DeleteRequest {
    /// The model named, whichever field names it.
    pub fn model(&self) -> &str {
        match (&self.model, &self.name) {
            (m, Some(n)) if m.trim().is_empty() => n.trim(),
            (m, _) => m.trim(),
        }
    }
}

/// `POST /api/copy`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CopyRequest {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub destination: String,
}

/// Whether a request's `keep_alive` asks Ollama to unload the model now: a
/// duration of zero, as a number of seconds (`0`) or a Go duration string
/// (`"0"`, `"0s"`, `"0m"`). Absent, or any other value, is not.
pub fn keep_alive_is_zero(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => {
            let s = s.trim();
            if let Ok(x) = s.parse::<f64>() {
                return x == 0.0;
            }
            // A Go duration: digits and units ("0s", "0m0s", "0.0h").
            !s.is_empty()
                && s.chars().any(|c| c.is_ascii_digit())
                && s.chars().all(|c| "0.hmsuµn".contains(c))
        }
        _ => false,
    }
}

/// Ollama's error body, `{"error": "..."}`, for any status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorResponse {
    pub error: String,
}

/// Ollama treats a model name without a tag as `:latest` (and names ignore case).
pub(crate) fn same_model(a: &str, b: &str) -> bool {
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
pub(crate) fn model_key(s: &str) -> String {
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
    use serde_json::json;

    #[test]
    fn requests_read_as_ollama_reads_them() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi", "images": []}],
            "think": true, "tools": []
        }))
        .unwrap();
        assert!(r.stream, "a body without `stream` streams");
        assert_eq!(r.messages, vec![Message::user("hi")]);
        let sent = ChatRequest {
            options: Some(
                Options {
                    num_ctx: Some(2048),
                    ..Options::default()
                }
                .to_value(),
            ),
            ..r
        };
        let back: ChatRequest =
            serde_json::from_str(&serde_json::to_string(&sent).unwrap()).unwrap();
        let o = Options::read(back.options.as_ref()).unwrap();
        assert_eq!((o.num_ctx, o.num_predict), (Some(2048), None));
        let g: GenerateRequest =
            serde_json::from_str(r#"{"prompt": "p", "stream": false}"#).unwrap();
        assert_eq!((g.model.as_str(), g.stream), ("", false));
    }

    #[test]
    fn options_keep_what_they_do_not_name() {
        let v = json!({"temperature": 0.2, "num_predict": -1, "num_ctx": 4096});
        let o = Options::read(Some(&v)).unwrap();
        assert_eq!((o.num_predict, o.num_ctx), (Some(-1), Some(4096)));
        assert_eq!(o.to_value(), v);
        assert!(Options::read(Some(&json!({"num_ctx": "big"}))).is_err());
        assert_eq!(Options::read(None).unwrap(), Options::default());
    }

    #[test]
    fn embed_input_is_a_text_or_a_list_of_texts() {
        let read = |v: Value| serde_json::from_value::<EmbedRequest>(json!({"input": v}));
        let texts = |v: Value| read(v).unwrap().input.map(EmbedInput::into_texts);
        assert_eq!(texts(json!("a")), Some(vec!["a".to_string()]));
        assert_eq!(texts(json!(["a", "b"])).map(|t| t.len()), Some(2));
        assert_eq!(texts(Value::Null), None);
        let e = read(json!([1, 2])).unwrap_err().to_string();
        assert!(e.starts_with("invalid input type"), "{e}");
    }

    #[test]
    fn show_names_the_model_either_way_and_reports_its_context() {
        let r: ShowRequest = serde_json::from_str(r#"{"name": "old"}"#).unwrap();
        assert_eq!(r.model(), "old");
        let r: ShowRequest = serde_json::from_str(r#"{"model": "new", "name": "old"}"#).unwrap();
        assert_eq!(r.model(), "new");
        let s: ShowResponse = serde_json::from_value(json!({
            "license": "x", "capabilities": ["completion"],
            "details": {"family": "llama", "families": ["llama"]},
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072}
        }))
        .unwrap();
        assert_eq!(s.context_length(), Some(131_072));
        assert_eq!(s.details.unwrap().other["families"], json!(["llama"]));
    }

    #[test]
    fn keep_alive_zero_is_an_unload() {
        for zero in [
            json!(0),
            json!(0.0),
            json!("0"),
            json!("0s"),
            json!("0m0s"),
            json!(" 0ms "),
        ] {
            assert!(keep_alive_is_zero(Some(&zero)), "{zero}");
        }
        for not in [
            json!(-1),
            json!("5m"),
            json!("10s"),
            json!(""),
            json!(null),
            json!("ms"),
        ] {
            assert!(!keep_alive_is_zero(Some(&not)), "{not}");
        }
        assert!(!keep_alive_is_zero(None));
        let p: PullRequest = serde_json::from_str(r#"{"name": " tinyllama "}"#).unwrap();
        assert_eq!((p.model(), p.stream), ("tinyllama", true));
        let line: ProgressLine = serde_json::from_str(
            r#"{"status":"pulling 2af3b81862c6","digest":"sha256:2af3","total":637,"completed":0}"#,
        )
        .unwrap();
        assert_eq!((line.total, line.completed), (Some(637), Some(0)));
        assert_eq!(
            serde_json::to_string(&ProgressLine::status("success")).unwrap(),
            r#"{"status":"success"}"#
        );
    }

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
