//! The node registry: entries from the node file (or simulated ones, in memory
//! only) with their live state, and the rules for saving it back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use fs4::fs_std::FileExt;
use serde_json::{Map, Value};

use super::locality;
pub use super::state::{Health, NodeState};
use crate::config::atomic::write_atomic;
use crate::config::nodes_file::{self, NodeEntry, NodeFile};

/// The API a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Ollama,
    /// llama.cpp's llama-server (`/v1/chat/completions`), the sharding coordinator.
    OpenAi,
}

/// One node: its entry (as stored) and its live state.
#[derive(Debug)]
pub struct Node {
    pub entry: NodeEntry,
    pub host: String,
    pub simulated: bool,
    pub api: Api,
    state: Mutex<NodeState>,
}

impl Node {
    pub fn new(entry: NodeEntry, simulated: bool) -> Node {
        let host = locality::host_identity(&entry);
        Node {
            entry,
            host,
            simulated,
            api: Api::Ollama,
            state: Mutex::new(NodeState::default()),
        }
    }

    /// The llama.cpp coordinator, as a node the scheduler can hand out.
    pub fn coordinator(url: &str) -> Node {
        let mut n = Node::new(
            NodeEntry {
                url: url.to_string(),
                name: "coordinator".into(),
                priority: 0,
                host_id: Some("llama.cpp coordinator".into()),
                extra: Map::new(),
            },
            false,
        );
        n.api = Api::OpenAi;
        n
    }

    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self) -> &str {
        &self.entry.url
    }

    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// Usable for new work right now (not cooling down after repeated failures).
    pub fn available(&self) -> bool {
        !self.state().cooling()
    }

    /// Whether this node is known to have `model` (true when its models are unknown).
    pub fn has_model(&self, model: &str) -> bool {
        let st = self.state();
        st.models.is_empty()
            || st
                .models
                .iter()
                .any(|m| crate::ollama::types::same_model(m, model))
    }
}

/// Where the registry is saved, if anywhere.
#[derive(Debug, Clone)]
pub struct NodeStore {
    pub path: PathBuf,
    /// Why the file must not be written (it could not be read), if so.
    pub blocked: Option<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    nodes: Vec<Arc<Node>>,
    store: Option<NodeStore>,
    unusable: Vec<Value>,
    extra: Map<String, Value>,
    /// URLs removed in this session: a merge with the file on disk must not bring them back.
    removed: BTreeSet<String>,
    pub simulated: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// Already there under this URL (possibly written differently).
    Duplicate(String),
}

impl Registry {
    /// An in-memory registry (simulated nodes; never saved).
    pub fn in_memory() -> Registry {
        Registry {
            simulated: true,
            ..Default::default()
        }
    }

    /// A registry backed by a node file, loaded from it.
    pub fn from_file(store: NodeStore, file: NodeFile) -> Registry {
        let mut r = Registry {
            store: Some(store),
            unusable: file.unusable,
            extra: file.extra,
            ..Default::default()
        };
        for e in file.entries {
            r.nodes.push(Arc::new(Node::new(e, false)));
        }
        r
    }

    pub fn store(&self) -> Option<&NodeStore> {
        self.store.as_ref()
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The registered node that is the same server as `url`, if any.
    pub fn find(&self, url: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.entry.url == url).or_else(|| {
            self.nodes
                .iter()
                .find(|n| locality::same_server(&n.entry.url, url))
        })
    }

    pub fn add(&mut self, entry: NodeEntry, simulated: bool) -> AddOutcome {
        if let Some(existing) = self.find(&entry.url) {
            return AddOutcome::Duplicate(existing.entry.url.clone());
        }
        self.removed.remove(&entry.url);
        self.nodes.push(Arc::new(Node::new(entry, simulated)));
        AddOutcome::Added
    }

