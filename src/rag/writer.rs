//! Adding documents to a FlockParser knowledge base in FlockParser's format,
//! so FlockParser and the original read them:
//!
//! - `knowledge_base/doc_<N>_chunk_<M>.json` = `{"text", "embedding"}`;
//! - `converted_files/<name>.txt`, the extracted text (FlockParser's `text_path`);
//! - an entry in `knowledge_base/document_index.json` (CLI flavour) and in the
//!   root `document_index.json` (the flavour the original and FlockParser's API
//!   server read), each with a `content_sha256` field this program uses to skip
//!   documents it already has. Other fields and entries are kept as they are.
//!
//! Documents are staged (chunk and text files written by rename, so no file is
//! ever half-written) and committed in groups: the staged files are flushed to
//! disk, then each index is replaced atomically (temporary file, fsync,
//! rename). An index therefore never names a file that is not on disk, and an
//! interrupted run leaves only complete documents in the indexes; what was
//! staged but not committed is redone by the next run. Committing in groups
//! keeps the number of disk flushes small (each costs milliseconds). One
//! writer at a time (a lock file); a writer that is dropped commits first.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use serde_json::{json, Map, Value};

use super::kb::{self, KB_DIR};
use crate::config::atomic::{self, write_atomic, write_staged, WriteError};
use crate::config::read::FileKind;
use crate::config::{json_error, read_text, FileError};

pub(crate) const CONVERTED_DIR: &str = "converted_files";
const LOCK_FILE: &str = ".synapticllamas-rag-index.lock";
pub(crate) const HASH_KEY: &str = "content_sha256";

/// Why a knowledge base could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("{}: cannot create: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot open: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: another `rag index` is writing to this knowledge base", .0.display())]
    Busy(PathBuf),
    /// An index that cannot be read (it is never overwritten).
    #[error(transparent)]
    Unreadable(#[from] FileError),
    #[error("{}: no \"documents\" list (not a FlockParser index)", .0.display())]
    NotAnIndex(PathBuf),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Stopped(#[from] crate::blocking::Stopped),
    #[error("the embedding model gives {got} dimensions but {} holds {want}-dimension vectors; use `rag model` with the model that built it", root.display())]
    Dimensions {
        got: usize,
        want: usize,
        root: PathBuf,
    },
}

fn read_index(path: &Path) -> Result<Option<Value>, KbError> {
    let Some(text) = read_text(path, FileKind::Index)?.map(|t| t.text) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| json_error(path, &text, &e))?;
    if !v.get("documents").is_some_and(Value::is_array) {
        return Err(KbError::NotAnIndex(path.to_path_buf()));
    }
    Ok(Some(v))
}

/// An index as written: pretty JSON, atomically and durably.
fn write_index(path: &Path, index: &Value) -> Result<(), KbError> {
    let text = serde_json::to_string_pretty(index).expect("a JSON value always serializes");
    Ok(write_atomic(path, text.as_bytes())?)
}

fn docs_mut(v: &mut Value) -> &mut Vec<Value> {
    v["documents"]
        .as_array_mut()
        .expect("an index is read or built with a \"documents\" list")
}

fn doc_number(id: &str) -> Option<usize> {
    id.strip_prefix("doc_")?.parse().ok()
}

