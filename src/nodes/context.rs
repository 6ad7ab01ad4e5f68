//! The context window a node gives a model, learned once per session and kept
//! in the node's live state: Ollama's `/api/show` (`model_info.*.context_length`,
//! what the model was trained for) and `/api/ps` (`context_length`, what it is
//! loaded with now); llama-server's `/props` (`n_ctx` of a slot); and any
//! refusal ("request (1794 tokens) exceeds the available context size (1024
//! tokens)"). The `num_ctx` sent to an Ollama node is chosen once per node and
//! model — the context the model is loaded with when known — so the node never
//! reloads the model because two requests asked for different sizes.

use std::sync::{Arc, OnceLock};

use futures_util::future::join_all;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry::{Api, Node};
use crate::ollama::types::{model_key, same_model, ShowResponse};
use crate::ollama::{Client, Timeouts};

/// The `num_ctx` sent when nothing is known about a model (and the most
/// this program asks for when only the trained context is known).
pub(crate) const DEFAULT_NUM_CTX: u64 = 8192;

/// What is known about one model's context on one node (tokens).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelContext {
    /// What the model was trained for (`/api/show`).
    pub trained: Option<u64>,
    /// What it is loaded with now (`/api/ps`; a llama-server slot's `n_ctx`).
    pub loaded: Option<u64>,
    /// A refusal named this as the context size.
    pub refused: Option<u64>,
    /// The `num_ctx` sent with every request to this node for this model,
    /// fixed by the first request.
    pub num_ctx: Option<u64>,
    /// The node has been asked (once per session).
    #[serde(skip)]
    pub asked: bool,
}

impl ModelContext {
    /// The `num_ctx` to send: the one already in use, else the loaded context,
    /// else the trained one up to `DEFAULT_NUM_CTX`, else `DEFAULT_NUM_CTX`.
    pub(crate) fn choose_num_ctx(&self) -> u64 {
        self.num_ctx
            .or(self.loaded)
            .or(self.trained.map(|t| t.min(DEFAULT_NUM_CTX)))
            .unwrap_or(DEFAULT_NUM_CTX)
    }

    /// The tokens a request may use, when anything is known. For Ollama that
    /// is the `num_ctx` this program sends (or would send); for llama-server
    /// the slot's context. A refusal caps both.
    pub fn usable(&self, api: Api) -> Option<u64> {
        let known = match api {
            Api::Ollama => {
                (self.num_ctx.is_some() || self.loaded.is_some() || self.trained.is_some())
                    .then(|| self.choose_num_ctx().min(self.trained.unwrap_or(u64::MAX)))
            }
            Api::OpenAi => self.loaded.or(self.trained),
        };
        match (known, self.refused) {
            (Some(k), Some(r)) => Some(k.min(r)),
            (k, r) => k.or(r),
        }
    }
}

/// `(request tokens, context tokens)` from a context-size refusal, where the
/// message gives them (llama-server: "request (1794 tokens) exceeds the
/// available context size (1024 tokens), try increasing it").
pub(crate) fn parse_refusal(message: &str) -> (Option<u64>, Option<u64>) {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (req, ctx) = RE.get_or_init(|| {
        (
            Regex::new(r"(?:request|input|prompt)\s*\((\d+) tokens?\)").expect("valid pattern"),
            Regex::new(r"context (?:size|length|window)\s*\((\d+) tokens?\)")
                .expect("valid pattern"),
        )
    });
    let num = |re: &Regex| re.captures(message).and_then(|c| c[1].parse().ok());
    (num(req), num(ctx))
}

/// Record a refusal of a request to `node` for `model`: the context it names,
/// or else the context the request was sent with.
pub(crate) fn record_refusal(node: &Node, model: &str, message: &str, sent_with: Option<u64>) {
    let (_, named) = parse_refusal(message);
    if let Some(limit) = named.or(sent_with) {
        let mut st = node.state();
        let c = st.contexts.entry(model_key(model)).or_default();
        c.refused = Some(c.refused.map_or(limit, |r| r.min(limit)));
    }
}

/// The tokens a request to `node` for `model` may use, when known.
pub fn usable(node: &Node, model: &str) -> Option<u64> {
    node.state()
        .contexts
        .get(&model_key(model))
        .and_then(|c| c.usable(node.api))
}

