//! Which nodes an operation is for: those named (by name or URL), those that
//! lack a model, have it, or have it loaded — from lists read fresh from
//! every node that is not cooling down (a cooling node keeps its last known
//! lists, so it is still counted, and reported, rather than forgotten).

use std::sync::Arc;

use crate::nodes::health::{probe_all, Load};
use crate::nodes::Node;
use crate::ollama::host::canonical_url;
use crate::ollama::types::same_model;
use crate::ollama::Client;

/// Read the models (and, with `loaded`, what is in memory) of every node not
/// cooling down, each outcome recorded in the node's health.
pub async fn refresh(client: &Client, nodes: &[Arc<Node>], loaded: bool, load: &dyn Load) {
    let awake: Vec<Arc<Node>> = nodes.iter().filter(|n| n.available()).cloned().collect();
    probe_all(client, &awake, loaded, load).await;
}

/// The nodes of `nodes` that `keys` name (a name or a URL each), in `keys`'
/// order, each once; an unknown key is the error, naming the nodes there are.
pub fn named(nodes: &[Arc<Node>], keys: &[String]) -> Result<Vec<Arc<Node>>, String> {
    let mut out: Vec<Arc<Node>> = Vec::new();
    for key in keys {
        let url = canonical_url(key).ok();
        let hit = nodes
            .iter()
            .find(|n| n.name() == key || url.as_deref() == Some(n.url()));
        match hit {
            Some(n) if out.iter().any(|o| Arc::ptr_eq(o, n)) => {}
            Some(n) => out.push(n.clone()),
            None => {
                let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
                return Err(format!(
                    "no node named `{key}` (nodes: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
    }
    Ok(out)
}

fn lists(node: &Node, model: &str) -> bool {
    node.state().models.iter().any(|m| same_model(m, model))
}

/// The nodes whose (last known) list lacks `model`.
pub fn lacking(nodes: &[Arc<Node>], model: &str) -> Vec<Arc<Node>> {
    nodes.iter().filter(|n| !lists(n, model)).cloned().collect()
}

/// The nodes whose (last known) list has `model`.
pub fn having(nodes: &[Arc<Node>], model: &str) -> Vec<Arc<Node>> {
    nodes.iter().filter(|n| lists(n, model)).cloned().collect()
}

/// The nodes whose (last known) `/api/ps` shows `model` in memory.
pub fn loaded_on(nodes: &[Arc<Node>], model: &str) -> Vec<Arc<Node>> {
    nodes
        .iter()
        .filter(|n| n.state().loaded.iter().any(|m| same_model(&m.name, model)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::nodes_file::NodeEntry;

    fn node(name: &str, url: &str, models: &[&str]) -> Arc<Node> {
        let n = Node::new(
            NodeEntry {
                url: url.into(),
                name: name.into(),
                priority: 0,
                host_id: None,
                extra: Default::default(),
            },
            false,
        );
        n.state().models = models.iter().map(|m| m.to_string()).collect();
        Arc::new(n)
    }

    #[test]
    fn nodes_are_named_by_name_or_url_once_each() {
        let all = [
            node("alpha", "http://10.0.0.1:11434", &[]),
            node("beta", "http://10.0.0.2:11434", &[]),
        ];
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = named(&all, &keys(&["10.0.0.2", "alpha", "beta"])).unwrap();
        let names: Vec<&str> = got.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["beta", "alpha"]);
        assert_eq!(
            named(&all, &keys(&["gamma"])).unwrap_err(),
            "no node named `gamma` (nodes: alpha, beta)"
        );
    }

    #[test]
    fn lacking_and_having_follow_ollamas_name_rules() {
        let all = [
            node("alpha", "http://a:1", &["tinyllama:latest"]),
            node("beta", "http://b:1", &["llama3.2:latest"]),
        ];
        let names = |v: Vec<Arc<Node>>| v.iter().map(|n| n.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(lacking(&all, "tinyllama")), ["beta"]);
        assert_eq!(names(having(&all, "TinyLlama:latest")), ["alpha"]);
        assert!(loaded_on(&all, "tinyllama").is_empty());
    }
}