    /// Add a node whose live state is already known (e.g. from a probe).
    pub fn add_node(&mut self, node: Arc<Node>) -> AddOutcome {
        if let Some(existing) = self.find(&node.entry.url) {
            return AddOutcome::Duplicate(existing.entry.url.clone());
        }
        self.removed.remove(&node.entry.url);
        self.nodes.push(node);
        AddOutcome::Added
    }

    /// Remove by URL (any spelling of the same server) or by name.
    pub fn remove(&mut self, key: &str) -> Option<Arc<Node>> {
        let idx = self
            .nodes
            .iter()
            .position(|n| n.entry.url == key || n.entry.name == key)
            .or_else(|| {
                let url = crate::ollama::host::canonical_url(key).ok()?;
                self.nodes
                    .iter()
                    .position(|n| locality::same_server(&n.entry.url, &url))
            })?;
        let node = self.nodes.remove(idx);
        self.removed.insert(node.entry.url.clone());
        Some(node)
    }

    /// Replace every node (used by `load FILE`).
    pub fn replace_all(&mut self, file: NodeFile) {
        for n in &self.nodes {
            self.removed.insert(n.entry.url.clone());
        }
        self.nodes.clear();
        for e in file.entries {
            self.removed.remove(&e.url);
            self.nodes.push(Arc::new(Node::new(e, false)));
        }
        self.unusable = file.unusable;
    }

    /// The distinct physical hosts among the nodes.
    pub fn hosts(&self) -> BTreeSet<String> {
        self.nodes.iter().map(|n| n.host.clone()).collect()
    }

    /// The file form of the (non-simulated) nodes.
    pub fn to_file(&self) -> NodeFile {
        NodeFile {
            entries: self
                .nodes
                .iter()
                .filter(|n| !n.simulated)
                .map(|n| n.entry.clone())
                .collect(),
            unusable: self.unusable.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Save to the node file: lock, re-read, merge in entries another process
    /// added meanwhile (unless removed here), write atomically.
    /// Returns Ok(false) when there is nothing to save to (simulated registry).
    pub fn save(&mut self) -> Result<bool> {
        let Some(store) = self.store.clone() else {
            return Ok(false);
        };
        if let Some(why) = &store.blocked {
            anyhow::bail!(
                "{}: not saved, the file on disk could not be read ({why}); fix or remove it",
                store.path.display()
            );
        }
        let lock_path = store.path.with_extension("json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open lock file: {e}", lock_path.display()))?;
        lock.lock_exclusive()
            .map_err(|e| anyhow::anyhow!("{}: cannot lock: {e}", lock_path.display()))?;
        if let Ok(Some((disk, _))) = nodes_file::load(&store.path) {
            for e in disk.entries {
                if !self.removed.contains(&e.url) && self.find(&e.url).is_none() {
                    self.nodes.push(Arc::new(Node::new(e, false)));
                }
            }
            for u in disk.unusable {
                if !self.unusable.contains(&u) {
                    self.unusable.push(u);
                }
            }
        }
        let result = write_atomic(&store.path, nodes_file::to_json(&self.to_file()).as_bytes());
        let _ = FileExt::unlock(&lock);
        result.map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str) -> NodeEntry {
        NodeEntry {
            url: url.into(),
            name: crate::ollama::host::parse(url).unwrap().default_name(),
            priority: 0,
            host_id: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn duplicates_and_removal() {
        let mut r = Registry::in_memory();
        assert_eq!(
            r.add(entry("http://127.0.0.1:11434"), true),
            AddOutcome::Added
        );
        assert!(matches!(
            r.add(entry("http://localhost:11434"), true),
            AddOutcome::Duplicate(_)
        ));
        assert_eq!(
            r.add(entry("http://127.0.0.1:11435"), true),
            AddOutcome::Added
        );
        assert_eq!(r.hosts().len(), 1);
        assert!(r.remove("localhost:11435").is_some());
        assert!(r.remove("ollama-127-0-0-1").is_some());
        assert!(r.is_empty());
    }
}