/// The `num_ctx` to send `node` for `model`, fixed at its first use.
pub(crate) fn pin_num_ctx(node: &Node, model: &str) -> u64 {
    let mut st = node.state();
    let c = st.contexts.entry(model_key(model)).or_default();
    let n = c.choose_num_ctx();
    c.num_ctx = Some(n);
    n
}

/// The context-length entry of Ollama's `model_info` (`<arch>.context_length`).
fn trained_from_show(show: &Value) -> Option<u64> {
    ShowResponse::deserialize(show).ok()?.context_length()
}

/// Ask `node` about `model`'s context, once per session.
pub(crate) async fn learn(client: &Client, node: &Node, model: &str) {
    {
        let mut st = node.state();
        let c = st.contexts.entry(model_key(model)).or_default();
        if c.asked {
            return;
        }
        c.asked = true;
    }
    let (trained, loaded) = match node.api {
        Api::Ollama => {
            // One after the other, on one kept-alive connection: a node is
            // asked at the start of every query, and concurrent asks would
            // each open a connection of their own.
            let show = client.show(node.url(), model, Timeouts::PROBE).await;
            let ps = client.ps(node.url(), Timeouts::PROBE).await;
            let trained = show.ok().as_ref().and_then(trained_from_show);
            let loaded = ps.ok().and_then(|models| {
                models
                    .into_iter()
                    .find(|m| same_model(&m.name, model))
                    .and_then(|m| m.context_length)
            });
            (trained, loaded)
        }
        Api::OpenAi => {
            let props = client
                .get_value(node.url(), "/props", Timeouts::PROBE)
                .await
                .ok();
            let n_ctx = props
                .as_ref()
                .and_then(|p| p["default_generation_settings"]["n_ctx"].as_u64());
            (None, n_ctx)
        }
    };
    let mut st = node.state();
    let c = st.contexts.entry(model_key(model)).or_default();
    c.trained = trained.filter(|n| *n > 0).or(c.trained);
    c.loaded = loaded.filter(|n| *n > 0).or(c.loaded);
}

/// Learn every node's context for every model: the nodes at once, each
/// node's models one after the other (one connection per node).
pub(crate) async fn learn_all(client: &Client, nodes: &[Arc<Node>], models: &[&str]) {
    join_all(nodes.iter().map(|n| async move {
        for m in models {
            learn(client, n, m).await;
        }
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_name_their_sizes() {
        assert_eq!(
            parse_refusal("request (1794 tokens) exceeds the available context size (1024 tokens), try increasing it"),
            (Some(1794), Some(1024))
        );
        assert_eq!(
            parse_refusal("input length exceeds the context length"),
            (None, None)
        );
    }

    #[test]
    fn num_ctx_follows_what_is_loaded_and_stays() {
        let mut c = ModelContext::default();
        assert_eq!(c.usable(Api::Ollama), None);
        assert_eq!(c.choose_num_ctx(), DEFAULT_NUM_CTX);
        c.trained = Some(131_072);
        assert_eq!(c.choose_num_ctx(), DEFAULT_NUM_CTX);
        c.trained = Some(2048);
        assert_eq!(c.usable(Api::Ollama), Some(2048));
        c.loaded = Some(4096);
        assert_eq!(c.choose_num_ctx(), 4096, "what is loaded wins: no reload");
        assert_eq!(
            c.usable(Api::Ollama),
            Some(2048),
            "never past what it was trained for"
        );
        c.num_ctx = Some(1024);
        c.loaded = Some(16384);
        assert_eq!(c.choose_num_ctx(), 1024, "once chosen, kept");
        c.refused = Some(900);
        assert_eq!(c.usable(Api::Ollama), Some(900));
        let llama = ModelContext {
            loaded: Some(1024),
            ..Default::default()
        };
        assert_eq!(llama.usable(Api::OpenAi), Some(1024));
    }

    #[test]
    fn trained_context_from_model_info() {
        let show = json!({"model_info": {"general.architecture": "llama", "llama.context_length": 131072}});
        assert_eq!(trained_from_show(&show), Some(131_072));
        assert_eq!(trained_from_show(&json!({})), None);
    }
}
