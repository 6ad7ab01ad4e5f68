//! What a query reports about itself: its metrics, the votes on its answer and
//! the long-form decision. Plain data shared by the pipeline that fills it in,
//! the dashboard that shows it and the app's Redis tap that publishes it.

use serde::Serialize;

// Where each task ran is the scheduler's record; it moves here when the
// scheduler no longer needs anything above it.
use crate::scheduler::Attribution;

/// What one query did: shown by `metrics`, in the `-i` JSON and on the dashboard.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Metrics {
    pub total_execution_time: f64,
    pub mode: String,
    pub pipeline: String,
    pub content_type: String,
    pub strategy: String,
    /// Long-form parts written, of `chunks_planned`.
    pub chunks_generated: usize,
    /// Long-form parts the answer was planned in (0 for one part).
    pub chunks_planned: usize,
    pub agent_count: usize,
    pub physical_hosts: usize,
    pub hosts_used: usize,
    pub node_attribution: Vec<Attribution>,
    pub phase_timings: Vec<(String, f64)>,
    pub quality_scores: Vec<Vote>,
    pub quality_passed: Option<bool>,
    pub synthesis: Option<String>,
    /// Retries started after a failed attempt (of tasks that answered or not).
    pub retries: usize,
    /// Requests also started on an idle host because the first copy was slow.
    pub hedges: usize,
    /// Tasks that could not be done (see `failed` in the result).
    pub failed_tasks: usize,
    /// Whether the answer was written in parts, and why (or why not).
    pub longform: Option<Scope>,
    /// How the agents' replies came back.
    pub replies: ReplyCounts,
}

/// How the agents' replies came back: the agent's JSON object as sent, made
/// one by the repair path, or kept as plain text; and how many of their
/// requests carried a JSON Schema (the rest asked for `"json"`: a node
/// before Ollama 0.5.0).
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct ReplyCounts {
    /// Agent replies the answer used.
    pub total: usize,
    /// Replies that were the agent's object, every field in place, as they came.
    pub valid_first_try: usize,
    /// Replies the repair path made the object (found in other text, closed
    /// where the length limit cut them, coerced, or asked for again).
    pub repaired: usize,
    /// Replies that never became the object; their text was used as it is.
    pub as_text: usize,
    /// Replies to requests that carried the reply's JSON Schema.
    pub with_schema: usize,
    /// Replies to requests that asked for `format: "json"` only.
    pub json_only: usize,
}

/// One voting agent's verdict on an answer (collaborative mode).
#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    pub voter: String,
    pub score: f64,
    pub reasoning: String,
    pub issues: Vec<String>,
}

/// What was decided, and why (shown by `metrics` and in the `-i` JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scope {
    /// The answer is written in parts (the long-form pipeline).
    pub longform: bool,
    /// Parts of a long-form answer (1 otherwise).
    pub parts: usize,
    /// What decided: `auto`, `always`, `never`, `!long`, `!short`.
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    /// The words of the question that ask for depth, breadth, a form or a length.
    pub asks: Vec<String>,
    /// A short factual question: the answer is a summary and key points (the
    /// Editor's brief shape), not the five sections.
    pub brief: bool,
    /// A long-form answer's parts: planned for the question, or the
    /// original's parts for its content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outline: Option<Outline>,
}

/// The parts of a long-form answer, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outline {
    /// Planned for this question (true), or the original's parts for the
    /// content type (false).
    pub planned: bool,
    /// Why the original's parts were used (the plan failed, `longform
    /// always`, a story), or which of them stand in for planned parts that
    /// could not be used; None when every part was planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub parts: Vec<Section>,
}

/// One part of an outline: its heading and what it must cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub title: String,
    pub focus: String,
}
