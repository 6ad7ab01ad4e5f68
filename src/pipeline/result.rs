//! What a query produces: the answer, its chunks, where each task ran, metrics.

use serde::Serialize;
use serde_json::Value;

use crate::report::Metrics;
use crate::scheduler::{Attribution, TaskFailed};

#[derive(Debug, Clone, Serialize)]
pub struct Chunk {
    pub chunk: usize,
    /// Its heading: the planned title, or the first clause of the original's focus.
    pub title: String,
    pub focus: String,
    pub content: String,
    pub node: String,
    pub seconds: f64,
    /// The chunk failed its quality check twice; the better attempt was kept.
    pub quality_warning: Option<String>,
}

/// A part of the work that could not be done: the answer has a marked gap
/// (a missing chunk) or went on without it (a missing review).
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub task: String,
    /// The long-form part that is missing, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
    /// What went wrong, in one line.
    pub error: String,
    /// What the answer did instead.
    pub instead: String,
    /// The kind of the last failure (refused, reset, stall, ...).
    pub kind: Option<&'static str>,
}

impl Gap {
    pub fn new(failure: &TaskFailed, instead: impl Into<String>) -> Gap {
        Gap {
            task: failure.label.clone(),
            chunk: None,
            focus: None,
            error: failure.to_string(),
            instead: instead.into(),
            kind: failure.attempts.last().map(|a| a.error.kind.name()),
        }
    }
}

/// A query that produced nothing at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{first}{}", if *.others > 0 { format!(" (and {} other task(s) failed too; nothing could be generated)", .others) } else { String::new() })]
pub struct NothingGenerated {
    pub first: TaskFailed,
    pub others: usize,
}

impl From<TaskFailed> for NothingGenerated {
    fn from(first: TaskFailed) -> Self {
        NothingGenerated { first, others: 0 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub query: String,
    pub final_output: String,
    pub chunks: Vec<Chunk>,
    pub attribution: Vec<Attribution>,
    pub metrics: Metrics,
    /// What could not be done; empty when the answer is complete.
    pub gaps: Vec<Gap>,
    /// What retrieval did, when RAG was on.
    pub rag: Option<crate::rag::Report>,
}

impl QueryResult {
    /// The answer has every part.
    pub fn complete(&self) -> bool {
        self.gaps.is_empty()
    }

    /// The `-i` JSON. The original's keys stay beside the new ones so scripts
    /// written against it keep working: each attribution entry also has
    /// `agent` and `time`, each chunk `chunk_num` and `duration_ms`.
    pub fn to_json(&self) -> Value {
        let failed_chunks: Vec<&Gap> = self.gaps.iter().filter(|g| g.chunk.is_some()).collect();
        let attribution = |list: &[Attribution]| -> Vec<Value> {
            list.iter()
                .map(|a| {
                    let mut v = serde_json::to_value(a).unwrap_or_default();
                    if let Value::Object(m) = &mut v {
                        m.insert("agent".into(), a.task.clone().into());
                        m.insert("time".into(), a.seconds.into());
                    }
                    v
                })
                .collect()
        };
        let chunks: Vec<Value> = self
            .chunks
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Value::Object(m) = &mut v {
                    m.insert("chunk_num".into(), c.chunk.into());
                    m.insert(
                        "duration_ms".into(),
                        ((c.seconds * 1000.0).round() as u64).into(),
                    );
                }
                v
            })
            .collect();
        let mut metrics = serde_json::to_value(&self.metrics).unwrap_or_default();
        if let Value::Object(m) = &mut metrics {
            m.insert(
                "node_attribution".into(),
                attribution(&self.metrics.node_attribution).into(),
            );
        }
        serde_json::json!({
            "query": self.query,
            "final_output": self.final_output,
            "complete": self.complete(),
            "chunks": chunks,
            "failed_chunks": failed_chunks,
            "failed_tasks": self.gaps,
            "attribution": attribution(&self.attribution),
            "metrics": metrics,
            "sources": self.rag.as_ref().map(|r| r.sources.clone()).unwrap_or_default(),
            "rag": self.rag,
        })
    }
}
