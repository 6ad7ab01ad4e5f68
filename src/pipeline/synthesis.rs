//! Turning the parts of a long-form answer into one text, within the context
//! windows of the nodes. When the whole fits one request on the widest node
//! (the parts, and a reply as long as they are), the Editor (the Storyteller
//! for a story) rewrites it in one pass, as the original does; the result is
//! kept unless it lost text. When it does not fit, the synthesis is staged:
//! each group of parts that fits one request (on any node) is summarised, then
//! a final pass writes an overview of the whole from the summaries, and the
//! answer is that overview followed by the parts, whole. A story that does not
//! fit is joined in chapter order (an overview would give the ending away).

use futures_util::future::join_all;

use super::budget;
use super::call::{call, Ctx, Reply};
use super::detect::ContentType;
use super::prompts;
use super::render;
use super::result::Chunk;
use super::schema;
use crate::scheduler::{Attribution, TaskFailed};

/// Above this many characters the parts are never rewritten in one pass (the
/// original's limit); the staged synthesis takes over.
pub(crate) const SYNTHESIS_LIMIT: usize = 15_000;
/// A one-pass synthesis shorter than this share of its input lost content:
/// the parts are joined instead.
pub(crate) const MIN_SYNTHESIS_RATIO: f64 = 0.8;
/// Words asked for in one group summary, and at most in the overview.
const SUMMARY_WORDS: usize = 90;
const OVERVIEW_WORDS: usize = 250;
/// Tokens kept for the instructions around a group summary's parts.
const SUMMARY_INSTRUCTIONS: u64 = 120;

/// The synthesised text and what happened (for `metrics`).
pub struct Synthesis {
    pub text: String,
    pub status: String,
}

fn unit(ct: ContentType) -> (&'static str, &'static str) {
    if ct == ContentType::Storytelling {
        ("chapter", "chapters")
    } else {
        ("part", "parts")
    }
}

/// Synthesise `chunks` (all present, in order); `joined` is the answer when
/// nothing better can be made. Every agent call's attribution is added.
pub async fn run(
    ctx: &Ctx,
    query: &str,
    ct: ContentType,
    chunks: &[Chunk],
    joined: String,
    attribution: &mut Vec<Attribution>,
) -> Synthesis {
    let model = ctx.synthesis_model();
    let widest = ctx.context(model, true);
    let texts: Vec<String> = chunks.iter().map(|c| c.content.clone()).collect();
    let (agent, field) = if ct == ContentType::Storytelling {
        ("Storyteller", "story")
    } else {
        ("Editor", "detailed_explanation")
    };
    let fields = schema::one_text(field);
    let prompt = prompts::synthesis(query, ct, &texts);
    let need = budget::prompt_tokens(&prompts::system(ctx.agent(agent), &fields), &prompt.text)
        + budget::tokens(&joined)
        + budget::MARGIN;
    if joined.len() <= SYNTHESIS_LIMIT && need <= widest {
        let reply = call(
            ctx,
            ctx.agent(agent),
            "synthesis",
            prompt,
            model,
            Some(&fields),
        )
        .await;
        if let Some(done) = one_pass(ctx, ct, reply, &texts, &joined, attribution) {
            return done;
        }
    } else if ct == ContentType::Storytelling {
        let (one, many) = unit(ct);
        return Synthesis {
            text: joined,
            status: format!(
                "skipped: the {many} (about {} tokens) do not fit one request (context {widest} tokens); joined in {one} order",
                budget::tokens(&texts.concat())
            ),
        };
    }
    staged(ctx, query, chunks, joined, attribution).await
}

