//! The node registry: entries from the node file (or simulated ones, in memory
//! only) with their live state, and the rules for saving it back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use serde_json::{Map, Value};

use super::locality;
pub use super::state::{Health, NodeState};
use crate::config::atomic::{write_atomic, WriteError};
use crate::config::lock::with_lock;
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
    /// The node's version was asked for (see `release.rs`).
    pub(crate) release_asked: tokio::sync::OnceCell<()>,
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
            release_asked: tokio::sync::OnceCell::new(),
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
    pub(crate) fn has_model(&self, model: &str) -> bool {
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

/// Why `remove` removed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveError {
    NotFound,
    /// The key names several nodes (`NAME (URL)` each): the user must pick by URL.
    Ambiguous(Vec<String>),
}

/// What `load FILE` did to the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoadReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: usize,
    /// Registered nodes the file does not list (kept).
    pub kept: usize,
}

/// A typed URL in canonical form; text that is not a URL is returned as it is.
fn canonical_or_same(url: &str) -> String {
    crate::ollama::host::canonical_url(url).unwrap_or_else(|_| url.to_string())
}

#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    /// Already there under this URL (possibly written differently).
    Duplicate(String),
}

impl Registry {
    /// An in-memory registry (simulated nodes; never saved).
    pub(crate) fn in_memory() -> Registry {
        Registry {
            simulated: true,
            ..Default::default()
        }
    }

