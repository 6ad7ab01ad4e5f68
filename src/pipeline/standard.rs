//! One chunk, standard pipeline: Researcher and Critic at once (on two hosts when
//! there are two), then the Editor on both, each output labelled as what it is.
//! A failed Critic (or Researcher) does not lose the answer: the Editor works
//! on the other's output, with a note; a failed Editor leaves the findings.

use super::call::{call, Ctx, Reply};
use super::prompts::{self, Prompt};
use super::render;
use super::result::{Gap, NothingGenerated};

/// About how many bytes of its own text (labels, instructions) a prompt
/// that quotes other agents' work has besides the question.
pub(crate) const OWN_TEXT: usize = 500;

pub struct Standard {
    pub markdown: String,
    pub replies: Vec<Reply>,
    pub gaps: Vec<Gap>,
}

pub async fn run(
    ctx: &Ctx,
    query: &str,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Standard, NothingGenerated> {
    let model = ctx.model.clone();
    // RAG: the Researcher and the Editor see the excerpts; the Critic does not.
    let asked = docs.map_or_else(|| Prompt::from(query), |r| r.question(query));
    let (research, critique) = tokio::join!(
        call(
            ctx,
            ctx.agent("Researcher"),
            "Researcher",
            prompts::researcher(asked.clone()),
            &model,
            None
        ),
        call(
            ctx,
            ctx.agent("Critic"),
            "Critic",
            prompts::critic(query),
            &model,
            None
        ),
    );
    let mut gaps = Vec::new();
    let (research, critique) = match (research, critique) {
        (Err(r), Err(_)) => {
            return Err(NothingGenerated {
                first: r,
                others: 1,
            })
        }
        (Ok(r), Ok(c)) => (Some(r), Some(c)),
        (Ok(r), Err(e)) => {
            gaps.push(super::gap(
                ctx,
                &e,
                "the Editor works from the Researcher's findings alone",
            ));
            (Some(r), None)
        }
        (Err(e), Ok(c)) => {
            gaps.push(super::gap(
                ctx,
                &e,
                "the Editor works from the Critic's review alone",
            ));
            (None, Some(c))
        }
    };
    // What the answer is when the Editor cannot run.
    let (source, fallback) = match (&research, &critique) {
        (Some(r), _) => ("Researcher's findings", render::narrative(&r.fields)),
        (None, Some(c)) => ("Critic's review", render::narrative(&c.fields)),
        (None, None) => ("answer", String::new()),
    };
    let room = ctx.room(
        ctx.agent("Editor"),
        ctx.synthesis_model(),
        asked.text.len() + OWN_TEXT,
    );
    let editor = call(
        ctx,
        ctx.agent("Editor"),
        "Editor",
        prompts::editor(
            asked,
            research.as_ref().map(|r| &r.fields),
            critique.as_ref().map(|c| &c.fields),
            room,
        ),
        ctx.synthesis_model(),
        None,
    )
    .await;
    let mut replies: Vec<Reply> = research.into_iter().chain(critique).collect();
    let markdown = match editor {
        Ok(e) => {
            let md = render::editor_markdown(&e.fields);
            replies.push(e);
            md
        }
        Err(e) => {
            gaps.push(super::gap(
                ctx,
                &e,
                format!("the answer is the {source}, unedited"),
            ));
            format!(
                "> ⚠️ The Editor could not run ({}); below is the {source}, unedited.\n\n{}",
                e.attempts
                    .last()
                    .map(|a| a.error.short())
                    .unwrap_or_else(|| e.stopped.to_string()),
                fallback.trim()
            )
        }
    };
    Ok(Standard {
        markdown,
        replies,
        gaps,
    })
}
