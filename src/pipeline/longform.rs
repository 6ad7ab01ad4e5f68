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
use super::result::Chunk;
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
}

fn writer(ctx: &Ctx, ct: ContentType) -> &super::agents::Agent {
    if ct == ContentType::Storytelling {
        ctx.agent("Storyteller")
    } else {
        ctx.agent("ChunkWriter")
    }
}

/// Write one chunk: ask, check, retry once, keep the better attempt.
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
    let (text, node, seconds, warning) = match quality::chunk_check(&text_a) {
        Ok(()) => (
            text_a,
            a.attribution.node.clone(),
            a.attribution.seconds,
            None,
        ),
        Err(problems) => {
            ctx.observer.notice(format!(
                "⚠️  {label} failed its quality check ({}); retrying once",
                problems.join("; ")
            ));
            let retry_label = format!("{label} (retry)");
            let b = call(
                ctx,
                agent,
                &retry_label,
                prompts::chunk_retry(&prompt, &problems),
                &ctx.model,
                None,
            )
            .await?;
            attribution.push(b.attribution.clone());
            let text_b = render::narrative(&b.fields);
            match quality::chunk_check(&text_b) {
                Ok(()) => (
                    text_b,
                    b.attribution.node.clone(),
                    b.attribution.seconds,
                    None,
                ),
                Err(problems_b) => {
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
                    if keep_b {
                        (
                            text_b,
                            b.attribution.node.clone(),
                            b.attribution.seconds,
                            Some(why),
                        )
                    } else {
                        (
                            text_a,
                            a.attribution.node.clone(),
                            a.attribution.seconds,
                            Some(why),
                        )
                    }
                }
            }
        }
    };
    Ok((
        Chunk {
            chunk: n,
            focus,
            content: text,
            node,
            seconds,
            quality_warning: warning,
        },
        attribution,
    ))
}

pub async fn run(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    total: usize,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<LongForm, TaskFailed> {
    let (first, mut attribution) = chunk(ctx, query, ct, 1, total, None, docs).await?;
    let summary = prompts::summary(&first.content, 300);
    let rest =
        join_all((2..=total).map(|n| chunk(ctx, query, ct, n, total, Some(&summary), docs))).await;
    let mut chunks = vec![first];
    for r in rest {
        let (c, a) = r?;
        chunks.push(c);
        attribution.extend(a);
    }
    // join_all keeps the order it was given: chunk order, never completion order.
    let parts: Vec<String> = chunks.iter().map(|c| c.content.clone()).collect();
    let joined = join(&chunks, ct);
    let (text, synthesis) = if joined.len() > SYNTHESIS_LIMIT {
        (
            joined,
            format!(
                "skipped: {} characters is over {SYNTHESIS_LIMIT}; chunks joined",
                parts.iter().map(|p| p.len()).sum::<usize>()
            ),
        )
    } else {
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
            prompts::synthesis(query, ct, &parts),
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
    };
    Ok(LongForm {
        text,
        chunks,
        attribution,
        synthesis,
    })
}

/// The chunks in order, each under a heading naming its part and focus.
pub fn join(chunks: &[Chunk], ct: ContentType) -> String {
    let unit = if ct == ContentType::Storytelling {
        "Chapter"
    } else {
        "Part"
    };
    chunks
        .iter()
        .map(|c| {
            format!(
                "## {unit} {}: {}\n\n{}",
                c.chunk,
                title(&c.focus),
                c.content.trim()
            )
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
