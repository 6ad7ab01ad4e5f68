//! One query's retrieval: the question (and, for a long answer, each later
//! part's "question + focus") embedded at once on the nodes that have the
//! embedding model, searched, gated and packed by the original's rules, and
//! laid out as prompt blocks with one numbering of sources for the query.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use serde::Serialize;

use crate::prompt::Prompt;

use super::context::{self, Excerpt, Listed, Sources, Verdict};
use super::embed::Embedder;
use super::index::Index;
use super::remote::{Remote, RemoteError};
use crate::scheduler::TaskFailed;

/// Why one retrieval went without documents.
#[derive(Debug, thiserror::Error)]
enum Skipped {
    #[error("could not embed it ({0})")]
    Embed(TaskFailed),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the embedding model gives {got} dimensions but the knowledge base holds {want}-dimension vectors; set `rag model` to the model that built it")]
    Dimensions { got: usize, want: usize },
    #[error("the search stopped ({0})")]
    Search(tokio::task::JoinError),
}

/// Where the chunks are.
pub enum Knowledge {
    Local(Arc<Index>),
    Remote(Remote),
}

pub struct Retriever {
    pub knowledge: Knowledge,
    pub embedder: Embedder,
    /// The folder or URL, for the report.
    pub location: String,
}

/// What one retrieval did (for `-i` and `metrics`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Retrieval {
    /// 1 for the question itself (and part 1), n for part n.
    pub part: usize,
    pub query: String,
    /// The node that embedded it.
    pub node: Option<String>,
    /// Excerpts that went into the prompt.
    pub excerpts: usize,
    /// Mean similarity of the best five.
    pub mean_top5: Option<f32>,
    /// Why no excerpts were used, if so.
    pub skipped: Option<String>,
}

/// The RAG part of a query's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub knowledge_base: String,
    pub model: String,
    pub retrievals: Vec<Retrieval>,
    /// The final source list, with each source's best similarity.
    pub sources: Vec<Listed>,
}

pub struct Retrieved {
    main: Option<context::Block>,
    parts: BTreeMap<usize, context::Block>,
    sources: Sources,
    pub report: Report,
}

impl Retrieved {
    /// The question as the Researcher, the Editor and part 1 get it: with the
    /// excerpts and the citation rules when there are excerpts.
    pub fn question(&self, query: &str) -> Prompt {
        match &self.main {
            Some(b) => context::research_prompt(query, b),
            None => Prompt::from(query),
        }
    }

    /// The excerpts to add below part `n`'s prompt, if any (part 1 gets the
    /// question's own retrieval).
    pub fn part(&self, n: usize) -> Option<Prompt> {
        match n {
            1 => self.main.as_ref().map(context::part_context),
            _ => self.parts.get(&n).map(context::part_context),
        }
    }

    /// Any excerpt went into any prompt.
    pub fn used(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Renumber the answer's citations and append the source list.
    pub fn finish(&mut self, answer: &str) -> String {
        let (text, listed) = context::cite(answer, &self.sources);
        self.report.sources = listed;
        text
    }
}

fn fmt_sim(x: f32) -> String {
    format!("{x:.2}")
}

/// What one retrieval came to: the verdict (or why there is none), the node
/// that embedded it and the mean similarity of the best five.
type Outcome = (Result<Verdict, Skipped>, Option<String>, Option<f32>);

/// The retrievals of a query, as (part, text, top k, token budget): the
/// question, then each of `parts` as "question focus".
fn asks(query: &str, parts: &[(usize, String)]) -> Vec<(usize, String, usize, usize)> {
    let mut asks = vec![(1, query.to_string(), context::TOP_K, context::BUDGET)];
    asks.extend(parts.iter().map(|(n, focus)| {
        (
            *n,
            format!("{query} {focus}"),
            context::TOP_K_PART,
            context::BUDGET_PART,
        )
    }));
    asks
}

impl Retrieved {
    /// Take in retrieval `n` (of `text`): its excerpts become part `n`'s block
    /// (the question's for 1) with the query's one numbering of sources, or
    /// the report says why it was skipped. `say` tells the user.
    fn add(&mut self, n: usize, text: &str, outcome: Outcome, say: &dyn Fn(String)) {
        let (verdict, node, mean) = outcome;
        let what = if n == 1 {
            "the question".to_string()
        } else {
            format!("part {n}")
        };
        let mut r = Retrieval {
            part: n,
            query: text.to_string(),
            node: node.clone(),
            excerpts: 0,
            mean_top5: mean,
            skipped: None,
        };
        match verdict {
            Ok(Verdict::Use(ex)) => {
                let b = context::block(&ex, &mut self.sources, n);
                let docs: std::collections::HashSet<&str> =
                    ex.iter().map(|e| e.doc_name.as_str()).collect();
                say(format!(
                    "📚 RAG for {what}: {} excerpt(s) from {} document(s) (top-5 similarity {}; embedded on {})",
                    ex.len(),
                    docs.len(),
                    fmt_sim(mean.unwrap_or(0.0)),
                    node.as_deref().unwrap_or("?")
                ));
                r.excerpts = ex.len();
                if n == 1 {
                    self.main = Some(b);
                } else {
                    self.parts.insert(n, b);
                }
            }
            Ok(Verdict::NoMatch) => {
                let why = format!(
                    "no excerpt reaches similarity {}",
                    fmt_sim(context::MIN_SIMILARITY)
                );
                say(format!("📚 RAG skipped for {what}: {why}"));
                r.skipped = Some(why);
            }
            Ok(Verdict::TooWeak {
                mean,
                best,
                best_sim,
            }) => {
                let why = format!(
                    "the documents are not relevant enough (top-5 similarity {} < {}; best: {best} at {})",
                    fmt_sim(mean),
                    fmt_sim(context::GATE),
                    fmt_sim(best_sim)
                );
                say(format!("📚 RAG skipped for {what}: {why}"));
                r.skipped = Some(why);
            }
            Err(why) => r.skipped = Some(why.to_string()),
        }
        self.report.retrievals.push(r);
    }
}

impl Retriever {
    /// Retrieve for the question (top 15, 2,000 tokens) and for each of
    /// `parts` — (part number, focus) — with "question focus" (top 10, 1,000
    /// tokens). Every embedding request starts at once, so they spread over
    /// the hosts. Problems become notices; a retrieval that fails is skipped.
    pub async fn retrieve(
        &self,
        query: &str,
        parts: &[(usize, String)],
        notice: &(dyn Fn(String) + Sync),
    ) -> Retrieved {
        let asks = asks(query, parts);
        let notices = std::sync::Mutex::new(Vec::<String>::new());
        let say_once = |line: String| {
            let mut seen = notices.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&line) {
                seen.push(line.clone());
                notice(line);
            }
        };
        let outcomes = join_all(
            asks.iter()
                .map(|(n, text, k, budget)| self.one(*n, text, *k, *budget, &say_once)),
        )
        .await;
        let mut got = Retrieved {
            main: None,
            parts: BTreeMap::new(),
            sources: Sources::default(),
            report: Report {
                knowledge_base: self.location.clone(),
                model: self.embedder.model().to_string(),
                retrievals: Vec::new(),
                sources: Vec::new(),
            },
        };
        for ((n, text, _, _), outcome) in asks.iter().zip(outcomes) {
            got.add(*n, text, outcome, &say_once);
        }
        got
    }

