//! Long-form answers: the parts of an outline (`outline.rs`: planned for the
//! question, or the original's parts for the content type), chunk 1 first,
//! then chunks 2..N on their titles and focus with a summary of chunk 1,
//! through the host-aware queue.
//! Each chunk asks for as many words as the nodes' context leaves room for,
//! is quality-checked and retried once (the task restated, never the check's
//! findings); chunks are assembled in chunk order, then synthesised
//! (`synthesis.rs`). One line per finished part says where and how long. A
//! part that could not be written anywhere (a reply with no text after
//! cleaning counts as a failed attempt, retried on another host by the
//! scheduler) is a marked gap.

use futures_util::future::join_all;

use super::budget;
use super::call::{call, Ctx, Reply};
use super::detect::ContentType;
use super::prompts;
use super::quality;
use super::render;
use super::result::{Chunk, Gap, NothingGenerated};
use super::synthesis;
use crate::prompt::Prompt;
use crate::report::Section;
use crate::scheduler::{Attribution, TaskFailed};

/// Words a part asks for when the context leaves room: the first part, the
/// others, a story's chapters (the original asked for "at least" these).
const FIRST_WORDS: usize = 500;
const PART_WORDS: usize = 400;
const CHAPTER_WORDS: usize = 300;
/// Fewest words a part asks for, however small the context.
const MIN_WORDS: usize = 60;

pub struct LongForm {
    pub text: String,
    pub chunks: Vec<Chunk>,
    pub attribution: Vec<Attribution>,
    /// What happened to the synthesis.
    pub synthesis: String,
    /// Parts that could not be generated (marked in the text).
    pub gaps: Vec<Gap>,
}

/// A part of the answer: its text, or why it is missing.
pub enum Part {
    Done(Chunk),
    Missing {
        n: usize,
        title: String,
        why: String,
    },
}

fn writer(ctx: &Ctx, ct: ContentType) -> &super::agents::Agent {
    if ct == ContentType::Storytelling {
        ctx.agent("Storyteller")
    } else {
        ctx.agent("ChunkWriter")
    }
}

/// Which attempt at a chunk was kept (its quality retry, if any, is the second).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kept {
    /// The first passed its quality check: no retry.
    Only,
    /// The quality retry.
    Retry,
    /// The first: its quality retry was no better.
    First,
    /// The first: its quality retry failed.
    FirstRetryFailed,
}

/// Which part of which outline: its number, the total, its section, and
/// whether the section was planned for the question (its title is then
/// named in the request).
#[derive(Clone, Copy)]
struct Spec<'a> {
    n: usize,
    total: usize,
    section: &'a Section,
    planned: bool,
}

impl Spec<'_> {
    fn request(&self, query: &str, ct: ContentType, first: Option<&str>, words: usize) -> Prompt {
        let title = self.planned.then_some(self.section.title.as_str());
        let at = (self.n, self.total);
        prompts::chunk(query, ct, at, title, &self.section.focus, first, words)
    }
}

