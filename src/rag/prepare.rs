//! Everything one question's retrieval needs, made ready before the pipeline
//! runs: the knowledge base (a local index loaded once and shared through the
//! cache, or FlockParser's server, checked), and an embedder over the nodes
//! that have the model. The shell and the gateway's `/api/orchestrate` both
//! prepare retrieval here, so they say the same things and share one load.

use std::sync::Arc;
use std::time::Duration;

use super::embed::Embedder;
use super::remote::Remote;
use super::{Cache, Knowledge, Location, Retriever};
use crate::nodes::Node;
use crate::ollama::Client;
use crate::scheduler::Scheduler;

/// Longest wait for a query's embedding (a cold node loads the model first).
pub(crate) const QUERY_EMBED_TIMEOUT: Duration = Duration::from_secs(60);
/// Load problems shown before "… and N more".
pub(crate) const SHOWN_PROBLEMS: usize = 5;

/// Where retrieval looks and with what.
pub struct Setup<'a> {
    /// `rag on`.
    pub enabled: bool,
    /// The `rag_path` setting.
    pub path: Option<&'a str>,
    /// The embedding model.
    pub model: &'a str,
    pub cache: &'a Cache,
    pub client: &'a Client,
    pub sched: Arc<Scheduler>,
    /// Nodes that may embed.
    pub candidates: &'a [Arc<Node>],
}

/// A line for the person asking.
pub enum Said {
    Info(String),
    Warning(String),
}

/// Load progress of a local knowledge base (chunks read, of all).
pub type Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// The retriever for a question, or None (RAG off, or what keeps it from
/// running said through `say`: the answer then comes without documents).
pub async fn retriever(
    s: Setup<'_>,
    progress: Progress,
    mut say: impl FnMut(Said),
) -> Option<Retriever> {
    if !s.enabled {
        return None;
    }
    let without = "answering without documents";
    let loc = match super::configured(s.path).await {
        None => {
            say(Said::Info(format!(
                "ℹ️  RAG is on but no knowledge base is set (`rag path DIR|URL`, or `rag index PATH…`); {without}"
            )));
            return None;
        }
        Some(Err(e)) => {
            say(Said::Warning(format!("⚠️  RAG: rag_path: {e}; {without}")));
            return None;
        }
        Some(Ok(l)) => l,
    };
    let knowledge = match &loc {
        Location::Local(root) => {
            let (idx, problems) = s.cache.get(root, progress).await;
            for p in super::summarise(&problems, SHOWN_PROBLEMS) {
                say(Said::Warning(format!("⚠️  {p}")));
            }
            if idx.chunks() == 0 {
                say(Said::Info(format!(
                    "📚 RAG: the knowledge base {} has no documents; {without}",
                    root.display()
                )));
                return None;
            }
            Knowledge::Local(idx)
        }
        Location::Remote(url) => {
            let r = Remote::new(url);
            if let Err(e) = r.health().await {
                say(Said::Warning(format!("⚠️  RAG: {e}; {without}")));
                return None;
            }
            Knowledge::Remote(r)
        }
    };
    let embedder = Embedder::new(
        s.client,
        s.sched,
        s.candidates,
        s.model,
        QUERY_EMBED_TIMEOUT,
    )
    .await;
    match embedder {
        Ok(embedder) => Some(Retriever {
            knowledge,
            embedder,
            location: loc.describe(),
        }),
        Err(e) => {
            say(Said::Warning(format!("⚠️  RAG: {e}; {without}")));
            None
        }
    }
}