/// A root-flavour entry for a CLI-flavour one.
fn root_entry(cli: &Value) -> Value {
    let chunks: Vec<Value> = cli["chunks"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| {
                    let n = c["chunk_id"]
                        .as_str()
                        .and_then(|s| s.rsplit('_').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(i as u64);
                    json!({"chunk_id": n, "file": c["file"]})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut e = Map::new();
    e.insert("id".into(), cli["id"].clone());
    e.insert("original".into(), cli["original"].clone());
    e.insert("chunk_count".into(), json!(chunks.len()));
    e.insert("chunks".into(), Value::Array(chunks));
    if let Some(h) = cli.get(HASH_KEY) {
        e.insert(HASH_KEY.into(), h.clone());
    }
    Value::Object(e)
}

pub struct Writer {
    root: PathBuf,
    cli: Value,
    root_index: Value,
    /// content hash → document id
    hashes: HashMap<String, String>,
    next: usize,
    dims: Option<usize>,
    /// Files of staged documents not flushed yet.
    staged_files: Vec<PathBuf>,
    /// Ids of documents staged since the last commit.
    staged: Vec<String>,
    _lock: File,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.commit();
    }
}

impl Writer {
    /// Open the knowledge base at `root` (created if missing) for adding.
    /// An index that cannot be read stops everything: it is never overwritten.
    pub fn open(root: &Path) -> Result<Writer, KbError> {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let kb_dir = root.join(KB_DIR);
        std::fs::create_dir_all(&kb_dir)
            .and_then(|_| std::fs::create_dir_all(root.join(CONVERTED_DIR)))
            .map_err(|source| KbError::Create {
                path: kb_dir.clone(),
                source,
            })?;
        let lock_path = kb_dir.join(LOCK_FILE);
        let lock_error = |source| KbError::Lock {
            path: lock_path.clone(),
            source,
        };
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(lock_error)?;
        if !lock.try_lock_exclusive().map_err(lock_error)? {
            return Err(KbError::Busy(root));
        }
        // Temporary files of a run that was killed while staging.
        atomic::remove_stale_temp_files(&root.join(CONVERTED_DIR));
        let cli_path = kb::cli_index(&root);
        let root_path = kb::root_index(&root);
        let cli = read_index(&cli_path)?.unwrap_or_else(|| json!({"documents": []}));
        let existing_root = read_index(&root_path)?;
        let mut w = Writer {
            root_index: existing_root.clone().unwrap_or_else(|| {
                json!({"documents": [], "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(), "version": "1.0"})
            }),
            root: root.clone(),
            cli,
            hashes: HashMap::new(),
            next: 1,
            dims: None,
            staged_files: Vec::new(),
            staged: Vec::new(),
            _lock: lock,
        };
        // The root index lists what the CLI index lists: documents written by an
        // earlier run that stopped between the two files, or every document when
        // the root index does not exist yet.
        let in_root: Vec<Value> = docs_mut(&mut w.root_index)
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        let missing: Vec<Value> = docs_mut(&mut w.cli)
            .iter()
            .filter(|d| !in_root.contains(&d["id"]))
            .filter(|d| existing_root.is_none() || d.get(HASH_KEY).is_some())
            .map(root_entry)
            .collect();
        if !missing.is_empty() || existing_root.is_none() && !docs_mut(&mut w.cli).is_empty() {
            docs_mut(&mut w.root_index).extend(missing);
            w.save_root()?;
        }
        for v in [&w.cli, &w.root_index] {
            for d in v["documents"].as_array().into_iter().flatten() {
                let id = d["id"].as_str().unwrap_or_default();
                if let Some(n) = doc_number(id) {
                    w.next = w.next.max(n + 1);
                }
                if let Some(h) = d.get(HASH_KEY).and_then(Value::as_str) {
                    w.hashes.insert(h.to_string(), id.to_string());
                }
            }
        }
        let cat = kb::read_catalog(&root);
        w.dims = cat
            .docs
            .iter()
            .flat_map(|d| d.chunks.iter())
            .find_map(|f| kb::read_vector(f).ok())
            .map(|v| v.len());
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The id of the document already indexed with this content, if any.
    pub fn known(&self, hash: &str) -> Option<&str> {
        self.hashes.get(hash).map(String::as_str)
    }

    /// The length of the vectors already in the knowledge base.
    pub fn dims(&self) -> Option<usize> {
        self.dims
    }

    fn save_root(&self) -> Result<(), KbError> {
        write_index(&kb::root_index(&self.root), &self.root_index)
    }

    /// A `converted_files/` name for `original` no other document uses.
    fn text_path(&self, original: &Path, id: &str) -> PathBuf {
        let stem = original
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_string());
        let dir = self.root.join(CONVERTED_DIR);
        let plain = dir.join(format!("{stem}.txt"));
        let taken = self.cli["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["text_path"].as_str() == Some(&plain.to_string_lossy()));
        if taken {
            dir.join(format!("{stem}_{id}.txt"))
        } else {
            plain
        }
    }

    /// Stage and commit one document; its id.
    pub fn add(
        &mut self,
        original: &Path,
        text: &str,
        chunks: &[String],
        vectors: &[Vec<f32>],
        hash: &str,
    ) -> Result<String, KbError> {
        let id = self.stage(original, text, chunks, vectors, hash)?;
        self.commit()?;
        Ok(id)
    }

    /// Documents staged and not committed yet.
    pub fn pending(&self) -> &[String] {
        &self.staged
    }

    /// Flush the staged documents' files, then write both indexes. Returns the
    /// ids committed.
    pub fn commit(&mut self) -> Result<Vec<String>, KbError> {
        if self.staged.is_empty() {
            return Ok(Vec::new());
        }
        atomic::flush(&self.root.join(KB_DIR), &self.staged_files)?;
        write_index(&kb::cli_index(&self.root), &self.cli)?;
        self.save_root()?;
        self.staged_files.clear();
        Ok(std::mem::take(&mut self.staged))
    }

    /// Write one document's chunk files and text and add it to the indexes in
    /// memory; `commit` makes it durable. Returns its id.
    pub(crate) fn stage(
        &mut self,
        original: &Path,
        text: &str,
        chunks: &[String],
        vectors: &[Vec<f32>],
        hash: &str,
    ) -> Result<String, KbError> {
        assert_eq!(chunks.len(), vectors.len(), "one vector per chunk");
        if let (Some(want), Some(v)) = (self.dims, vectors.first()) {
            if v.len() != want {
                return Err(KbError::Dimensions {
                    got: v.len(),
                    want,
                    root: self.root.clone(),
                });
            }
        }
        let id = format!("doc_{}", self.next);
        let kb_dir = self.root.join(KB_DIR);
        let mut refs = Vec::with_capacity(chunks.len());
        for (i, (c, v)) in chunks.iter().zip(vectors).enumerate() {
            let file = kb_dir.join(format!("{id}_chunk_{i}.json"));
            let body = json!({"text": c, "embedding": v}).to_string();
            write_staged(&file, body.as_bytes())?;
            self.staged_files.push(file.clone());
            refs.push((i, file));
        }
        let text_path = self.text_path(original, &id);
        let stem = original
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_staged(&text_path, format!("# {stem}\n\n{text}").as_bytes())?;
        self.staged_files.push(text_path.clone());
        let original = std::path::absolute(original).unwrap_or_else(|_| original.to_path_buf());
        let cli_entry = json!({
            "id": id,
            "original": original.to_string_lossy(),
            "text_path": text_path.to_string_lossy(),
            "processed_date": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "chunks": refs.iter().map(|(i, f)| json!({
                "chunk_id": format!("{id}_chunk_{i}"), "file": f.to_string_lossy()
            })).collect::<Vec<_>>(),
            HASH_KEY: hash,
        });
        let root_e = root_entry(&cli_entry);
        docs_mut(&mut self.cli).push(cli_entry);
        docs_mut(&mut self.root_index).push(root_e);
        self.staged.push(id.clone());
        self.hashes.insert(hash.to_string(), id.clone());
        self.next += 1;
        if self.dims.is_none() {
            self.dims = vectors.first().map(Vec::len);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_land_in_both_indexes_and_foreign_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join(KB_DIR)).unwrap();
        std::fs::write(
            kb::cli_index(root),
            r#"{"documents": [{"id": "doc_4", "original": "/x/old.pdf", "chunks": [], "tag": 7}], "mine": true}"#,
        )
        .unwrap();
        let mut w = Writer::open(root).unwrap();
        assert!(Writer::open(root)
            .err()
            .unwrap()
            .to_string()
            .contains("another `rag index`"));
        let id = w
            .add(
                Path::new("/papers/tides.txt"),
                "Tides.",
                &["Tides.".into()],
                &[vec![0.5, 0.5]],
                "abc",
            )
            .unwrap();
        assert_eq!(id, "doc_5");
        assert_eq!(w.known("abc"), Some("doc_5"));
        let cli: Value =
            serde_json::from_str(&std::fs::read_to_string(kb::cli_index(root)).unwrap()).unwrap();
        assert_eq!(cli["mine"], true);
        assert_eq!(cli["documents"][0]["tag"], 7);
        let doc = &cli["documents"][1];
        assert_eq!(doc["chunks"][0]["chunk_id"], "doc_5_chunk_0");
        let chunk: Value = serde_json::from_str(
            &std::fs::read_to_string(doc["chunks"][0]["file"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(chunk, json!({"text": "Tides.", "embedding": [0.5, 0.5]}));
        let rooti: Value =
            serde_json::from_str(&std::fs::read_to_string(kb::root_index(root)).unwrap()).unwrap();
        let ids: Vec<&str> = rooti["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["doc_4", "doc_5"]);
        assert_eq!(rooti["documents"][1]["chunks"][0]["chunk_id"], 0);
        assert_eq!(rooti["version"], "1.0");
        let txt = std::fs::read_to_string(root.join(CONVERTED_DIR).join("tides.txt")).unwrap();
        assert_eq!(txt, "# tides\n\nTides.");
        drop(w);
        // Reopened: the hash is known, the vectors' length is checked.
        let mut w = Writer::open(root).unwrap();
        assert_eq!(w.known("abc"), Some("doc_5"));
        assert_eq!(w.dims(), Some(2));
        let e = w
            .add(
                Path::new("b.txt"),
                "B",
                &["B".into()],
                &[vec![1.0; 3]],
                "def",
            )
            .unwrap_err();
        assert!(e.to_string().contains("3 dimensions"), "{e}");
    }

    #[test]
    fn staged_documents_reach_the_indexes_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ids = |p: &Path| -> usize {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .map_or(0, |v| v["documents"].as_array().unwrap().len())
        };
        let mut w = Writer::open(root).unwrap();
        for (i, h) in ["h1", "h2"].iter().enumerate() {
            let id = w
                .stage(
                    Path::new(&format!("/d/{i}.txt")),
                    "t",
                    &["t".into()],
                    &[vec![1.0]],
                    h,
                )
                .unwrap();
            assert_eq!(id, format!("doc_{}", i + 1));
        }
        assert_eq!(w.pending(), ["doc_1", "doc_2"]);
        assert!(root.join(KB_DIR).join("doc_2_chunk_0.json").is_file());
        assert_eq!(ids(&kb::cli_index(root)), 0, "not committed yet");
        assert_eq!(w.commit().unwrap(), ["doc_1", "doc_2"]);
        assert_eq!(ids(&kb::cli_index(root)), 2);
        assert_eq!(ids(&kb::root_index(root)), 2);
        w.stage(
            Path::new("/d/3.txt"),
            "t",
            &["t".into()],
            &[vec![1.0]],
            "h3",
        )
        .unwrap();
        drop(w);
        assert_eq!(ids(&kb::cli_index(root)), 3, "a dropped writer commits");
    }

    #[test]
    fn an_unreadable_index_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(kb::root_index(dir.path()), "{oops").unwrap();
        let e = Writer::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("document_index.json: line 1"), "{e}");
        assert_eq!(
            std::fs::read_to_string(kb::root_index(dir.path())).unwrap(),
            "{oops"
        );
    }
}