/// Write one chunk: ask, check, retry once, keep the better attempt. A failed
/// retry keeps the first attempt. The chunk, where its attempts ran, and
/// which was kept.
async fn chunk(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    spec: Spec<'_>,
    first: Option<&str>,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<(Chunk, Vec<Attribution>, Kept), TaskFailed> {
    let n = spec.n;
    let label = format!("chunk {n}/{}", spec.total);
    let agent = writer(ctx, ct);
    // RAG: the part's own excerpts go below its request, quoted.
    let excerpts = docs.and_then(|r| r.part(n)).unwrap_or_default();
    let words = words_that_fit(ctx, agent, query, ct, spec, first, &excerpts);
    let prompt = with_excerpts(spec.request(query, ct, first, words), &excerpts);
    let a = Draft::of(call(ctx, agent, &label, prompt.clone(), &ctx.model, None).await?);
    let mut attribution = vec![a.attribution.clone()];
    let problems = match quality::chunk_check(&a.text) {
        Ok(()) => return Ok((a.chunk(spec.section, n, None), attribution, Kept::Only)),
        Err(p) => p,
    };
    ctx.observer.notice(format!(
        "⚠️  {label} failed its quality check ({}); retrying once",
        problems.join("; ")
    ));
    let retry_label = format!("{label} (retry)");
    let retry = prompts::chunk_retry(&prompt);
    let b = match call(ctx, agent, &retry_label, retry, &ctx.model, None).await {
        Ok(b) => Draft::of(b),
        Err(e) => {
            let why = format!("its quality retry failed ({e}); the first attempt is kept");
            ctx.observer.notice(format!("⚠️  {label}: {why}"));
            let chunk = a.chunk(spec.section, n, Some(why));
            return Ok((chunk, attribution, Kept::FirstRetryFailed));
        }
    };
    attribution.push(b.attribution.clone());
    let (chunk, kept) = better(ctx, &label, (n, spec.section), (a, problems), b);
    Ok((chunk, attribution, kept))
}

/// One attempt at a chunk: its text and where it was written.
struct Draft {
    text: String,
    attribution: Attribution,
}

impl Draft {
    fn of(reply: Reply) -> Draft {
        Draft {
            text: render::narrative(&reply.fields),
            attribution: reply.attribution,
        }
    }

    /// This attempt as chunk `n` of `section`, with a quality warning if any.
    fn chunk(&self, section: &Section, n: usize, warning: Option<String>) -> Chunk {
        Chunk {
            chunk: n,
            title: section.title.clone(),
            focus: section.focus.clone(),
            content: self.text.clone(),
            node: self.attribution.node.clone(),
            seconds: self.attribution.seconds,
            quality_warning: warning,
        }
    }
}

/// Chunk `n` (of `section`) after its first attempt `a` failed the quality
/// check with `problems`: the retry `b` if it passes; else the attempt with
/// fewer problems (the longer on a tie), with a warning saying so.
fn better(
    ctx: &Ctx,
    label: &str,
    (n, section): (usize, &Section),
    (a, problems): (Draft, Vec<String>),
    b: Draft,
) -> (Chunk, Kept) {
    let problems_b = match quality::chunk_check(&b.text) {
        Ok(()) => return (b.chunk(section, n, None), Kept::Retry),
        Err(p) => p,
    };
    let keep_b = problems_b.len() < problems.len()
        || (problems_b.len() == problems.len() && b.text.len() > a.text.len());
    let why = format!(
        "failed its quality check twice ({}); the better attempt is kept",
        if keep_b {
            problems_b.join("; ")
        } else {
            problems.join("; ")
        }
    );
    ctx.observer.notice(format!("⚠️  {label} {why}"));
    let (kept, which) = if keep_b {
        (b, Kept::Retry)
    } else {
        (a, Kept::First)
    };
    (kept.chunk(section, n, Some(why)), which)
}

/// Words part `n` can ask for: its usual length, or what the smallest
/// context among the nodes leaves for the reply (every node may write it).
fn words_that_fit(
    ctx: &Ctx,
    agent: &super::agents::Agent,
    query: &str,
    ct: ContentType,
    spec: Spec<'_>,
    first: Option<&str>,
    excerpts: &Prompt,
) -> usize {
    let usual = match (ct, first) {
        (ContentType::Storytelling, _) => CHAPTER_WORDS,
        (_, None) => FIRST_WORDS,
        _ => PART_WORDS,
    };
    let probe = with_excerpts(spec.request(query, ct, first, usual), excerpts);
    let system = prompts::system(agent, &agent.required_fields);
    let window = ctx.context(&ctx.model, false);
    let room = budget::reply_room(window, budget::prompt_tokens(&system, &probe.text))
        .unwrap_or(budget::MIN_REPLY)
        .min(ctx.num_predict);
    budget::words_for(room).clamp(MIN_WORDS, usual)
}

/// A part's request with its excerpts (if any) below it.
fn with_excerpts(request: Prompt, excerpts: &Prompt) -> Prompt {
    if excerpts.text.is_empty() {
        request
    } else {
        request.says("\n\n").then(excerpts)
    }
}

/// A part, and one line when it is done: where, how long, how fast.
async fn part(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    spec: Spec<'_>,
    first: Option<&str>,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<(Chunk, Vec<Attribution>), TaskFailed> {
    let (n, total) = (spec.n, spec.total);
    let (c, a, kept) = chunk(ctx, query, ct, spec, first, docs).await?;
    let unit = if ct == ContentType::Storytelling {
        "chapter"
    } else {
        "part"
    };
    ctx.observer.notice(done_line(unit, n, total, &c, &a, kept));
    Ok((c, a))
}

/// The line for a finished part: the node, time and rate of the attempt
/// that was kept, and whether a quality retry came into it.
fn done_line(
    unit: &str,
    n: usize,
    total: usize,
    c: &Chunk,
    attempts: &[Attribution],
    kept: Kept,
) -> String {
    let one = match kept {
        Kept::Retry => attempts.last(),
        _ => attempts.first(),
    };
    let (node, secs) = one.map_or((c.node.as_str(), c.seconds), |x| {
        (x.node.as_str(), x.seconds)
    });
    let rate = one
        .and_then(|x| x.tokens_per_sec)
        .map(|t| format!(", {t:.1} tokens/s"))
        .unwrap_or_default();
    let retry = match kept {
        Kept::Only => "",
        Kept::Retry => ", after a quality retry",
        Kept::First => ", the first attempt: its quality retry was no better",
        Kept::FirstRetryFailed => ", the first attempt: its quality retry failed",
    };
    format!(
        "✅ {unit} {n}/{total} done on {node} in {secs:.1}s ({} words{rate}{retry})",
        c.content.split_whitespace().count()
    )
}

/// Write the parts of `outline` (planned or not: `planned`), then
/// synthesise them.
pub async fn run(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    (outline, planned): (&[Section], bool),
    docs: Option<&crate::rag::Retrieved>,
) -> Result<LongForm, NothingGenerated> {
    let total = outline.len();
    let spec = |i: usize| Spec {
        n: i + 1,
        total,
        section: &outline[i],
        planned,
    };
    let first = part(ctx, query, ct, spec(0), None, docs).await;
    let summary = first
        .as_ref()
        .ok()
        .map(|(c, _)| prompts::summary(&c.content, 300));
    let rest =
        join_all((1..total).map(|i| part(ctx, query, ct, spec(i), summary.as_deref(), docs))).await;
    // join_all keeps the order it was given: chunk order, never completion order.
    let mut parts = Vec::new();
    let mut chunks = Vec::new();
    let mut attribution = Vec::new();
    let mut gaps = Vec::new();
    let mut first_failure: Option<TaskFailed> = None;
    for (n, r) in (1..=total).zip(std::iter::once(first).chain(rest)) {
        match r {
            Ok((c, a)) => {
                attribution.extend(a);
                chunks.push(c.clone());
                parts.push(Part::Done(c));
            }
            Err(e) => {
                let section = &outline[n - 1];
                let mut g = super::gap(
                    ctx,
                    &e,
                    format!("part {n} is missing from the answer (marked where it belongs)"),
                );
                g.chunk = Some(n);
                g.focus = Some(section.focus.clone());
                parts.push(Part::Missing {
                    n,
                    title: section.title.clone(),
                    why: g.error.clone(),
                });
                gaps.push(g);
                first_failure.get_or_insert(e);
            }
        }
    }
    if let (true, Some(first)) = (chunks.is_empty(), first_failure) {
        return Err(NothingGenerated {
            first,
            others: total - 1,
        });
    }
    let joined = join(&parts, ct);
    let (text, synthesis) = if !gaps.is_empty() {
        (
            joined,
            format!(
                "skipped: {} part(s) missing; the parts are joined with the gaps marked",
                gaps.len()
            ),
        )
    } else {
        let s = synthesis::run(ctx, query, ct, &chunks, joined, &mut attribution).await;
        (s.text, s.status)
    };
    Ok(LongForm {
        text,
        chunks,
        attribution,
        synthesis,
        gaps,
    })
}

/// The parts in order, each under a heading naming its part and title; a
/// missing part is a marked gap saying why.
pub fn join(parts: &[Part], ct: ContentType) -> String {
    let unit = if ct == ContentType::Storytelling {
        "Chapter"
    } else {
        "Part"
    };
    parts
        .iter()
        .map(|p| match p {
            Part::Done(c) => format!("## {unit} {}: {}\n\n{}", c.chunk, c.title, c.content.trim()),
            Part::Missing { n, title, why } => format!(
                "## {unit} {n}: {title}\n\n> ⚠️ **This part is missing.** It could not be generated: {why}"
            ),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}
