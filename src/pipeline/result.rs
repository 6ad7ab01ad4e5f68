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
}

impl QueryResult {
    /// The `-i` JSON. The original's keys stay beside the new ones so scripts
    /// written against it keep working: each attribution entry also has
    /// `agent` and `time`, each chunk `chunk_num` and `duration_ms`.
    pub fn to_json(&self) -> Value {
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
            "chunks": chunks,
            "attribution": attribution(&self.attribution),
            "metrics": metrics,
        })
    }
}
