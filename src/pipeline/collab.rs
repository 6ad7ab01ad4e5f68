//! The collaborative workflow: Researcher → Critic → refinement rounds (in
//! parallel across hosts when there are several, the longest kept) → Editor →
//! output validation (the Editor re-runs once on failure) → optional AST voting.

use std::time::Instant;

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::call::{call, Ctx, Reply};
use super::prompts::{self, Prompt};
use super::quality;
use super::render;
use super::result::{Gap, NothingGenerated, Vote};
use super::standard::OWN_TEXT;
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
    pub gaps: Vec<Gap>,
}

fn length(obj: &Map<String, Value>) -> usize {
    render::narrative(obj).len()
}

/// The workflow's state as it goes from phase to phase.
struct Run<'a> {
    ctx: &'a Ctx,
    query: &'a str,
    /// The question as the Researcher and the Editor get it (with RAG excerpts).
    asked: Prompt,
    replies: Vec<Reply>,
    phases: Vec<(String, f64)>,
    gaps: Vec<Gap>,
}

impl Run<'_> {
    fn phase_done(&mut self, name: &str, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.ctx
            .observer
            .notice(format!("   ⏱️  {name} completed in {secs:.2}s"));
        self.phases.push((name.to_string(), secs));
    }

    /// One agent call; a failure is recorded as a gap (`instead` says what the
    /// workflow does without it) and gives None.
    async fn ask(
        &mut self,
        agent: &str,
        label: &str,
        prompt: Prompt,
        model: &str,
        instead: &str,
    ) -> Option<Reply> {
        let ctx = self.ctx;
        match call(ctx, ctx.agent(agent), label, prompt, model, None).await {
            Ok(r) => Some(r),
            Err(e) => {
                self.gaps.push(super::gap(ctx, &e, instead));
                None
            }
        }
    }

    /// Refinement rounds: in parallel across hosts (the longest kept), else one
    /// after another. A failed round is skipped.
    async fn refine(
        &mut self,
        best: &mut Map<String, Value>,
        critique: &Map<String, Value>,
        rounds: u32,
    ) {
        let (ctx, query) = (self.ctx, self.query);
        let model = ctx.model.clone();
        let hosts = ctx.hosts();
        let room = ctx.room(ctx.agent("Researcher"), &model, query.len() + OWN_TEXT);
        if hosts > 1 {
            let n = (rounds as usize).min(hosts);
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
                    prompts::refine(query, &base, critique, i, room),
                    &model,
                    None,
                )
            }))
            .await;
            for r in results {
                match r {
                    Ok(r) => {
                        if length(&r.fields) > length(best) {
                            *best = r.fields.clone();
                        }
                        self.replies.push(r);
                    }
                    Err(e) => self
                        .gaps
                        .push(super::gap(ctx, &e, "that refinement is skipped")),
                }
            }
        } else {
            ctx.observer.notice(format!(
                "🔁 Phase 3: {rounds} refinement round(s), one at a time (one host)"
            ));
            for i in 0..rounds as usize {
                let prompt = prompts::refine(query, best, critique, i, room);
                if let Some(r) = self
                    .ask(
                        "Researcher",
                        &format!("Refinement {}", i + 1),
                        prompt,
                        &model,
                        "that refinement is skipped",
                    )
                    .await
                {
                    *best = r.fields.clone();
                    self.replies.push(r);
                }
            }
        }
    }

    /// Editing and output validation; without an Editor, the research stands.
    async fn edit(
        &mut self,
        best: &Map<String, Value>,
        critique: Option<&Map<String, Value>>,
    ) -> String {
        let (ctx, query) = (self.ctx, self.query);
        let editor_model = ctx.synthesis_model().to_string();
        let room = ctx.room(
            ctx.agent("Editor"),
            &editor_model,
            self.asked.text.len() + OWN_TEXT,
        );
        let Some(editor) = self
            .ask(
                "Editor",
                "Editor",
                prompts::editor(self.asked.clone(), Some(best), critique, room),
                &editor_model,
                "the answer is the refined research, unedited",
            )
            .await
        else {
            return render::narrative(best).trim().to_string();
        };
        let mut markdown = render::editor_markdown(&editor.fields);
        self.replies.push(editor);
        let v = quality::validate_output(&markdown);
        if v.score < 0.5 {
            ctx.observer.notice(format!(
                "⚠️  Output validation failed ({}); the Editor runs once more",
                v.problems.join("; ")
            ));
            if let Some(again) = self
                .ask(
                    "Editor",
                    "Editor (validation retry)",
                    prompts::editor_retry(query, &markdown, room),
                    &editor_model,
                    "the first edit is kept",
                )
                .await
            {
                markdown = render::editor_markdown(&again.fields);
                self.replies.push(again);
            }
        }
        markdown
    }

    /// AST quality voting with retries; the answer is kept whatever the votes say.
    async fn vote_until_passed(
        &mut self,
        s: &Settings,
        markdown: &mut String,
    ) -> (Vec<Vote>, Option<bool>) {
        let (ctx, query) = (self.ctx, self.query);
        let editor_model = ctx.synthesis_model().to_string();
        let mut votes = Vec::new();
        let mut quality_passed = None;
        let mut attempt = 0;
        loop {
            let (round, replies_v) = match vote(ctx, query, markdown).await {
                Ok(v) => v,
                Err(e) => {
                    self.gaps
                        .push(super::gap(ctx, &e, "the answer is kept without a vote"));
                    break;
                }
            };
            self.replies.extend(replies_v);
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
            let room = ctx.room(ctx.agent("Editor"), &editor_model, query.len() + OWN_TEXT);
            let Some(better) = self
                .ask(
                    "Editor",
                    &format!("Editor (quality retry {attempt})"),
                    prompts::improve(query, markdown, room),
                    &editor_model,
                    "the current answer is kept",
                )
                .await
            else {
                break;
            };
            *markdown = render::editor_markdown(&better.fields);
            self.replies.push(better);
        }
        (votes, quality_passed)
    }
}

