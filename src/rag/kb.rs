//! A FlockParser knowledge base on disk: which documents and chunk files it has.
//!
//! Two index flavours exist, and both are read:
//! - `knowledge_base/document_index.json`, written by FlockParser's CLI, with
//!   string chunk ids (`"doc_1_chunk_0"`);
//! - `document_index.json` at the root, written by `create_document_index.py`
//!   (and read by the original and FlockParser's API server), with integer ids.
//!
//! Chunk paths may be absolute or relative (an older index); a path that does
//! not exist is looked for under `knowledge_base/` by its file name. A missing
//! or malformed index or chunk file is named in one line and skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::read::{self, FileKind};
use crate::config::{json_error, read_text, FileError};

pub const KB_DIR: &str = "knowledge_base";
pub(crate) const INDEX_FILE: &str = "document_index.json";

/// The CLI flavour's index (inside `knowledge_base/`).
pub fn cli_index(root: &Path) -> PathBuf {
    root.join(KB_DIR).join(INDEX_FILE)
}

/// The root flavour's index.
pub(crate) fn root_index(root: &Path) -> PathBuf {
    root.join(INDEX_FILE)
}

/// One document and its readable chunk files, in index order.
#[derive(Debug, Clone, PartialEq)]
pub struct DocEntry {
    pub id: String,
    /// The file name of `original` (what the original shows as the source).
    pub name: String,
    pub chunks: Vec<PathBuf>,
}

/// What the index files list, and what was wrong with them.
#[derive(Debug, Default)]
pub struct Catalog {
    pub docs: Vec<DocEntry>,
    /// One line per problem, each naming the file at fault.
    pub problems: Vec<String>,
    /// Index files that were read.
    pub indexes: Vec<PathBuf>,
}

impl Catalog {
    pub fn chunk_count(&self) -> usize {
        self.docs.iter().map(|d| d.chunks.len()).sum()
    }
}

/// The file name of a path written by another program (either separator).
pub(crate) fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Where a chunk file listed as `file` really is, if anywhere.
pub fn resolve(root: &Path, file: &str) -> Option<PathBuf> {
    let p = Path::new(file);
    let direct = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let name = base_name(file);
    [direct, root.join(KB_DIR).join(name), root.join(name)]
        .into_iter()
        .find(|c| c.is_file())
}

/// Read both indexes under `root`; chunk files listed twice count once.
pub(crate) fn read_catalog(root: &Path) -> Catalog {
    let mut cat = Catalog::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for path in [cli_index(root), root_index(root)] {
        let text = match read_text(&path, FileKind::Index) {
            Ok(None) => continue,
            Ok(Some(t)) => t.text,
            Err(e) => {
                cat.problems.push(format!("{e}; index skipped"));
                continue;
            }
        };
        cat.indexes.push(path.clone());
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => add_index(root, &path, &v, &mut seen, &mut cat),
            Err(e) => cat
                .problems
                .push(format!("{}; index skipped", json_error(&path, &text, &e))),
        }
    }
    if cat.indexes.is_empty() && cat.problems.is_empty() {
        cat.problems.push(format!(
            "{}: no {INDEX_FILE} here or in {KB_DIR}/ (not a FlockParser knowledge base yet)",
            root.display()
        ));
    }
    cat
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn add_index(root: &Path, path: &Path, v: &Value, seen: &mut HashSet<PathBuf>, cat: &mut Catalog) {
    let Some(docs) = v.get("documents").and_then(Value::as_array) else {
        cat.problems.push(format!(
            "{}: no \"documents\" list; index skipped",
            path.display()
        ));
        return;
    };
    let mut missing = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let id = doc.get("id").and_then(id_text);
        let Some(chunks) = doc.get("chunks").and_then(Value::as_array) else {
            cat.problems.push(format!(
                "{}: document {} ({}) has no \"chunks\" list; skipped",
                path.display(),
                i + 1,
                id.as_deref().unwrap_or("no id")
            ));
            continue;
        };
        let id = id.unwrap_or_else(|| format!("document {}", i + 1));
        let name = doc
            .get("original")
            .and_then(Value::as_str)
            .map(|o| base_name(o).to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.clone());
        let mut files = Vec::new();
        for c in chunks {
            let Some(file) = c.get("file").and_then(Value::as_str) else {
                cat.problems.push(format!(
                    "{}: a chunk of {id} has no \"file\"; skipped",
                    path.display()
                ));
                continue;
            };
            match resolve(root, file) {
                Some(p) => {
                    if seen.insert(p.clone()) {
                        files.push(p);
                    }
                }
                None => missing.push(file.to_string()),
            }
        }
        if files.is_empty() {
            continue;
        }
        match cat.docs.iter_mut().find(|d| d.id == id && d.name == name) {
            Some(d) => d.chunks.extend(files),
            None => cat.docs.push(DocEntry {
                id,
                name,
                chunks: files,
            }),
        }
    }
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 {
            format!(" (and {} more)", missing.len() - 1)
        } else {
            String::new()
        };
        cat.problems.push(format!(
            "{}: chunk file {first} not found{more}; skipped",
            path.display()
        ));
    }
}

