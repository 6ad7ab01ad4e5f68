//! What a node's server release can do. An Ollama node's version
//! (`/api/version`) is asked once per session and kept in its live state;
//! from 0.5.0 on, Ollama takes a JSON Schema as a request's `format` and
//! constrains the model's output to it. An older node (or one whose version
//! is unknown) gets `format: "json"`. llama-server (the sharding coordinator)
//! takes a schema in `response_format`.

use super::registry::{Api, Node};
use crate::ollama::{Client, Timeouts};

/// The first Ollama release whose `format` takes a JSON Schema.
pub const SCHEMA_SINCE: &str = "0.5.0";

/// Numeric parts of a version (`0.12.6-rc1` is `[0, 12, 6, 1]`), for comparing.
pub fn key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// Whether release `version` is `since` or later.
pub fn at_least(version: &str, since: &str) -> bool {
    let v = key(version);
    !v.is_empty() && v >= key(since)
}

/// Ask `node` for its version, once per session (callers at the same time
/// wait for the one answer). A node that does not answer stays unknown.
pub(crate) async fn learn(client: &Client, node: &Node) {
    if node.api != Api::Ollama {
        return;
    }
    node.release_asked
        .get_or_init(|| async {
            if let Ok(v) = client.version(node.url(), Timeouts::PROBE).await {
                node.state().version = Some(v);
            }
        })
        .await;
}

/// Whether a request to `node` may carry a JSON Schema for its reply.
pub fn takes_schema(node: &Node) -> bool {
    match node.api {
        Api::OpenAi => true,
        Api::Ollama => node
            .state()
            .version
            .as_deref()
            .is_some_and(|v| at_least(v, SCHEMA_SINCE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(at_least("0.5.0", SCHEMA_SINCE));
        assert!(at_least("0.12.6", SCHEMA_SINCE));
        assert!(at_least("1.0", SCHEMA_SINCE));
        assert!(!at_least("0.4.7", SCHEMA_SINCE));
        assert!(!at_least("0.0.0-simulated", SCHEMA_SINCE));
        assert!(!at_least("?", SCHEMA_SINCE), "unknown is not new enough");
        assert_eq!(key("0.12.6-rc1"), [0, 12, 6, 1]);
    }

    #[test]
    fn an_unknown_ollama_version_gets_json_and_llama_server_a_schema() {
        let entry = crate::config::nodes_file::NodeEntry {
            url: "http://127.0.0.1:1".into(),
            name: "n".into(),
            priority: 0,
            host_id: None,
            extra: Default::default(),
        };
        let n = Node::new(entry, false);
        assert!(!takes_schema(&n));
        n.state().version = Some("0.4.7".into());
        assert!(!takes_schema(&n));
        n.state().version = Some("0.5.1".into());
        assert!(takes_schema(&n));
        assert!(takes_schema(&Node::coordinator("http://127.0.0.1:2")));
    }
}
