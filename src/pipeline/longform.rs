//! Long-form answers: chunk 1 (the fundamentals) first, then chunks 2..N with
//! their focus areas and a summary of chunk 1, through the host-aware queue.
//! Each chunk is quality-checked and retried once; chunks are assembled in
//! chunk order, then synthesised by the Editor unless that would lose text.

use futures_util::future::join_all;

use super::call::{call, Ctx, Reply};
use super::detect::{focus_area, ContentType};
use super::prompts;
use super::quality;
use super::render;
use super::repair::FieldType;
use super::result::{Chunk, Gap, NothingGenerated};
use crate::scheduler::{Attribution, TaskFailed};

/// Above this many characters the chunks are joined, not synthesised.
pub const SYNTHESIS_LIMIT: usize = 15_000;
/// A synthesis shorter than this share of its input lost content: join instead.
pub const MIN_SYNTHESIS_RATIO: f64 = 0.8;

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
        focus: String,
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

/// Write one chunk: ask, check, retry once, keep the better attempt. A failed
/// retry keeps the first attempt.
async fn chunk(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    n: usize,
    total: usize,
    first: Option<&str>,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<(Chunk, Vec<Attribution>), TaskFailed> {
    let focus = focus_area(ct, n, total);
    // RAG: part 1 gets the question with its excerpts, later parts their own.
    let prompt = match (docs, n) {
        (Some(r), 1) => prompts::chunk(&r.question(query), ct, n, total, &focus, first),
        (Some(r), _) => match r.part(n) {
            Some(extra) => format!(
                "{}\n\n{extra}",
                prompts::chunk(query, ct, n, total, &focus, first)
            ),
            None => prompts::chunk(query, ct, n, total, &focus, first),
        },
        (None, _) => prompts::chunk(query, ct, n, total, &focus, first),
    };
    let label = format!("chunk {n}/{total}");
    let agent = writer(ctx, ct);
    let a = call(ctx, agent, &label, prompt.clone(), &ctx.model, None).await?;
    let text_a = render::narrative(&a.fields);
    let mut attribution = vec![a.attribution.clone()];
    let keep_a = |warning: Option<String>| Chunk {
        chunk: n,
        focus: focus.clone(),
        content: text_a.clone(),
        node: a.attribution.node.clone(),
        seconds: a.attribution.seconds,
        quality_warning: warning,
    };
    let problems = match quality::chunk_check(&text_a) {
        Ok(()) => return Ok((keep_a(None), attribution)),
        Err(p) => p,
    };
    ctx.observer.notice(format!(
        "⚠️  {label} failed its quality check ({}); retrying once",
        problems.join("; ")
    ));
    let retry_label = format!("{label} (retry)");
    let b = match call(
        ctx,
        agent,
        &retry_label,
        prompts::chunk_retry(&prompt, &problems),
        &ctx.model,
        None,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let why = format!("its quality retry failed ({e}); the first attempt is kept");
            ctx.observer.notice(format!("⚠️  {label}: {why}"));
            return Ok((keep_a(Some(why)), attribution));
        }
    };
    attribution.push(b.attribution.clone());
    let text_b = render::narrative(&b.fields);
    let problems_b = match quality::chunk_check(&text_b) {
        Ok(()) => {
            return Ok((
                Chunk {
                    chunk: n,
                    focus: focus.clone(),
                    content: text_b,
                    node: b.attribution.node.clone(),
                    seconds: b.attribution.seconds,
                    quality_warning: None,
                },
                attribution,
            ))
        }
        Err(p) => p,
    };
    let keep_b = problems_b.len() < problems.len()
        || (problems_b.len() == problems.len() && text_b.len() > text_a.len());
    let why = format!(
        "failed its quality check twice ({}); the better attempt is kept",
        if keep_b {
            problems_b.join("; ")
        } else {
            problems.join("; ")
        }
    );
    ctx.observer.notice(format!("⚠️  {label} {why}"));
    let chunk = if keep_b {
        Chunk {
            chunk: n,
            focus: focus.clone(),
            content: text_b,
            node: b.attribution.node.clone(),
            seconds: b.attribution.seconds,
            quality_warning: Some(why),
        }
    } else {
        keep_a(Some(why))
    };
    Ok((chunk, attribution))
}

