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
pub mod prompts;
pub mod quality;
pub mod render;
pub mod repair;
pub mod result;
pub mod scope;
pub mod standard;
pub mod synthesis;

use std::time::Instant;

use call::Ctx;
use result::{Gap, Metrics, NothingGenerated, QueryResult};

use crate::scheduler::{Attribution, TaskFailed};

/// How a query should run.
pub struct Plan {
    /// Distributed mode: where the `longform` setting applies.
    pub distributed: bool,
    pub collaborative: bool,
    pub collab: collab::Settings,
    pub mode_label: String,
    pub strategy_label: String,
    /// The `longform` setting (`auto`, `always`, `never`).
    pub longform: scope::Longform,
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
pub async fn run_query(
    ctx: &Ctx,
    query: &str,
    plan: &Plan,
) -> Result<QueryResult, NothingGenerated> {
    let started = Instant::now();
    let (over, query) = scope::split_override(query);
    let d = detect::detect(query);
    let scope = scope::decide(query, &d, plan.longform, over, plan.distributed);
    ctx.learn_contexts().await;
    let mut metrics = Metrics {
        mode: plan.mode_label.clone(),
        strategy: plan.strategy_label.clone(),
        content_type: d.content_type.as_str().to_string(),
        physical_hosts: ctx.hosts(),
        longform: Some(scope.clone()),
        ..Default::default()
    };
    let mut chunks = Vec::new();
    // RAG: retrieval for the question (and each later part) before any prompt.
    let long_parts = scope.longform.then_some(scope.parts);
    let mut docs = match rag_parts(d.content_type, long_parts) {
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
    };
    let (final_output, attribution, gaps) = if scope.longform {
        ctx.observer.notice(format!(
            "📚 Detected long-form {} (est. {} parts) — {} host(s); {}",
            d.content_type.as_str(),
            scope.parts,
            ctx.hosts(),
            scope.reason
        ));
        metrics.pipeline = "long-form".into();
        let lf = longform::run(ctx, query, d.content_type, scope.parts, docs.as_ref()).await?;
        metrics.chunks_generated = lf.chunks.len();
        metrics.synthesis = Some(lf.synthesis);
        chunks = lf.chunks;
        (lf.text, lf.attribution, lf.gaps)
    } else if plan.collaborative {
        ctx.observer
            .notice("🤝 Processing with the collaborative workflow...".into());
        metrics.pipeline = "collaborative".into();
        let c = collab::run(ctx, query, &plan.collab, docs.as_ref()).await?;
        metrics.phase_timings = c.phases;
        metrics.quality_scores = c.votes;
        metrics.quality_passed = c.quality_passed;
        (
            c.markdown,
            c.replies.into_iter().map(|r| r.attribution).collect(),
            c.gaps,
        )
    } else {
        if plan.distributed && (d.multi_turn() || over.is_some()) {
            ctx.observer
                .notice(format!("ℹ️  One part: {}", scope.reason));
        }
        ctx.observer.notice("⚡ Processing...".into());
        metrics.pipeline = "standard".into();
        let s = standard::run(ctx, query, docs.as_ref()).await?;
        (
            s.markdown,
            s.replies
                .into_iter()
                .map(|r| r.attribution)
                .collect::<Vec<_>>(),
            s.gaps,
        )
    };
    // RAG: citations renumbered in first-cited order, the source list appended.
    let final_output = match docs.as_mut() {
        Some(r) if r.used() => r.finish(&final_output),
        _ => final_output,
    };
    metrics.total_execution_time = started.elapsed().as_secs_f64();
    metrics.agent_count = attribution.len();
    metrics.hosts_used = hosts_used(&attribution);
    metrics.retries = attribution.iter().map(|a| a.retries).sum();
    metrics.hedges = attribution.iter().map(|a| a.hedges).sum();
    metrics.failed_tasks = gaps.len();
    metrics.node_attribution = attribution.clone();
    Ok(QueryResult {
        query: query.to_string(),
        final_output,
        chunks,
        attribution,
        metrics,
        gaps,
        rag: docs.map(|r| r.report),
    })
}