/// The one-pass rewrite's outcome: the rewrite, unless it lost text (then
/// the parts `joined`) or failed (the same); None when the parts turned out
/// not to fit one request (and are not a story), so the synthesis is staged.
fn one_pass(
    ctx: &Ctx,
    ct: ContentType,
    reply: Result<Reply, TaskFailed>,
    texts: &[String],
    joined: &str,
    attribution: &mut Vec<Attribution>,
) -> Option<Synthesis> {
    match reply {
        Ok(Reply {
            fields: obj,
            attribution: a,
            ..
        }) => {
            attribution.push(a);
            let s = render::narrative(&obj);
            let input: usize = texts.iter().map(|p| p.len()).sum();
            Some(if (s.len() as f64) < MIN_SYNTHESIS_RATIO * input as f64 {
                Synthesis {
                    text: joined.to_string(),
                    status: format!(
                        "discarded: {} characters for {input} of input (under {:.0}%); chunks joined",
                        s.len(),
                        MIN_SYNTHESIS_RATIO * 100.0
                    ),
                }
            } else {
                Synthesis {
                    text: s,
                    status: "used".to_string(),
                }
            })
        }
        Err(e) if e.too_large() && ct != ContentType::Storytelling => {
            let (_, many) = unit(ct);
            ctx.observer.notice(format!(
                "ℹ️  synthesis: the {many} do not fit one request after all ({}); staging it",
                e.attempts
                    .last()
                    .map(|a| a.error.short())
                    .unwrap_or_default()
            ));
            None
        }
        Err(e) => {
            ctx.observer
                .notice(format!("⚠️  synthesis failed ({e}); chunks joined"));
            Some(Synthesis {
                text: joined.to_string(),
                status: "failed; chunks joined".to_string(),
            })
        }
    }
}

/// Group summaries, then an overview from them, above the parts.
async fn staged(
    ctx: &Ctx,
    query: &str,
    chunks: &[Chunk],
    joined: String,
    attribution: &mut Vec<Attribution>,
) -> Synthesis {
    let model = ctx.synthesis_model();
    let narrowest = ctx.context(model, false);
    let widest = ctx.context(model, true);
    let (groups, words) = summary_groups(ctx, query, chunks, narrowest);
    let total = chunks.len();
    ctx.observer.notice(format!(
        "🧩 synthesis in stages: the {total} parts do not fit one request (context {widest} tokens); summarising them in {} group(s), then an overview",
        groups.len()
    ));
    let summaries = summarise(ctx, query, &groups, total, words, attribution).await;
    match overview(ctx, query, summaries, widest).await {
        Ok(reply) => {
            attribution.push(reply.attribution);
            let overview = render::narrative(&reply.fields);
            if overview.trim().is_empty() {
                return Synthesis {
                    text: joined,
                    status: "staged: the overview came back empty; chunks joined".into(),
                };
            }
            Synthesis {
                text: format!("## Overview\n\n{}\n\n{joined}", overview.trim()),
                status: format!(
                    "staged: {} group summar{} of {total} parts, then an overview (context {narrowest}–{widest} tokens); the parts follow it whole",
                    groups.len(),
                    if groups.len() == 1 { "y" } else { "ies" }
                ),
            }
        }
        Err(e) => {
            ctx.observer.notice(format!(
                "⚠️  synthesis overview failed ({e}); chunks joined"
            ));
            Synthesis {
                text: joined,
                status: "staged: the overview failed; chunks joined".into(),
            }
        }
    }
}

/// The parts in groups that each fit one summary request on any node (whose
/// context is at least `narrowest`), and the words a summary may have.
fn summary_groups(
    ctx: &Ctx,
    query: &str,
    chunks: &[Chunk],
    narrowest: u64,
) -> (Vec<Vec<(usize, String)>>, usize) {
    let summary_reply = (budget::MIN_REPLY * 2)
        .min(narrowest / 4)
        .max(budget::MIN_REPLY);
    let system = prompts::system(ctx.agent("Editor"), &schema::one_text("summary"));
    let fixed = budget::prompt_tokens(&system, query)
        + SUMMARY_INSTRUCTIONS
        + summary_reply
        + budget::MARGIN;
    let room = budget::room_for(narrowest.saturating_sub(fixed)).max(200);
    let words = budget::words_for(summary_reply).clamp(30, SUMMARY_WORDS);
    (group(chunks, room), words)
}

