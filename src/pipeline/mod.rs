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
    let (final_output, attribution, gaps) = if scope.longform {
        ctx.observer.notice(format!(
            "📚 Detected long-form {} (est. {} parts) — {} host(s); {}",
            d.content_type.as_str(),
            scope.parts,
            ctx.hosts(),
            scope.reason
        ));
        metrics.pipeline = "long-form".into();
        let lf = longform::run(ctx, query, d.content_type, scope.parts).await?;
        metrics.chunks_generated = lf.chunks.len();
        metrics.synthesis = Some(lf.synthesis);
        chunks = lf.chunks;
        (lf.text, lf.attribution, lf.gaps)
    } else if plan.collaborative {
        ctx.observer
            .notice("🤝 Processing with the collaborative workflow...".into());
        metrics.pipeline = "collaborative".into();
        let c = collab::run(ctx, query, &plan.collab).await?;
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
        let s = standard::run(ctx, query).await?;
        (
            s.markdown,
            s.replies
                .into_iter()
                .map(|r| r.attribution)
                .collect::<Vec<_>>(),
            s.gaps,
        )
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
    })
}
