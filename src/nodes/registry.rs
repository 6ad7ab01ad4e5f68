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
    /// URLs removed in this session since its last save: a save removes them
    /// from the file as it is then.
    removed: BTreeSet<String>,
    /// URLs added or updated (or listed by `load FILE`) in this session since
    /// its last save: a save writes these entries over the file as it is then.
    /// Every other entry is taken from the file, so what another session
    /// removed or changed meanwhile stays so.
    changed: BTreeSet<String>,
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
        self.changed.insert(entry.url.clone());
        self.nodes.push(Arc::new(Node::new(entry, simulated)));
        AddOutcome::Added
    }

    /// Add a node whose live state is already known (e.g. from a probe).
    pub(crate) fn add_node(&mut self, node: Arc<Node>) -> AddOutcome {
        if let Some(existing) = self.find(&node.entry.url) {
            return AddOutcome::Duplicate(existing.entry.url.clone());
        }
        self.removed.remove(&node.entry.url);
        self.changed.insert(node.entry.url.clone());
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
                self.changed.remove(&node.entry.url);
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
        // Where each registered URL is (a file of many thousand nodes, merged
        // into as many, is not quadratic).
        let mut at: std::collections::HashMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.entry.url.clone(), i))
            .collect();
        for e in file.entries {
            self.removed.remove(&e.url);
            // Listed by the user's file: on disk after the next save, even if
            // another session removed it meanwhile.
            self.changed.insert(e.url.clone());
            match at.get(&e.url).copied() {
                None => {
                    report.added.push(e.url.clone());
                    at.insert(e.url.clone(), self.nodes.len());
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

    /// Save to the node file: lock, re-read, write this session's changes —
    /// adds, updates, removals — over the file as it is then, atomically; the
    /// lock waited for and the file written on the blocking pool. What another
    /// process changed meanwhile is kept, in the file and in this registry
    /// (entries it added join, entries it removed leave). `waiting` is told
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
            changed: self.changed.clone(),
        };
        let path = &store.path;
        let (sync, written) = with_lock(path, || waiting(path), move || merge.run()).await?;
        self.apply(sync);
        written?;
        // Written: these changes are in the file now.
        self.removed.clear();
        self.changed.clear();
        Ok(true)
    }

    /// Take in what another process changed in the file.
    fn apply(&mut self, sync: Sync) {
        self.nodes
            .retain(|n| n.simulated || !sync.gone.contains(&n.entry.url));
        for e in sync.refreshed {
            if let Some(i) = self.nodes.iter().position(|n| n.entry.url == e.url) {
                self.nodes[i] = Arc::new(Node::new(e, false));
            }
        }
        for e in sync.joined {
            self.nodes.push(Arc::new(Node::new(e, false)));
        }
        self.unusable.extend(sync.unusable);
        if let Some(extra) = sync.extra {
            self.extra = extra;
        }
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
    changed: BTreeSet<String>,
}

/// What another process wrote meanwhile, for this registry to take in.
#[derive(Default)]
struct Sync {
    /// Entries it added.
    joined: Vec<NodeEntry>,
    /// Entries it changed (this session did not).
    refreshed: Vec<NodeEntry>,
    /// URLs it removed (this session did not change them).
    gone: BTreeSet<String>,
    unusable: Vec<Value>,
    /// The file's other top-level keys.
    extra: Option<Map<String, Value>>,
}

impl Merge {
    /// Re-read the file, apply this session's changes over it, write the
    /// result: what the registry must take in (even when the write failed)
    /// and the write's result. An error when the file cannot be read (it is
    /// then left as it is).
    fn run(self) -> Result<(Sync, Result<(), WriteError>)> {
        let disk = match nodes_file::load(&self.path) {
            // No file (yet, or any more): this registry is the whole of it.
            Ok(None) => {
                let written = write_atomic(&self.path, nodes_file::to_json(&self.mine).as_bytes());
                return Ok((Sync::default(), written));
            }
            Ok(Some((disk, _))) => disk,
            // Another program wrote something this one cannot read: leave it be.
            Err(e) => anyhow::bail!("not saved: {e}"),
        };
        let mut sync = Sync::default();
        let mine: std::collections::HashMap<&str, &NodeEntry> = self
            .mine
            .entries
            .iter()
            .map(|e| (e.url.as_str(), e))
            .collect();
        let mut out = NodeFile {
            entries: Vec::with_capacity(disk.entries.len() + self.changed.len()),
            unusable: self.mine.unusable.clone(),
            extra: disk.extra.clone(),
        };
        let mut on_disk = BTreeSet::new();
        for e in disk.entries {
            on_disk.insert(e.url.clone());
            if self.removed.contains(&e.url) {
                continue;
            }
            match mine.get(e.url.as_str()) {
                Some(m) if self.changed.contains(&e.url) => out.entries.push((*m).clone()),
                Some(m) => {
                    if **m != e {
                        sync.refreshed.push(e.clone());
                    }
                    out.entries.push(e);
                }
                None => {
                    if !self.known.contains(&e.url) {
                        sync.joined.push(e.clone());
                    }
                    out.entries.push(e);
                }
            }
        }
        for e in &self.mine.entries {
            if on_disk.contains(&e.url) {
                continue;
            }
            if self.changed.contains(&e.url) {
                out.entries.push(e.clone());
            } else {
                // Loaded from the file, and since removed from it by another process.
                sync.gone.insert(e.url.clone());
            }
        }
        for u in disk.unusable {
            if !out.unusable.contains(&u) {
                sync.unusable.push(u.clone());
                out.unusable.push(u);
            }
        }
        sync.extra = Some(disk.extra);
        let written = write_atomic(&self.path, nodes_file::to_json(&out).as_bytes());
        Ok((sync, written))
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

    fn file_registry(path: &Path, urls: &[&str]) -> Registry {
        let file = NodeFile {
            entries: urls.iter().map(|u| entry(u)).collect(),
            ..Default::default()
        };
        std::fs::write(path, nodes_file::to_json(&file)).unwrap();
        Registry::from_file(
            NodeStore {
                path: path.to_path_buf(),
                blocked: None,
            },
            file,
        )
    }

    fn urls_on_disk(path: &Path) -> Vec<String> {
        let (f, _) = nodes_file::load(path).unwrap().unwrap();
        f.entries.into_iter().map(|e| e.url).collect()
    }

    fn urls(r: &Registry) -> Vec<&str> {
        r.nodes().iter().map(|n| n.url()).collect()
    }

    #[tokio::test]
    async fn a_save_writes_this_sessions_changes_over_the_file_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let (a, gone, b, c) = (
            "http://10.77.0.1:11434",
            "http://10.77.0.2:11434",
            "http://10.77.0.3:11434",
            "http://10.77.0.4:11434",
        );
        // Two sessions start from the same file.
        let mut first = file_registry(&path, &[a, gone]);
        let mut second = file_registry(&path, &[a, gone]);
        // The first removes a node and adds one; the second adds another.
        first.remove(gone).unwrap();
        first.add(entry(b), false);
        first.save(|_| {}).await.unwrap();
        assert_eq!(urls_on_disk(&path), [a, b]);
        second.add(entry(c), false);
        second.save(|_| {}).await.unwrap();
        assert_eq!(urls_on_disk(&path), [a, b, c], "the removal holds");
        assert_eq!(urls(&second), [a, c, b], "and the second session knows it");
        // Another session's change to an entry is kept, and taken in.
        let mut renamed = entry(a);
        renamed.name = "kitchen".into();
        first.merge_file(NodeFile {
            entries: vec![renamed],
            ..Default::default()
        });
        first.save(|_| {}).await.unwrap();
        second.remove(c).unwrap();
        second.save(|_| {}).await.unwrap();
        let (disk, _) = nodes_file::load(&path).unwrap().unwrap();
        assert_eq!(disk.entries[0].name, "kitchen");
        assert_eq!(urls_on_disk(&path), [a, b]);
        assert_eq!(second.find(a).unwrap().name(), "kitchen");
        // A change already saved is not made again: the first session's
        // removal of `gone` does not undo a later add of it elsewhere.
        second.add(entry(gone), false);
        second.save(|_| {}).await.unwrap();
        let d = "http://10.77.0.5:11434";
        first.add(entry(d), false);
        first.save(|_| {}).await.unwrap();
        assert_eq!(urls_on_disk(&path), [a, b, gone, d]);
        assert_eq!(urls(&first), [a, b, d, gone], "c left, gone joined");
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