    /// A registry backed by a node file, loaded from it.
    pub(crate) fn from_file(store: NodeStore, file: NodeFile) -> Registry {
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

    /// The registered node whose identity is `url`: its canonical form
    /// (OLLAMA_HOST rules, a trailing slash ignored). Two addresses of one
    /// machine are two nodes; they share a physical host only for scheduling.
    pub fn find(&self, url: &str) -> Option<&Arc<Node>> {
        let key = canonical_or_same(url);
        self.nodes.iter().find(|n| n.entry.url == key)
    }

    /// A registered node that is probably the same server as `url` (the same
    /// port on another address of the same machine). Only discovery uses this,
    /// so a scan does not register this machine's server twice.
    pub(crate) fn find_same_server(&self, url: &str) -> Option<&Arc<Node>> {
        self.find(url).or_else(|| {
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
    pub(crate) fn add_node(&mut self, node: Arc<Node>) -> AddOutcome {
        if let Some(existing) = self.find(&node.entry.url) {
            return AddOutcome::Duplicate(existing.entry.url.clone());
        }
        self.removed.remove(&node.entry.url);
        self.nodes.push(node);
        AddOutcome::Added
    }

    /// Remove the one node whose canonical URL or name is `key`.
    pub fn remove(&mut self, key: &str) -> Result<Arc<Node>, RemoveError> {
        let url = canonical_or_same(key);
        let hits: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.entry.url == url || n.entry.name == key)
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [] => Err(RemoveError::NotFound),
            [i] => {
                let node = self.nodes.remove(*i);
                self.removed.insert(node.entry.url.clone());
                Ok(node)
            }
            many => Err(RemoveError::Ambiguous(
                many.iter()
                    .map(|i| {
                        let n = &self.nodes[*i];
                        format!("{} ({})", n.name(), n.url())
                    })
                    .collect(),
            )),
        }
    }

    /// Merge a node file into the registry (`load FILE`): new URLs are added,
    /// known ones take the file's name, priority and fields, and nodes the file
    /// does not list are kept.
    pub(crate) fn merge_file(&mut self, file: NodeFile) -> LoadReport {
        let mut report = LoadReport::default();
        let listed: BTreeSet<String> = file.entries.iter().map(|e| e.url.clone()).collect();
        for e in file.entries {
            self.removed.remove(&e.url);
            match self.nodes.iter().position(|n| n.entry.url == e.url) {
                None => {
                    report.added.push(e.url.clone());
                    self.nodes.push(Arc::new(Node::new(e, false)));
                }
                Some(i) if self.nodes[i].entry == e => report.unchanged += 1,
                Some(i) => {
                    report.updated.push(e.url.clone());
                    self.nodes[i] = Arc::new(Node::new(e, self.nodes[i].simulated));
                }
            }
        }
        report.kept = self
            .nodes
            .iter()
            .filter(|n| !listed.contains(&n.entry.url))
            .count();
        report
    }

    /// The distinct physical hosts among the nodes.
    pub fn hosts(&self) -> BTreeSet<String> {
        self.nodes.iter().map(|n| n.host.clone()).collect()
    }

    /// The file form of the (non-simulated) nodes.
    pub(crate) fn to_file(&self) -> NodeFile {
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
    /// added meanwhile (unless removed here), write atomically — the lock
    /// waited for and the file written on the blocking pool. `waiting` is told
    /// when another program holds the lock; dropping the future then gives up
    /// the save (nothing is written).
    /// Returns Ok(false) when there is nothing to save to (simulated registry).
    pub async fn save(&mut self, waiting: impl FnOnce(&Path)) -> Result<bool> {
        let Some(store) = self.store.clone() else {
            return Ok(false);
        };
        if let Some(why) = &store.blocked {
            anyhow::bail!(
                "{}: not saved, the file on disk could not be read ({why}); fix or remove it",
                store.path.display()
            );
        }
        let merge = Merge {
            path: store.path.clone(),
            mine: self.to_file(),
            known: self.nodes.iter().map(|n| n.entry.url.clone()).collect(),
            removed: self.removed.clone(),
        };
        let path = &store.path;
        let (joined, written) = with_lock(path, || waiting(path), move || merge.run()).await?;
        for e in joined.entries {
            self.nodes.push(Arc::new(Node::new(e, false)));
        }
        self.unusable.extend(joined.unusable);
        written?;
        Ok(true)
    }
}

/// One save of the node file, ready to run under the lock.
struct Merge {
    path: PathBuf,
    /// What this registry holds, in the file's form.
    mine: NodeFile,
    /// Every registered URL (simulated nodes too).
    known: BTreeSet<String>,
    removed: BTreeSet<String>,
}

/// What another process wrote meanwhile that joins this registry.
#[derive(Default)]
struct Joined {
    entries: Vec<NodeEntry>,
    unusable: Vec<Value>,
}

impl Merge {
    /// Re-read the file, take in what is new there, write the result: what
    /// joined (even when the write failed) and the write's result. An error
    /// when the file cannot be read (it is then left as it is).
    fn run(mut self) -> Result<(Joined, Result<(), WriteError>)> {
        let mut joined = Joined::default();
        match nodes_file::load(&self.path) {
            Ok(None) => {}
            Ok(Some((disk, _))) => {
                for e in disk.entries {
                    if !self.removed.contains(&e.url) && self.known.insert(e.url.clone()) {
                        joined.entries.push(e);
                    }
                }
                for u in disk.unusable {
                    if !self.mine.unusable.contains(&u) && !joined.unusable.contains(&u) {
                        joined.unusable.push(u);
                    }
                }
            }
            // Another program wrote something this one cannot read: leave it be.
            Err(e) => anyhow::bail!("not saved: {e}"),
        }
        self.mine.entries.extend(joined.entries.iter().cloned());
        self.mine.unusable.extend(joined.unusable.iter().cloned());
        let written = write_atomic(&self.path, nodes_file::to_json(&self.mine).as_bytes());
        Ok((joined, written))
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
    fn identity_is_the_canonical_url() {
        let mut r = Registry::in_memory();
        assert_eq!(
            r.add(entry("http://127.0.0.1:11434"), true),
            AddOutcome::Added
        );
        assert!(matches!(
            r.add(entry("127.0.0.1/"), true),
            AddOutcome::Duplicate(_)
        ));
        // Other addresses and ports of this machine are other nodes on one host.
        for u in ["http://127.0.0.2:11434", "http://127.0.0.1:11435"] {
            assert_eq!(r.add(entry(u), true), AddOutcome::Added, "{u}");
        }
        assert_eq!(r.hosts().len(), 1);
        assert_eq!(
            r.remove("127.0.0.2:11434").unwrap().url(),
            "http://127.0.0.2:11434"
        );
        assert_eq!(
            r.remove("http://127.0.0.1:11435/").unwrap().url(),
            "http://127.0.0.1:11435"
        );
        assert_eq!(
            r.remove("localhost:11435").unwrap_err(),
            RemoveError::NotFound
        );
        assert!(r.remove("ollama-127-0-0-1").is_ok());
        assert!(r.is_empty());
    }

    #[test]
    fn a_name_shared_by_two_nodes_is_ambiguous() {
        let mut r = Registry::in_memory();
        for u in ["http://10.77.0.1:11434", "http://10.77.0.2:11434"] {
            let mut e = entry(u);
            e.name = "box".into();
            r.add(e, true);
        }
        let Err(RemoveError::Ambiguous(which)) = r.remove("box") else {
            panic!("removed one of two nodes called box");
        };
        assert_eq!(which.len(), 2);
        assert_eq!(r.len(), 2);
        assert!(r.remove("10.77.0.2").is_ok());
        assert!(r.remove("box").is_ok());
    }
}
