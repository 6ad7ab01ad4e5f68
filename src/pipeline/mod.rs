//! Turning a question into work for the agents: content detection, the
//! standard, long-form and collaborative pipelines, JSON repair, quality checks
//! and the Markdown answer. Knows the scheduler and the client, not the terminal.

pub mod agents;
pub mod budget;
pub mod call;
pub mod clean;
pub mod collab;
pub mod detect;
pub mod longform;
pub mod observer;
pub mod outline;
pub mod plan;
pub mod prompts;
pub mod quality;
pub mod render;
pub mod repair;
pub mod result;
pub mod schema;
pub mod scope;
pub mod standard;
pub mod synthesis;

use std::time::Instant;

use call::Ctx;
use result::{Chunk, Gap, NothingGenerated, QueryResult};

use crate::config::choices::Longform;
use crate::report::{Metrics, Scope};
use crate::scheduler::{Attribution, TaskFailed};

/// How a query should run.
pub(crate) struct Plan {
    /// Distributed mode: where the `longform` setting applies.
    pub distributed: bool,
    pub collaborative: bool,
    pub collab: collab::Settings,
    pub mode_label: String,
    pub strategy_label: String,
    /// The `longform` setting (`auto`, `always`, `never`).
    pub longform: Longform,
    /// Retrieval over the user's documents (`rag on`), if it can run.
    pub rag: Option<crate::rag::Retriever>,
}

/// The later parts of a long answer that get their own retrieval, as (part
/// number, focus); None when RAG does not apply (a story: the original used
/// documents for research only, this port for every kind of answer but stories).
fn rag_parts(ct: detect::ContentType, parts: Option<usize>) -> Option<Vec<(usize, String)>> {
    match (parts, ct) {
        (_, detect::ContentType::Storytelling) => None,
        (None, _) => Some(Vec::new()),
        (Some(total), ct) => Some(
            (2..=total)
                .map(|n| (n, detect::focus_area(ct, n, total)))
                .collect(),
        ),
    }
}

fn hosts_used(a: &[Attribution]) -> usize {
    let mut h: Vec<&str> = a.iter().map(|x| x.host.as_str()).collect();
    h.sort();
    h.dedup();
    h.len()
}

/// A task that could not be done: say so (stderr, the dashboard) and record it.
pub(crate) fn gap(ctx: &Ctx, failure: &TaskFailed, instead: impl Into<String>) -> Gap {
    let g = Gap::new(failure, instead);
    ctx.observer
        .notice(format!("❌ {}; {}", g.error, g.instead));
    g
}

/// Answer `query`. A leading `!long` or `!short` decides the answer's size
/// for this query; otherwise the `longform` setting does (see `scope.rs`).
pub(crate) async fn run_query(
    ctx: &Ctx,
    query: &str,
    plan: &Plan,
) -> Result<QueryResult, NothingGenerated> {
    let started = Instant::now();
    let (over, query) = scope::split_override(query);
    let d = detect::detect(query);
    let scope = scope::decide(query, &d, plan.longform, over, plan.distributed);
    ctx.learn_contexts().await;
    let mut metrics = first_metrics(ctx, plan, &d, &scope);
    let mut docs = retrieve(ctx, plan, query, d.content_type, &scope).await;
    let answer = if scope.longform {
        long_form(ctx, query, &d, &scope, docs.as_ref(), &mut metrics).await?
    } else if plan.collaborative {
        collaborative(ctx, query, plan, docs.as_ref(), &mut metrics).await?
    } else {
        if plan.distributed && (d.multi_turn() || over.is_some()) {
            ctx.observer
                .notice(format!("ℹ️  One part: {}", scope.reason));
        }
        standard(ctx, query, scope.brief, docs.as_ref(), &mut metrics).await?
    };
    // RAG: citations renumbered in first-cited order, the source list appended.
    let final_output = match docs.as_mut() {
        Some(r) if r.used() => r.finish(&answer.text),
        _ => answer.text,
    };
    count(
        &mut metrics,
        &answer.attribution,
        answer.gaps.len(),
        started,
    );
    metrics.replies = ctx.replies.counts();
    // Every retry and hedge started, those of tasks that then failed too.
    metrics.retries = ctx.replies.retries();
    metrics.hedges = ctx.replies.hedges();
    Ok(QueryResult {
        query: query.to_string(),
        final_output,
        chunks: answer.chunks,
        attribution: answer.attribution,
        metrics,
        gaps: answer.gaps,
        rag: docs.map(|r| r.report),
    })
}

/// What one of the pipelines produced, before RAG's citations are finished.
struct Answer {
    text: String,
    /// The long-form parts (empty for the other pipelines).
    chunks: Vec<Chunk>,
    attribution: Vec<Attribution>,
    gaps: Vec<Gap>,
}