/// The Editor summarises every group at once (in `words` words); a failed or
/// empty summary is replaced by the group's first sentences. Each summary is
/// returned with the span it covers ("Parts 1–2").
async fn summarise(
    ctx: &Ctx,
    query: &str,
    groups: &[Vec<(usize, String)>],
    total: usize,
    words: usize,
    attribution: &mut Vec<Attribution>,
) -> Vec<(String, String)> {
    let (model, editor) = (ctx.synthesis_model(), ctx.agent("Editor"));
    let summary_fields = schema::one_text("summary");
    let requests = groups.iter().map(|g| {
        let parts: Vec<(usize, &str)> = g.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let label = format!("synthesis: summary of {}", span(g));
        let prompt = prompts::group_summary(query, total, &parts, words);
        let fields = summary_fields.clone();
        async move {
            let r = call(ctx, editor, &label, prompt, model, Some(&fields)).await;
            (label, r)
        }
    });
    let results: Vec<(String, Result<Reply, TaskFailed>)> = join_all(requests).await;
    let mut summaries: Vec<(String, String)> = Vec::new();
    for (g, (label, r)) in groups.iter().zip(results) {
        let text = match r {
            Ok(reply) => {
                attribution.push(reply.attribution);
                render::narrative(&reply.fields)
            }
            Err(e) => {
                ctx.observer.notice(format!(
                    "⚠️  {label} failed ({e}); its first sentences stand in for it"
                ));
                String::new()
            }
        };
        let text = if text.trim().is_empty() {
            first_sentences(g)
        } else {
            text
        };
        summaries.push((capitalised(&span(g)), text));
    }
    summaries
}

/// What stands in for a group's summary: the start of its text.
fn first_sentences(g: &[(usize, String)]) -> String {
    prompts::summary(
        &g.iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        400,
    )
}

/// The Editor's overview of the whole from the group summaries, each cut to
/// its share of the widest node's context.
async fn overview(
    ctx: &Ctx,
    query: &str,
    mut summaries: Vec<(String, String)>,
    widest: u64,
) -> Result<Reply, TaskFailed> {
    let (model, editor) = (ctx.synthesis_model(), ctx.agent("Editor"));
    let overview_fields = schema::one_text("overview");
    let overview_reply = (widest / 3)
        .clamp(budget::MIN_REPLY, 600)
        .min(ctx.num_predict);
    let fixed = budget::prompt_tokens(&prompts::system(editor, &overview_fields), query)
        + SUMMARY_INSTRUCTIONS
        + overview_reply
        + budget::MARGIN;
    let share = budget::room_for(widest.saturating_sub(fixed)) / summaries.len().max(1);
    for (_, s) in summaries.iter_mut() {
        *s = budget::cut(s, share.saturating_sub(16).max(80));
    }
    let words = budget::words_for(overview_reply).clamp(40, OVERVIEW_WORDS);
    let prompt = prompts::overview(query, &summaries, words);
    call(
        ctx,
        editor,
        "synthesis: overview",
        prompt,
        model,
        Some(&overview_fields),
    )
    .await
}

/// Adjacent parts in groups of at most `room` (thirds of a token,
/// [`crate::prompt::weight`]); a part larger than that alone is cut to it
/// (its summary only needs its substance).
fn group(chunks: &[Chunk], room: usize) -> Vec<Vec<(usize, String)>> {
    let mut groups: Vec<Vec<(usize, String)>> = Vec::new();
    let mut size = 0;
    for c in chunks {
        let text = budget::cut(&c.content, room);
        let cost = crate::prompt::weight(&text);
        let fits = groups.last().is_some_and(|_| size + cost <= room);
        if !fits {
            groups.push(Vec::new());
            size = 0;
        }
        size += cost;
        if let Some(g) = groups.last_mut() {
            g.push((c.chunk, text));
        }
    }
    groups
}

/// "parts 1–2", "part 3".
fn span(g: &[(usize, String)]) -> String {
    match (g.first(), g.last()) {
        (Some((a, _)), Some((b, _))) if a != b => format!("parts {a}–{b}"),
        (Some((a, _)), _) => format!("part {a}"),
        _ => String::new(),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize, len: usize) -> Chunk {
        Chunk {
            chunk: n,
            title: String::new(),
            focus: String::new(),
            content: "A sentence of text here. ".repeat(len / 25),
            node: String::new(),
            seconds: 0.0,
            quality_warning: None,
        }
    }

    #[test]
    fn parts_are_grouped_to_fit() {
        let chunks: Vec<Chunk> = (1..=5).map(|n| chunk(n, 500)).collect();
        let g = group(&chunks, 1100);
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(span(&g[0]), "parts 1–2");
        assert_eq!(span(&g[2]), "part 5");
        let big = group(&[chunk(1, 3000)], 1000);
        assert_eq!(big.len(), 1);
        assert!(big[0][0].1.len() <= 1000);
    }
}
