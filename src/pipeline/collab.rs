//! The collaborative workflow: Researcher → Critic → refinement rounds (in
//! parallel across hosts when there are several, the longest kept) → Editor →
//! output validation (the Editor re-runs once on failure) → optional AST voting.

use std::time::Instant;

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::call::{call, Ctx, Reply};
use super::prompts;
use super::quality;
use super::render;
use super::result::Vote;
use crate::scheduler::TaskFailed;

pub struct Settings {
    pub refinement_rounds: u32,
    pub ast_voting: bool,
    pub quality_threshold: f64,
    pub max_quality_retries: u32,
}

pub struct Collab {
    pub markdown: String,
    pub replies: Vec<Reply>,
    pub phases: Vec<(String, f64)>,
    pub votes: Vec<Vote>,
    pub quality_passed: Option<bool>,
}

fn length(obj: &Map<String, Value>) -> usize {
    render::narrative(obj).len()
}

pub async fn run(
    ctx: &Ctx,
    plain: &str,
    s: &Settings,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Collab, TaskFailed> {
    // RAG: every phase but the Critic's and the voters' sees the excerpts.
    let asked = docs.map_or_else(|| plain.to_string(), |r| r.question(plain));
    let query = asked.as_str();
    let model = ctx.model.clone();
    let mut replies = Vec::new();
    let mut phases = Vec::new();
    let phase = |name: &str, started: Instant, phases: &mut Vec<(String, f64)>| {
        let secs = started.elapsed().as_secs_f64();
        ctx.observer
            .notice(format!("   ⏱️  {name} completed in {secs:.2}s"));
        phases.push((name.to_string(), secs));
    };

    ctx.observer
        .notice("📚 Phase 1: Researcher - initial research".into());
    let t = Instant::now();
    let research = call(
        ctx,
        ctx.agent("Researcher"),
        "Researcher",
        prompts::researcher(query),
        &model,
        None,
    )
    .await?;
    phase("Phase 1: Research", t, &mut phases);

    ctx.observer
        .notice("🔍 Phase 2: Critic - review and feedback".into());
    let t = Instant::now();
    let critique = call(
        ctx,
        ctx.agent("Critic"),
        "Critic",
        prompts::critic_of(plain, &research.fields),
        &model,
        None,
    )
    .await?;
    phase("Phase 2: Critique", t, &mut phases);

    let mut best = research.fields.clone();
    replies.push(research);
    if s.refinement_rounds > 0 {
        let hosts = ctx.sched.hosts();
        let t = Instant::now();
        if hosts > 1 {
            let n = (s.refinement_rounds as usize).min(hosts);
            ctx.observer.notice(format!(
                "🔁 Phase 3: {n} refinement(s) in parallel across {hosts} hosts (longest kept)"
            ));
            let labels: Vec<String> = (1..=n).map(|i| format!("Refinement {i}")).collect();
            let base = best.clone();
            let results = join_all(labels.iter().enumerate().map(|(i, label)| {
                call(
                    ctx,
                    ctx.agent("Researcher"),
                    label,
                    prompts::refine(query, &base, &critique.fields, i),
                    &model,
                    None,
                )
            }))
            .await;
            for r in results {
                let r = r?;
                if length(&r.fields) > length(&best) {
                    best = r.fields.clone();
                }
                replies.push(r);
            }
        } else {
            ctx.observer.notice(format!(
                "🔁 Phase 3: {} refinement round(s), one at a time (one host)",
                s.refinement_rounds
            ));
            for i in 0..s.refinement_rounds as usize {
                let r = call(
                    ctx,
                    ctx.agent("Researcher"),
                    &format!("Refinement {}", i + 1),
                    prompts::refine(query, &best, &critique.fields, i),
                    &model,
                    None,
                )
                .await?;
                best = r.fields.clone();
                replies.push(r);
            }
        }
        phase("Phase 3: Refinement", t, &mut phases);
    }

    ctx.observer
        .notice("✨ Phase 4: Editor - final synthesis".into());
    let t = Instant::now();
    let editor_model = ctx.synthesis_model().to_string();
    let editor = call(
        ctx,
        ctx.agent("Editor"),
        "Editor",
        prompts::editor(query, &best, &critique.fields),
        &editor_model,
        None,
    )
    .await?;
    let mut markdown = render::editor_markdown(&editor.fields);
    replies.push(critique);
    replies.push(editor);
    let v = quality::validate_output(&markdown);
    if v.score < 0.5 {
        ctx.observer.notice(format!(
            "⚠️  Output validation failed ({}); the Editor runs once more",
            v.problems.join("; ")
        ));
        let again = call(
            ctx,
            ctx.agent("Editor"),
            "Editor (validation retry)",
            prompts::editor_retry(query, &markdown, &v.problems),
            &editor_model,
            None,
        )
        .await?;
        markdown = render::editor_markdown(&again.fields);
        replies.push(again);
    }
    phase("Phase 4: Editing", t, &mut phases);

    let mut votes = Vec::new();
    let mut quality_passed = None;
    if s.ast_voting {
        let t = Instant::now();
        let mut attempt = 0;
        loop {
            let (round, replies_v) = vote(ctx, plain, &markdown).await?;
            replies.extend(replies_v);
            let mean = round.iter().map(|v| v.score).sum::<f64>() / round.len().max(1) as f64;
            let passed = mean >= s.quality_threshold;
            ctx.observer.notice(format!(
                "🗳️  Quality vote {}: {mean:.2} (threshold {:.2}) — {}",
                attempt + 1,
                s.quality_threshold,
                if passed { "passed" } else { "failed" }
            ));
            votes = round;
            quality_passed = Some(passed);
            if passed || attempt >= s.max_quality_retries {
                break;
            }
            attempt += 1;
            let feedback: Vec<(f64, String)> = votes
                .iter()
                .map(|v| (v.score, v.reasoning.clone()))
                .collect();
            let mut issues: Vec<String> = votes.iter().flat_map(|v| v.issues.clone()).collect();
            issues.sort();
            issues.dedup();
            let better = call(
                ctx,
                ctx.agent("Editor"),
                &format!("Editor (quality retry {attempt})"),
                prompts::improve(query, &markdown, &feedback, &issues),
                &editor_model,
                None,
            )
            .await?;
            markdown = render::editor_markdown(&better.fields);
            replies.push(better);
        }
        phase("Phase 5: Quality voting", t, &mut phases);
    }
    Ok(Collab {
        markdown,
        replies,
        phases,
        votes,
        quality_passed,
    })
}

/// Two voters judge the answer at once.
async fn vote(ctx: &Ctx, query: &str, answer: &str) -> Result<(Vec<Vote>, Vec<Reply>), TaskFailed> {
    let perspectives = [
        ("Voter 1 (accuracy)", "for accuracy and completeness"),
        ("Voter 2 (clarity)", "for clarity, structure and formatting"),
    ];
    let model = ctx.synthesis_model().to_string();
    let results = join_all(perspectives.iter().map(|(label, p)| {
        call(
            ctx,
            ctx.agent("QualityVoter"),
            label,
            prompts::voter(query, answer, p),
            &model,
            None,
        )
    }))
    .await;
    let mut votes = Vec::new();
    let mut replies = Vec::new();
    for ((label, _), r) in perspectives.iter().zip(results) {
        let r = r?;
        let score = r.fields.get("score").and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        votes.push(Vote {
            voter: label.to_string(),
            score: score.map(|s| s.clamp(0.0, 1.0)).unwrap_or(0.5),
            reasoning: r
                .fields
                .get("reasoning")
                .and_then(|v| v.as_str())
                .unwrap_or(if score.is_none() {
                    "reply could not be parsed; scored 0.5"
                } else {
                    ""
                })
                .to_string(),
            issues: r
                .fields
                .get("issues")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        });
        replies.push(r);
    }
    Ok((votes, replies))
}