/// The metrics known before any work: how the query runs and what it is.
fn first_metrics(ctx: &Ctx, plan: &Plan, d: &detect::Detection, scope: &Scope) -> Metrics {
    Metrics {
        mode: plan.mode_label.clone(),
        strategy: plan.strategy_label.clone(),
        content_type: d.content_type.as_str().to_string(),
        physical_hosts: ctx.hosts(),
        longform: Some(scope.clone()),
        ..Default::default()
    }
}

/// RAG: retrieval for the question (and each later part of a long answer)
/// before any prompt; None when RAG is off or the answer is a story.
async fn retrieve(
    ctx: &Ctx,
    plan: &Plan,
    query: &str,
    ct: detect::ContentType,
    scope: &Scope,
) -> Option<crate::rag::Retrieved> {
    let long_parts = scope.longform.then_some(scope.parts);
    match rag_parts(ct, long_parts) {
        Some(parts) => {
            let notice = |l: String| ctx.observer.notice(l);
            crate::rag::augment(plan.rag.as_ref(), query, &parts, &notice).await
        }
        None if plan.rag.is_some() => {
            ctx.observer
                .notice("📚 RAG: a story is written without documents".to_string());
            None
        }
        None => None,
    }
}

/// The long-form pipeline: the answer in `scope.parts` parts, then synthesised.
async fn long_form(
    ctx: &Ctx,
    query: &str,
    d: &detect::Detection,
    scope: &Scope,
    docs: Option<&crate::rag::Retrieved>,
    metrics: &mut Metrics,
) -> Result<Answer, NothingGenerated> {
    ctx.observer.notice(format!(
        "📚 Detected long-form {} (est. {} parts) — {} host(s); {}",
        d.content_type.as_str(),
        scope.parts,
        ctx.hosts(),
        scope.reason
    ));
    metrics.pipeline = "long-form".into();
    metrics.chunks_planned = scope.parts;
    let ct = d.content_type;
    let (outline, planner) = outline::decide(ctx, query, ct, scope.parts, &scope.rule).await;
    let parts = (outline.parts.as_slice(), outline.planned);
    let lf = longform::run(ctx, query, ct, parts, docs).await;
    if let Some(l) = metrics.longform.as_mut() {
        l.outline = Some(outline.clone());
    }
    let lf = lf?;
    metrics.chunks_generated = lf.chunks.len();
    metrics.synthesis = Some(lf.synthesis);
    Ok(Answer {
        text: lf.text,
        chunks: lf.chunks,
        attribution: planner.into_iter().chain(lf.attribution).collect(),
        gaps: lf.gaps,
    })
}

/// The collaborative workflow (see `collab.rs`), with its phase timings and votes.
async fn collaborative(
    ctx: &Ctx,
    query: &str,
    plan: &Plan,
    docs: Option<&crate::rag::Retrieved>,
    metrics: &mut Metrics,
) -> Result<Answer, NothingGenerated> {
    ctx.observer
        .notice("🤝 Processing with the collaborative workflow...".into());
    metrics.pipeline = "collaborative".into();
    let c = collab::run(ctx, query, &plan.collab, docs).await?;
    metrics.phase_timings = c.phases;
    metrics.quality_scores = c.votes;
    metrics.quality_passed = c.quality_passed;
    Ok(Answer {
        text: c.markdown,
        chunks: Vec::new(),
        attribution: c.replies.into_iter().map(|r| r.attribution).collect(),
        gaps: c.gaps,
    })
}

/// The standard pipeline: one answer from the Researcher, the Critic and the
/// Editor (`brief`: a short answer, for a short factual question).
async fn standard(
    ctx: &Ctx,
    query: &str,
    brief: bool,
    docs: Option<&crate::rag::Retrieved>,
    metrics: &mut Metrics,
) -> Result<Answer, NothingGenerated> {
    ctx.observer.notice("⚡ Processing...".into());
    metrics.pipeline = "standard".into();
    let s = standard::run(ctx, query, brief, docs).await?;
    Ok(Answer {
        text: s.markdown,
        chunks: Vec::new(),
        attribution: s.replies.into_iter().map(|r| r.attribution).collect(),
        gaps: s.gaps,
    })
}

/// The metrics counted once the work is done: time, tasks, hosts and failures.
fn count(metrics: &mut Metrics, attribution: &[Attribution], failed: usize, started: Instant) {
    metrics.total_execution_time = started.elapsed().as_secs_f64();
    metrics.agent_count = attribution.len();
    metrics.hosts_used = hosts_used(attribution);
    metrics.failed_tasks = failed;
    metrics.node_attribution = attribution.to_vec();
}