pub async fn run(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    total: usize,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<LongForm, NothingGenerated> {
    let first = chunk(ctx, query, ct, 1, total, None, docs).await;
    let summary = first
        .as_ref()
        .ok()
        .map(|(c, _)| prompts::summary(&c.content, 300));
    let rest =
        join_all((2..=total).map(|n| chunk(ctx, query, ct, n, total, summary.as_deref(), docs)))
            .await;
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
                let focus = focus_area(ct, n, total);
                let mut g = super::gap(
                    ctx,
                    &e,
                    format!("part {n} is missing from the answer (marked where it belongs)"),
                );
                g.chunk = Some(n);
                g.focus = Some(focus.clone());
                parts.push(Part::Missing {
                    n,
                    focus,
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
    let input: usize = chunks.iter().map(|c| c.content.len()).sum();
    let (text, synthesis) = if !gaps.is_empty() {
        (
            joined,
            format!(
                "skipped: {} part(s) missing; the parts are joined with the gaps marked",
                gaps.len()
            ),
        )
    } else if joined.len() > SYNTHESIS_LIMIT {
        (
            joined,
            format!("skipped: {input} characters is over {SYNTHESIS_LIMIT}; chunks joined"),
        )
    } else {
        let texts: Vec<String> = chunks.iter().map(|c| c.content.clone()).collect();
        synthesise(ctx, query, ct, &texts, joined, &mut attribution).await
    };
    Ok(LongForm {
        text,
        chunks,
        attribution,
        synthesis,
        gaps,
    })
}

/// The Editor (or Storyteller) turns the parts into one text, unless that
/// would lose text; `joined` is the answer otherwise.
async fn synthesise(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    parts: &[String],
    joined: String,
    attribution: &mut Vec<Attribution>,
) -> (String, String) {
    let (agent, field) = if ct == ContentType::Storytelling {
        ("Storyteller", "story")
    } else {
        ("Editor", "detailed_explanation")
    };
    let fields = vec![(field.to_string(), FieldType::String)];
    match call(
        ctx,
        ctx.agent(agent),
        "synthesis",
        prompts::synthesis(query, ct, parts),
        ctx.synthesis_model(),
        Some(&fields),
    )
    .await
    {
        Ok(Reply {
            fields: obj,
            attribution: a,
            ..
        }) => {
            attribution.push(a);
            let s = render::narrative(&obj);
            let input: usize = parts.iter().map(|p| p.len()).sum();
            if (s.len() as f64) < MIN_SYNTHESIS_RATIO * input as f64 {
                (joined, format!("discarded: {} characters for {input} of input (under {:.0}%); chunks joined", s.len(), MIN_SYNTHESIS_RATIO * 100.0))
            } else {
                (s, "used".to_string())
            }
        }
        Err(e) => {
            ctx.observer
                .notice(format!("⚠️  synthesis failed ({e}); chunks joined"));
            (joined, "failed; chunks joined".to_string())
        }
    }
}

/// The parts in order, each under a heading naming its part and focus; a
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
            Part::Done(c) => format!(
                "## {unit} {}: {}\n\n{}",
                c.chunk,
                title(&c.focus),
                c.content.trim()
            ),
            Part::Missing { n, focus, why } => format!(
                "## {unit} {n}: {}\n\n> ⚠️ **This part is missing.** It could not be generated: {why}",
                title(focus)
            ),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A heading from a focus description: its first clause, capitalised.
fn title(focus: &str) -> String {
    let end = focus.find([':', '.', ';']).unwrap_or(focus.len());
    let mut c = focus[..end].trim().chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