/// A chunk file's embedding, read without keeping its text.
#[derive(Deserialize)]
struct ChunkVector {
    #[allow(dead_code)]
    text: serde::de::IgnoredAny,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ChunkText {
    text: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let bytes = read::read(path, FileKind::Chunk)?
        .ok_or_else(|| FileError::new(path, "cannot read: no such file"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| json_error(path, &String::from_utf8_lossy(&bytes), &e))
}

/// A chunk file's embedding; an error names the file and what is wrong.
pub(crate) fn read_vector(path: &Path) -> Result<Vec<f32>, FileError> {
    let c: ChunkVector = read_json(path)?;
    if c.embedding.is_empty() {
        return Err(FileError::new(path, "the embedding is empty"));
    }
    if c.embedding.iter().any(|x| !x.is_finite()) {
        return Err(FileError::new(
            path,
            "the embedding holds a value that is not a finite number",
        ));
    }
    Ok(c.embedding)
}

/// A chunk file's text, with literal `\uXXXX` sequences (left by some PDF
/// converters) turned into the characters they name.
pub fn read_text_of(path: &Path) -> Result<String, FileError> {
    let c: ChunkText = read_json(path)?;
    Ok(unescape_u(&c.text))
}

fn unescape_u(s: &str) -> String {
    if !s.contains("\\u") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 6);
        match hex
            .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32)
        {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 6..];
            }
            None => {
                out.push_str("\\u");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(
            &p,
            json!({"text": "t", "embedding": [1.0, 0.0]}).to_string(),
        )
        .unwrap();
        p
    }

    #[test]
    fn both_flavours_relative_paths_and_the_fallback() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let kb = r.join(KB_DIR);
        std::fs::create_dir(&kb).unwrap();
        let a0 = chunk(&kb, "doc_1_chunk_0.json");
        let b0 = chunk(&kb, "doc_2_chunk_0.json");
        let c0 = chunk(&kb, "doc_3_chunk_0.json");
        // CLI flavour: absolute path, and a stale absolute path from another machine.
        std::fs::write(
            cli_index(r),
            json!({"documents": [
                {"id": "doc_1", "original": "/home/x/a.pdf", "chunks": [
                    {"chunk_id": "doc_1_chunk_0", "file": a0.to_str().unwrap()}]},
                {"id": "doc_2", "original": "C:\\papers\\b.pdf", "chunks": [
                    {"chunk_id": "doc_2_chunk_0", "file": "/home/joker/FlockParser/knowledge_base/doc_2_chunk_0.json"},
                    {"chunk_id": "doc_2_chunk_1", "file": "/gone/doc_2_chunk_1.json"}]}
            ]})
            .to_string(),
        )
        .unwrap();
        // Root flavour: integer ids, a relative path, and a chunk the CLI index already lists.
        std::fs::write(
            root_index(r),
            json!({"documents": [
                {"id": "doc_1", "original": "/home/x/a.pdf", "chunk_count": 1,
                 "chunks": [{"chunk_id": 0, "file": a0.to_str().unwrap()}]},
                {"id": "doc_3", "original": "c.pdf", "chunk_count": 1,
                 "chunks": [{"chunk_id": 0, "file": "knowledge_base/doc_3_chunk_0.json"}]}
            ], "created": "2025-10-04", "version": "1.0"})
            .to_string(),
        )
        .unwrap();
        let cat = read_catalog(r);
        let names: Vec<&str> = cat.docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a.pdf", "b.pdf", "c.pdf"]);
        assert_eq!(cat.docs[0].chunks, vec![a0]);
        assert_eq!(cat.docs[1].chunks, vec![b0]);
        assert_eq!(cat.docs[2].chunks, vec![c0]);
        assert_eq!(cat.problems.len(), 1, "{:?}", cat.problems);
        assert!(cat.problems[0].contains("/gone/doc_2_chunk_1.json not found"));
    }

    #[test]
    fn a_malformed_index_is_named_and_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root_index(root.path()), "{\"documents\": [").unwrap();
        let cat = read_catalog(root.path());
        assert!(cat.docs.is_empty());
        assert!(
            cat.problems[0].contains("document_index.json: line 1"),
            "{:?}",
            cat.problems
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(read_catalog(empty.path()).problems[0].contains("not a FlockParser knowledge base"));
    }

    #[test]
    fn chunk_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, r#"{"text": "x"}"#).unwrap();
        assert!(read_vector(&bad)
            .unwrap_err()
            .to_string()
            .contains("bad.json"));
        std::fs::write(&bad, r#"{"text": "x", "embedding": []}"#).unwrap();
        assert!(read_vector(&bad).unwrap_err().to_string().contains("empty"));
        std::fs::write(&bad, r#"{"text": "caf\\u00e9 \\uZZZZ", "embedding": [1]}"#).unwrap();
        assert_eq!(read_text_of(&bad).unwrap(), "café \\uZZZZ");
    }
}
