//! One chunk, standard pipeline: Researcher and Critic at once (on two hosts when
//! there are two), then the Editor on both, each output labelled as what it is.
//! A failed Critic (or Researcher) does not lose the answer: the Editor works
//! on the other's output, with a note; a failed Editor leaves the findings.
//! A short factual question (`Scope::brief`) gets a short answer: the Editor
//! is asked for its summary and key points only (`schema::brief`).

use super::call::{Ctx, Reply, Role};
use super::prompts;
use super::render;
use super::result::{Gap, NothingGenerated};
use super::schema;
use crate::prompt::{weight, Prompt};
use crate::scheduler::TaskFailed;

/// About how many bytes of its own text (labels, instructions) a prompt
/// that quotes other agents' work has besides the question.
pub(crate) const OWN_TEXT: usize = 500;

pub struct Standard {
    pub markdown: String,
    pub replies: Vec<Reply>,
    pub gaps: Vec<Gap>,
}

/// Answer `query`: the Researcher and the Critic at once, then the Editor on
/// both (the excerpts of `docs` go to the Researcher and the Editor); `brief`:
/// the Editor writes a summary and key points only.
pub async fn run(
    ctx: &Ctx,
    query: &str,
    brief: bool,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Standard, NothingGenerated> {
    // RAG: the Researcher and the Editor see the excerpts; the Critic does not.
    let asked = docs.map_or_else(|| Prompt::from(query), |r| r.question(query));
    let mut gaps = Vec::new();
    let (research, critique) = research_and_critique(ctx, query, &asked, &mut gaps).await?;
    let fallback = Fallback::of(research.as_ref(), critique.as_ref());
    let editor = Role::new(ctx, "Editor", ctx.synthesis_model());
    let room = editor.room(weight(&asked.text) + OWN_TEXT);
    let (findings, review) = (
        research.as_ref().map(|r| &r.fields),
        critique.as_ref().map(|c| &c.fields),
    );
    let edited = if brief {
        let prompt = prompts::editor_brief(asked, findings, review, room);
        let fields = schema::brief(editor.fields());
        editor.ask_for("Editor", prompt, &fields).await
    } else {
        let prompt = prompts::editor(asked, findings, review, room);
        editor.ask("Editor", prompt).await
    };
    let mut replies: Vec<Reply> = research.into_iter().chain(critique).collect();
    let markdown = match edited {
        Ok(e) => {
            let md = if brief {
                render::brief_markdown(&e.fields)
            } else {
                render::editor_markdown(&e.fields)
            };
            replies.push(e);
            md
        }
        Err(e) => fallback.unedited(ctx, &e, &mut gaps),
    };
    Ok(Standard {
        markdown,
        replies,
        gaps,
    })
}

/// The Researcher and the Critic at once. One of them failing is a gap (the
/// Editor works from the other); both failing is no answer at all.
async fn research_and_critique(
    ctx: &Ctx,
    query: &str,
    asked: &Prompt,
    gaps: &mut Vec<Gap>,
) -> Result<(Option<Reply>, Option<Reply>), NothingGenerated> {
    let model = &ctx.model;
    let (research, critique) = tokio::join!(
        Role::new(ctx, "Researcher", model).ask("Researcher", prompts::researcher(asked.clone())),
        Role::new(ctx, "Critic", model).ask("Critic", prompts::critic(query)),
    );
    match (research, critique) {
        (Err(r), Err(_)) => Err(NothingGenerated {
            first: r,
            others: 1,
        }),
        (Ok(r), Ok(c)) => Ok((Some(r), Some(c))),
        (Ok(r), Err(e)) => {
            gaps.push(super::gap(
                ctx,
                &e,
                "the Editor works from the Researcher's findings alone",
            ));
            Ok((Some(r), None))
        }
        (Err(e), Ok(c)) => {
            gaps.push(super::gap(
                ctx,
                &e,
                "the Editor works from the Critic's review alone",
            ));
            Ok((None, Some(c)))
        }
    }
}

/// What the answer is when the Editor cannot run: the Researcher's findings,
/// else the Critic's review.
struct Fallback {
    /// What the text is, for the note above it.
    source: &'static str,
    text: String,
}

impl Fallback {
    fn of(research: Option<&Reply>, critique: Option<&Reply>) -> Fallback {
        let (source, text) = match (research, critique) {
            (Some(r), _) => ("Researcher's findings", render::narrative(&r.fields)),
            (None, Some(c)) => ("Critic's review", render::narrative(&c.fields)),
            (None, None) => ("answer", String::new()),
        };
        Fallback { source, text }
    }

    /// The answer after the Editor failed (`e`): the text under a note saying
    /// why; a gap records it.
    fn unedited(self, ctx: &Ctx, e: &TaskFailed, gaps: &mut Vec<Gap>) -> String {
        let source = self.source;
        gaps.push(super::gap(
            ctx,
            e,
            format!("the answer is the {source}, unedited"),
        ));
        format!(
            "> ⚠️ The Editor could not run ({}); below is the {source}, unedited.\n\n{}",
            e.attempts
                .last()
                .map(|a| a.error.short())
                .unwrap_or_else(|| e.stopped.to_string()),
            self.text.trim()
        )
    }
}
