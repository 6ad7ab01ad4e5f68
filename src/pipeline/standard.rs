//! One chunk, standard pipeline: Researcher and Critic at once (on two hosts when
//! there are two), then the Editor on both, each output labelled as what it is.

use super::call::{call, Ctx, Reply};
use super::prompts;
use super::render;
use crate::scheduler::TaskFailed;

pub struct Standard {
    pub markdown: String,
    pub replies: Vec<Reply>,
}

pub async fn run(
    ctx: &Ctx,
    query: &str,
    docs: Option<&crate::rag::Retrieved>,
) -> Result<Standard, TaskFailed> {
    let model = ctx.model.clone();
    // RAG: the Researcher and the Editor see the excerpts; the Critic does not.
    let asked = docs.map_or_else(|| query.to_string(), |r| r.question(query));
    let (research, critique) = tokio::join!(
        call(
            ctx,
            ctx.agent("Researcher"),
            "Researcher",
            prompts::researcher(&asked),
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
    let (research, critique) = (research?, critique?);
    let editor = call(
        ctx,
        ctx.agent("Editor"),
        "Editor",
        prompts::editor(&asked, &research.fields, &critique.fields),
        ctx.synthesis_model(),
        None,
    )
    .await?;
    let markdown = render::editor_markdown(&editor.fields);
    Ok(Standard {
        markdown,
        replies: vec![research, critique, editor],
    })
}
