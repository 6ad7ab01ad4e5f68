//! What a query produces: the answer, its chunks, where each task ran, metrics.

use serde::Serialize;
use serde_json::Value;

use crate::scheduler::Attribution;

#[derive(Debug, Clone, Serialize)]
pub struct Chunk {
    pub chunk: usize,
    pub focus: String,
    pub content: String,
    pub node: String,
    pub seconds: f64,
    /// The chunk failed its quality check twice; the better attempt was kept.
    pub quality_warning: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vote {
    pub voter: String,
    pub score: f64,
    pub reasoning: String,
    pub issues: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Metrics {
    pub total_execution_time: f64,
    pub mode: String,
    pub pipeline: String,
    pub content_type: String,
    pub strategy: String,
    pub chunks_generated: usize,
    pub agent_count: usize,
    pub physical_hosts: usize,
    pub hosts_used: usize,
    pub node_attribution: Vec<Attribution>,
    pub phase_timings: Vec<(String, f64)>,
    pub quality_scores: Vec<Vote>,
    pub quality_passed: Option<bool>,
    pub synthesis: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub query: String,
    pub final_output: String,
    pub chunks: Vec<Chunk>,
    pub attribution: Vec<Attribution>,
    pub metrics: Metrics,
    pub warnings: Vec<String>,
    /// What retrieval did, when RAG was on.
    pub rag: Option<crate::rag::Report>,
}

impl QueryResult {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "query": self.query,
            "final_output": self.final_output,
            "chunks": self.chunks,
            "attribution": self.attribution,
            "metrics": self.metrics,
            "sources": self.rag.as_ref().map(|r| r.sources.clone()).unwrap_or_default(),
            "rag": self.rag,
        })
    }
}
