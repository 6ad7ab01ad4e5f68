//! Retrieval-augmented answers over the user's documents, compatible with
//! FlockParser's knowledge bases (local folders in both index flavours, or
//! FlockParser's API server) and with the original's retrieval rules and
//! prompt layout. Query embeddings come from nodes that have the embedding
//! model, through the scheduler; `rag index` builds a knowledge base in
//! FlockParser's format. Knows nodes and the scheduler, nothing of the terminal.

pub mod chunking;
pub mod context;
pub mod documents;
pub mod embed;
pub mod index;
pub mod indexer;
pub mod kb;
pub mod prepare;
pub mod remote;
pub mod retrieve;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use retrieve::{Knowledge, Report, Retrieved, Retriever};

use index::{Fingerprint, Index};

/// A `rag path` (or `rag_path` setting) that names no usable place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LocationError {
    #[error("missing folder or URL")]
    Missing,
    #[error("`{0}`: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error(transparent)]
    Url(#[from] remote::UrlError),
}

/// Where a knowledge base is.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// A FlockParser folder (holding `knowledge_base/`).
    Local(PathBuf),
    /// FlockParser's API server.
    Remote(String),
}

impl Location {
    /// A `rag path` argument: an http(s) URL (port 8765 unless given) or a
    /// folder (`~/` expanded, made absolute).
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(LocationError::Missing);
        }
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Location::Remote(remote::base_url(t)?));
        }
        if lower.contains("://") {
            return Err(LocationError::Scheme(t.to_string()));
        }
        let p = documents::expand_home(t);
        Ok(Location::Local(std::path::absolute(&p).unwrap_or(p)))
    }

    pub fn describe(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote(u) => u.clone(),
        }
    }
}

/// The FlockParser folder in the home directory.
pub(crate) fn default_folder() -> Option<PathBuf> {
    dirs::home_dir().map(|h| h.join("FlockParser"))
}

/// The knowledge base the settings name: `rag_path`, else the FlockParser
/// folder in the home directory when it exists.
pub async fn configured(rag_path: Option<&str>) -> Option<Result<Location, LocationError>> {
    match rag_path {
        Some(p) => Some(Location::parse(p)),
        None => {
            let d = default_folder()?;
            let is_dir = tokio::fs::metadata(&d).await.is_ok_and(|m| m.is_dir());
            is_dir.then_some(Ok(Location::Local(d)))
        }
    }
}

/// The loaded local index, kept between queries and reloaded when the
/// knowledge base's files change. Clones share it (the shell and the gateway
/// load a knowledge base once between them).
#[derive(Default, Clone)]
pub struct Cache {
    loaded: Arc<tokio::sync::Mutex<Option<Loaded>>>,
}

/// A loaded index: its folder, the index, and the files' fingerprint then.
type Loaded = (PathBuf, Arc<Index>, Fingerprint);

impl Cache {
    /// The index of `root` if it is loaded and its files have not changed
    /// (looked at off the async threads).
    pub async fn fresh(&self, root: &Path) -> Option<Arc<Index>> {
        let loaded = self.loaded.lock().await;
        fresh_in(&loaded, root).await
    }

    /// The index of `root`, loading it (off the async threads) when it is not
    /// loaded or changed. The problems are those of this load (none when the
    /// loaded index was still current). One load at a time: a second caller
    /// waits for the first and gets its index.
    pub async fn get(
        &self,
        root: &Path,
        progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
    ) -> (Arc<Index>, Vec<String>) {
        let mut loaded = self.loaded.lock().await;
        if let Some(idx) = fresh_in(&loaded, root).await {
            return (idx, Vec::new());
        }
        let r = root.to_path_buf();
        let load = tokio::task::spawn_blocking(move || Index::load(&r, &*progress)).await;
        match load {
            Ok(l) => {
                let idx = Arc::new(l.index);
                *loaded = Some((root.to_path_buf(), idx.clone(), l.fingerprint));
                (idx, l.problems)
            }
            Err(e) => (
                Arc::new(Index::from_vectors(0, Vec::new(), Vec::new())),
                vec![format!("{}: loading stopped ({e})", root.display())],
            ),
        }
    }

    pub async fn clear(&self) {
        *self.loaded.lock().await = None;
    }
}

async fn fresh_in(loaded: &Option<Loaded>, root: &Path) -> Option<Arc<Index>> {
    let (r, idx, fp) = loaded.as_ref()?;
    if r != root {
        return None;
    }
    let root = root.to_path_buf();
    let now = crate::blocking::run(move || Fingerprint::of(&root)).await;
    (now.ok().as_ref() == Some(fp)).then(|| idx.clone())
}

/// What the pipeline calls before it builds any prompt: retrieval for the
/// question and for `parts` ((part number, focus) of a long answer's later
/// parts). None when RAG is off for this query.
pub(crate) async fn augment(
    retriever: Option<&Retriever>,
    query: &str,
    parts: &[(usize, String)],
    notice: &(dyn Fn(String) + Sync),
) -> Option<Retrieved> {
    Some(retriever?.retrieve(query, parts, notice).await)
}

/// A long list of problems as at most `max` lines plus a count of the rest.
pub(crate) fn summarise(problems: &[String], max: usize) -> Vec<String> {
    let mut out: Vec<String> = problems.iter().take(max).cloned().collect();
    if problems.len() > max {
        out.push(format!(
            "… and {} more problem(s) like these",
            problems.len() - max
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("http://kb.lan").unwrap(),
            Location::Remote("http://kb.lan:8765".into())
        );
        assert_eq!(
            Location::parse("/srv/FlockParser").unwrap(),
            Location::Local("/srv/FlockParser".into())
        );
        assert!(
            matches!(Location::parse("rel/dir").unwrap(), Location::Local(p) if p.is_absolute())
        );
        assert!(Location::parse("ftp://x").is_err());
        assert!(Location::parse(" ").is_err());
        assert_eq!(summarise(&["a".into(), "b".into(), "c".into()], 2).len(), 3);
    }
}
