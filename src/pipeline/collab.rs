//! The collaborative workflow: Researcher → Critic → refinement rounds (in
//! parallel across hosts when there are several, the longest kept) → Editor →
//! output validation (the Editor re-runs once on failure) → optional AST voting.

use std::time::Instant;

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::call::{Ctx, Reply, Role};
use super::prompts;
use super::quality;
use super::render;
use super::result::{Gap, NothingGenerated};
use super::standard::OWN_TEXT;
use crate::prompt::{weight, Prompt};
use crate::report::Vote;
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

impl<'a> Run<'a> {
    /// RAG: the Researcher and the Editor see the excerpts (quoted), the other
    /// phases work from their output.
    fn new(ctx: &'a Ctx, query: &'a str, docs: Option<&crate::rag::Retrieved>) -> Run<'a> {
        Run {
            ctx,
            query,
            asked: docs.map_or_else(|| Prompt::from(query), |r| r.question(query)),
            replies: Vec::new(),
            phases: Vec::new(),
            gaps: Vec::new(),
        }
    }

    /// The Researcher, on the query's model (it also refines).
    fn researcher(&self) -> Role<'a> {
        Role::new(self.ctx, "Researcher", &self.ctx.model)
    }

    /// The Editor, on the synthesis model.
    fn editor(&self) -> Role<'a> {
        Role::new(self.ctx, "Editor", self.ctx.synthesis_model())
    }

    /// Say that a phase begins; its start time.
    fn phase_start(&self, notice: &str) -> Instant {
        self.ctx.observer.notice(notice.into());
        Instant::now()
    }

    /// Say how long phase `name` took, and keep it for the metrics.
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
        role: Role<'_>,
        label: &str,
        prompt: Prompt,
        instead: &str,
    ) -> Option<Reply> {
        match role.ask(label, prompt).await {
            Ok(r) => Some(r),
            Err(e) => {
                self.gaps.push(super::gap(self.ctx, &e, instead));
                None
            }
        }
    }

    /// Phase 1: the Researcher answers the question. Without research there
    /// is no answer, so its failure ends the workflow.
    async fn research(&mut self) -> Result<Reply, TaskFailed> {
        let t = self.phase_start("📚 Phase 1: Researcher - initial research");
        let prompt = prompts::researcher(self.asked.clone());
        let research = self.researcher().ask("Researcher", prompt).await?;
        self.phase_done("Phase 1: Research", t);
        Ok(research)
    }

    /// Phase 2: the Critic reviews the research; without a review the
    /// workflow goes on unrefined.
    async fn critique(&mut self, research: &Map<String, Value>) -> Option<Reply> {
        let t = self.phase_start("🔍 Phase 2: Critic - review and feedback");
        let critic = Role::new(self.ctx, "Critic", &self.ctx.model);
        let room = critic.room(weight(self.query) + OWN_TEXT);
        let prompt = prompts::critic_of(self.query, research, room);
        let instead = "the answer goes on without a review (no refinement)";
        let critique = self.ask(critic, "Critic", prompt, instead).await;
        self.phase_done("Phase 2: Critique", t);
        critique
    }

    /// Phase 3, refinement rounds: in parallel across hosts (the longest
    /// kept), else one after another. A failed round is skipped.
    async fn refinement(
        &mut self,
        best: &mut Map<String, Value>,
        critique: &Map<String, Value>,
        rounds: u32,
    ) {
        let t = Instant::now();
        let hosts = self.ctx.hosts();
        if hosts > 1 {
            self.refine_in_parallel(best, critique, rounds, hosts).await;
        } else {
            self.refine_in_turn(best, critique, rounds).await;
        }
        self.phase_done("Phase 3: Refinement", t);
    }

    /// Up to one refinement per host at once, all from the same research and
    /// review, each from its own angle; the longest result becomes `best`.
    async fn refine_in_parallel(
        &mut self,
        best: &mut Map<String, Value>,
        critique: &Map<String, Value>,
        rounds: u32,
        hosts: usize,
    ) {
        let (ctx, query) = (self.ctx, self.query);
        let researcher = self.researcher();
        let room = researcher.room(weight(query) + OWN_TEXT);
        let n = (rounds as usize).min(hosts);
        ctx.observer.notice(format!(
            "🔁 Phase 3: {n} refinement(s) in parallel across {hosts} hosts (longest kept)"
        ));
        let labels: Vec<String> = (1..=n).map(|i| format!("Refinement {i}")).collect();
        let base = best.clone();
        let results = join_all(labels.iter().enumerate().map(|(i, label)| {
            researcher.ask(label, prompts::refine(query, &base, critique, i, room))
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
    }

    /// `rounds` refinements one after another (one host), each from the
    /// previous one; the last that succeeded becomes `best`.
    async fn refine_in_turn(
        &mut self,
        best: &mut Map<String, Value>,
        critique: &Map<String, Value>,
        rounds: u32,
    ) {
        let researcher = self.researcher();
        let room = researcher.room(weight(self.query) + OWN_TEXT);
        self.ctx.observer.notice(format!(
            "🔁 Phase 3: {rounds} refinement round(s), one at a time (one host)"
        ));
        for i in 0..rounds as usize {
            let prompt = prompts::refine(self.query, best, critique, i, room);
            let label = format!("Refinement {}", i + 1);
            let instead = "that refinement is skipped";
            if let Some(r) = self.ask(researcher, &label, prompt, instead).await {
                *best = r.fields.clone();
                self.replies.push(r);
            }
        }
    }

    /// Phase 4: the Editor writes the answer from the best research and the
    /// review (which joins the replies here), then output validation.
    async fn editing(&mut self, best: &Map<String, Value>, critique: Option<Reply>) -> String {
        let t = self.phase_start("✨ Phase 4: Editor - final synthesis");
        let review = critique.as_ref().map(|c| c.fields.clone());
        self.replies.extend(critique);
        let markdown = self.edit(best, review.as_ref()).await;
        self.phase_done("Phase 4: Editing", t);
        markdown
    }

    /// Editing and output validation; without an Editor, the research stands.
    async fn edit(
        &mut self,
        best: &Map<String, Value>,
        critique: Option<&Map<String, Value>>,
    ) -> String {
        let editor = self.editor();
        let room = editor.room(weight(&self.asked.text) + OWN_TEXT);
        let prompt = prompts::editor(self.asked.clone(), Some(best), critique, room);
        let instead = "the answer is the refined research, unedited";
        let Some(edited) = self.ask(editor, "Editor", prompt, instead).await else {
            return render::narrative(best).trim().to_string();
        };
        let markdown = render::editor_markdown(&edited.fields);
        self.replies.push(edited);
        self.validated(markdown, room).await
    }

    /// Output validation: a failing answer goes to the Editor once more
    /// (with `room` bytes of it quoted); the first edit stays if that fails.
    async fn validated(&mut self, mut markdown: String, room: usize) -> String {
        let v = quality::validate_output(&markdown);
        if v.score < 0.5 {
            self.ctx.observer.notice(format!(
                "⚠️  Output validation failed ({}); the Editor runs once more",
                v.problems.join("; ")
            ));
            let prompt = prompts::editor_retry(self.query, &markdown, room);
            let label = "Editor (validation retry)";
            let instead = "the first edit is kept";
            if let Some(again) = self.ask(self.editor(), label, prompt, instead).await {
                markdown = render::editor_markdown(&again.fields);
                self.replies.push(again);
            }
        }
        markdown
    }

    /// Phase 5: AST quality voting (with its retries), timed.
    async fn voting(&mut self, s: &Settings, markdown: &mut String) -> (Vec<Vote>, Option<bool>) {
        let t = Instant::now();
        let outcome = self.vote_until_passed(s, markdown).await;
        self.phase_done("Phase 5: Quality voting", t);
        outcome
    }

    /// AST quality voting with retries; the answer is kept whatever the votes say.
    async fn vote_until_passed(
        &mut self,
        s: &Settings,
        markdown: &mut String,
    ) -> (Vec<Vote>, Option<bool>) {
        let mut votes = Vec::new();
        let mut quality_passed = None;
        let mut attempt = 0;
        loop {
            let (round, replies_v) = match vote(self.ctx, self.query, markdown).await {
                Ok(v) => v,
                Err(e) => {
                    let instead = "the answer is kept without a vote";
                    self.gaps.push(super::gap(self.ctx, &e, instead));
                    break;
                }
            };
            self.replies.extend(replies_v);
            let passed = self.judge(&round, attempt, s.quality_threshold);
            votes = round;
            quality_passed = Some(passed);
            if passed || attempt >= s.max_quality_retries {
                break;
            }
            attempt += 1;
            if !self.improve(markdown, attempt).await {
                break;
            }
        }
        (votes, quality_passed)
    }

    /// Whether a round of votes passes `threshold` (their mean), said as
    /// vote number `attempt + 1`.
    fn judge(&self, round: &[Vote], attempt: u32, threshold: f64) -> bool {
        let mean = round.iter().map(|v| v.score).sum::<f64>() / round.len().max(1) as f64;
        let passed = mean >= threshold;
        self.ctx.observer.notice(format!(
            "🗳️  Quality vote {}: {mean:.2} (threshold {threshold:.2}) — {}",
            attempt + 1,
            if passed { "passed" } else { "failed" }
        ));
        passed
    }

    /// Quality retry `attempt`: the Editor improves the answer. False when it
    /// could not (the current answer is kept).
    async fn improve(&mut self, markdown: &mut String, attempt: u32) -> bool {
        let editor = self.editor();
        let room = editor.room(weight(self.query) + OWN_TEXT);
        let prompt = prompts::improve(self.query, markdown, room);
        let label = format!("Editor (quality retry {attempt})");
        let instead = "the current answer is kept";
        let Some(better) = self.ask(editor, &label, prompt, instead).await else {
            return false;
        };
        *markdown = render::editor_markdown(&better.fields);
        self.replies.push(better);
        true
    }
}

/// Answer `query` through the phases: research, critique, refinement (when
/// there is a review and rounds to do), editing, quality voting (when on).
/// Only a failed research fails the query; any other failure is a gap.
pub async fn run(
    ctx: &Ctx,
    query: &str,
    s: &Settings,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Collab, NothingGenerated> {
    let mut w = Run::new(ctx, query, docs);
    let research = w.research().await?;
    let critique = w.critique(&research.fields).await;
    let mut best = research.fields.clone();
    w.replies.push(research);
    if let (true, Some(c)) = (s.refinement_rounds > 0, &critique) {
        w.refinement(&mut best, &c.fields, s.refinement_rounds)
            .await;
    }
    let mut markdown = w.editing(&best, critique).await;
    let (votes, quality_passed) = if s.ast_voting {
        w.voting(s, &mut markdown).await
    } else {
        (Vec::new(), None)
    };
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
    let voter = Role::new(ctx, "QualityVoter", ctx.synthesis_model());
    let room = voter.room(weight(query) + OWN_TEXT);
    let results = join_all(
        perspectives
            .iter()
            .map(|(label, p)| voter.ask(label, prompts::voter(query, answer, p, room))),
    )
    .await;
    let mut votes = Vec::new();
    let mut replies = Vec::new();
    for ((label, _), r) in perspectives.iter().zip(results) {
        let r = r?;
        votes.push(read_vote(label, &r.fields));
        replies.push(r);
    }
    Ok((votes, replies))
}

/// A voter's reply as a vote: its score (0.5 when it has none), reasoning
/// and issues.
fn read_vote(voter: &str, fields: &Map<String, Value>) -> Vote {
    let score = fields.get("score").and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    Vote {
        voter: voter.to_string(),
        score: score.map(|s| s.clamp(0.0, 1.0)).unwrap_or(0.5),
        reasoning: fields
            .get("reasoning")
            .and_then(|v| v.as_str())
            .unwrap_or(if score.is_none() {
                "reply could not be parsed; scored 0.5"
            } else {
                ""
            })
            .to_string(),
        issues: fields
            .get("issues")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
