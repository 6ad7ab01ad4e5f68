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

pub async fn run(ctx: &Ctx, query: &str) -> Result<Standard, TaskFailed> {
    let model = ctx.model.clone();
    let (research, critique) = tokio::join!(
        call(
            ctx,
            ctx.agent("Researcher"),
            "Researcher",
            prompts::researcher(query),
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
        prompts::editor(query, &research.fields, &critique.fields),
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