    /// Embed, search, gate and pack one retrieval: (verdict or why not, the
    /// node that embedded it, mean of the top 5). Why not is also a notice.
    async fn one(
        &self,
        part: usize,
        text: &str,
        k: usize,
        budget: usize,
        notice: &(dyn Fn(String) + Sync),
    ) -> (Result<Verdict, Skipped>, Option<String>, Option<f32>) {
        let (found, node) = self.search(part, text, k, notice).await;
        match found {
            Ok((excerpts, problems)) => {
                for p in problems {
                    notice(format!("⚠️  RAG: {p}"));
                }
                let mean = (!excerpts.is_empty()).then(|| context::mean_top(&excerpts));
                (Ok(context::judge(excerpts, budget)), node, mean)
            }
            Err(why) => {
                notice(format!("⚠️  RAG: {why}; going on without documents"));
                (Err(why), node, None)
            }
        }
    }

    /// Embed `text` and search for its `k` nearest excerpts: (the excerpts
    /// and the chunk files that could not be read, the node that embedded it).
    async fn search(
        &self,
        part: usize,
        text: &str,
        k: usize,
        notice: &(dyn Fn(String) + Sync),
    ) -> (Result<(Vec<Excerpt>, Vec<String>), Skipped>, Option<String>) {
        let label = if part == 1 {
            "embed question".to_string()
        } else {
            format!("embed part {part}")
        };
        let input = [text.to_string()];
        let (vector, node) = match self.embedder.embed(&label, &input, notice).await {
            Ok((mut v, a)) => (v.pop().unwrap_or_default(), a.node),
            Err(e) => return (Err(Skipped::Embed(e)), None),
        };
        let found = match &self.knowledge {
            Knowledge::Local(index) => search_local(index.clone(), vector, k).await,
            Knowledge::Remote(r) => r
                .query(text, &vector, k, context::MIN_SIMILARITY)
                .await
                .map(|ex| (ex, Vec::new()))
                .map_err(Skipped::from),
        };
        (found, Some(node))
    }
}

/// Search the loaded index off the async threads and read the hits' texts;
/// a chunk file that can no longer be read is named and left out.
async fn search_local(
    index: Arc<Index>,
    vector: Vec<f32>,
    k: usize,
) -> Result<(Vec<Excerpt>, Vec<String>), Skipped> {
    if vector.len() != index.dims() {
        return Err(Skipped::Dimensions {
            got: vector.len(),
            want: index.dims(),
        });
    }
    tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        let excerpts = index
            .search(&vector, k, context::MIN_SIMILARITY)
            .into_iter()
            .filter_map(|h| {
                let (id, name, file) = index.row(h.row);
                match super::kb::read_text_of(file) {
                    Ok(text) => Some(Excerpt {
                        doc_id: id.to_string(),
                        doc_name: name.to_string(),
                        similarity: h.score,
                        text,
                    }),
                    Err(e) => {
                        problems.push(format!("{e}; skipped"));
                        None
                    }
                }
            })
            .collect();
        (excerpts, problems)
    })
    .await
    .map_err(Skipped::Search)
}