pub async fn run(
    ctx: &Ctx,
    query: &str,
    s: &Settings,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Collab, NothingGenerated> {
    // RAG: the Researcher and the Editor see the excerpts (quoted), the other
    // phases work from their output.
    let asked = docs.map_or_else(|| Prompt::from(query), |r| r.question(query));
    let model = ctx.model.clone();
    let mut w = Run {
        ctx,
        query,
        asked: asked.clone(),
        replies: Vec::new(),
        phases: Vec::new(),
        gaps: Vec::new(),
    };

    ctx.observer
        .notice("📚 Phase 1: Researcher - initial research".into());
    let t = Instant::now();
    let research = call(
        ctx,
        ctx.agent("Researcher"),
        "Researcher",
        prompts::researcher(asked.clone()),
        &model,
        None,
    )
    .await?;
    w.phase_done("Phase 1: Research", t);

    ctx.observer
        .notice("🔍 Phase 2: Critic - review and feedback".into());
    let t = Instant::now();
    let room = ctx.room(ctx.agent("Critic"), &model, query.len() + OWN_TEXT);
    let critique = w
        .ask(
            "Critic",
            "Critic",
            prompts::critic_of(query, &research.fields, room),
            &model,
            "the answer goes on without a review (no refinement)",
        )
        .await;
    w.phase_done("Phase 2: Critique", t);

    let mut best = research.fields.clone();
    w.replies.push(research);
    if let (true, Some(c)) = (s.refinement_rounds > 0, &critique) {
        let t = Instant::now();
        w.refine(&mut best, &c.fields, s.refinement_rounds).await;
        w.phase_done("Phase 3: Refinement", t);
    }

    ctx.observer
        .notice("✨ Phase 4: Editor - final synthesis".into());
    let t = Instant::now();
    let review = critique.as_ref().map(|c| c.fields.clone());
    w.replies.extend(critique);
    let mut markdown = w.edit(&best, review.as_ref()).await;
    w.phase_done("Phase 4: Editing", t);

    let (mut votes, mut quality_passed) = (Vec::new(), None);
    if s.ast_voting {
        let t = Instant::now();
        (votes, quality_passed) = w.vote_until_passed(s, &mut markdown).await;
        w.phase_done("Phase 5: Quality voting", t);
    }
    Ok(Collab {
        markdown,
        replies: w.replies,
        phases: w.phases,
        votes,
        quality_passed,
        gaps: w.gaps,
    })
}

/// Two voters judge the answer at once.
async fn vote(ctx: &Ctx, query: &str, answer: &str) -> Result<(Vec<Vote>, Vec<Reply>), TaskFailed> {
    let perspectives = [
        ("Voter 1 (accuracy)", "for accuracy and completeness"),
        ("Voter 2 (clarity)", "for clarity, structure and formatting"),
    ];
    let model = ctx.synthesis_model().to_string();
    let room = ctx.room(ctx.agent("QualityVoter"), &model, query.len() + OWN_TEXT);
    let results = join_all(perspectives.iter().map(|(label, p)| {
        call(
            ctx,
            ctx.agent("QualityVoter"),
            label,
            prompts::voter(query, answer, p, room),
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
