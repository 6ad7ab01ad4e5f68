//! `rag index PATH…`: text from each file, FlockParser's chunks, embeddings in
//! batches spread over every host that has the embedding model (all batches
//! queued at once; the scheduler gives each host one at a time), and each
//! document staged as soon as all its chunks are embedded, in the order the
//! files were given, and committed with the others staged in the last second.
//! A document whose content is already in the knowledge base is skipped, so an
//! interrupted run picks up where it stopped. Files are read, and the
//! knowledge base written, on the blocking pool, never on the async threads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use super::chunking::chunk_text;
use super::documents::text_of;
use super::embed::Embedder;
use super::writer::{KbError, Writer};
use crate::blocking::{self, Stopped};
use crate::config::read::{self, FileKind};
use crate::config::FileError;
use crate::scheduler::TaskFailed;

/// The most chunks in one `/api/embed` request.
pub(crate) const MAX_BATCH: usize = 16;
/// Staged documents are committed at least this often (and at the end).
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where `rag index` reports to.
pub trait Progress: Sync {
    /// A line about one file (indexed, or skipped as already indexed).
    fn line(&self, line: String);
    /// A file (or a batch of them) that could not be indexed.
    fn problem(&self, line: String);
    /// A notice from the embedding requests (a retry, a slow node).
    fn notice(&self, line: String);
    /// The number of chunks to embed is known.
    fn planned(&self, chunks: usize);
    /// `n` more chunks are embedded.
    fn embedded(&self, n: usize);
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub added: usize,
    pub chunks: usize,
    pub skipped: usize,
    pub failed: usize,
    pub seconds: f64,
}

/// (document, chunk) pairs embedded in one request.
type Batch = Vec<(usize, usize)>;

struct Pending {
    path: PathBuf,
    text: String,
    hash: String,
    chunks: Vec<String>,
    vectors: Vec<Option<Vec<f32>>>,
    failed: Option<String>,
}

impl Pending {
    fn complete(&self) -> bool {
        self.failed.is_some() || self.vectors.iter().all(Option::is_some)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Chunks per request: at most `MAX_BATCH`, small enough that every host gets
/// several requests, and a number of requests that is a multiple of the hosts
/// (so the last round keeps every host busy).
pub fn batch_size(chunks: usize, hosts: usize) -> usize {
    let hosts = hosts.max(1);
    let batches = chunks
        .div_ceil(MAX_BATCH)
        .max((hosts * 4).min(chunks))
        .max(1)
        .next_multiple_of(hosts);
    chunks.div_ceil(batches).clamp(1, MAX_BATCH)
}

/// The writer, lent to the blocking pool for each write (it writes and
/// flushes files) and back in between; lost only if the runtime stops.
struct Lent(Option<Writer>);

impl Lent {
    fn known(&self, hash: &str) -> Option<&str> {
        self.0.as_ref()?.known(hash)
    }

    async fn with<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut Writer) -> Result<T, KbError> + Send + 'static,
    ) -> Result<T, KbError> {
        let mut w = self.0.take().ok_or(Stopped)?;
        let (w, out) = blocking::run(move || {
            let out = op(&mut w);
            (w, out)
        })
        .await?;
        self.0 = Some(w);
        out
    }

    /// Close the knowledge base (a writer commits what is left when dropped).
    async fn close(mut self) {
        if let Some(w) = self.0.take() {
            let _ = blocking::run(move || drop(w)).await;
        }
    }
}

/// Index `files` into the knowledge base `writer` holds (and close it).
pub async fn run(
    writer: Writer,
    files: &[PathBuf],
    embedder: &Embedder,
    progress: &dyn Progress,
) -> Summary {
    let started = Instant::now();
    let mut out = Out {
        writer: Lent(Some(writer)),
        staged: Vec::new(),
        summary: Summary::default(),
        progress,
    };
    let mut docs: Vec<Pending> = Vec::new();
    for path in files {
        if let Some(doc) = out.read(path, &docs).await {
            docs.push(doc);
        }
    }
    progress.planned(docs.iter().map(|p| p.chunks.len()).sum());
    let jobs = jobs(&docs, embedder.hosts());
    let count = jobs.len();
    let requests = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (batch, inputs))| async move {
            let label = format!("embed batch {}/{count}", i + 1);
            let r = embedder
                .embed(&label, &inputs, &|line| progress.notice(line))
                .await;
            (batch, r)
        });
    let mut results = stream::iter(requests).buffer_unordered(embedder.hosts().max(1) * 4);
    let mut next = 0;
    let mut last_commit = Instant::now();
    while let Some((batch, result)) = results.next().await {
        progress.embedded(batch.len());
        take_batch(&mut docs, &batch, result.map(|(vectors, _)| vectors));
        // Stage every document that is complete, in file order.
        while next < docs.len() && docs[next].complete() {
            out.stage(&mut docs[next]).await;
            next += 1;
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            if !out.commit().await {
                break;
            }
            last_commit = Instant::now();
        }
    }
    drop(results);
    // Documents with no chunks, after the last batch.
    while next < docs.len() {
        out.stage(&mut docs[next]).await;
        next += 1;
    }
    out.commit().await;
    out.writer.close().await;
    out.summary.seconds = started.elapsed().as_secs_f64();
    out.summary
}

/// The embedding requests: every document's (document, chunk) pairs in
/// batches (across document boundaries) sized for `hosts`, each with its
/// chunks' texts.
fn jobs(docs: &[Pending], hosts: usize) -> Vec<(Batch, Vec<String>)> {
    let pairs: Vec<(usize, usize)> = docs
        .iter()
        .enumerate()
        .flat_map(|(d, p)| (0..p.chunks.len()).map(move |c| (d, c)))
        .collect();
    let size = batch_size(pairs.len(), hosts);
    pairs
        .chunks(size)
        .map(|batch| {
            let inputs = batch
                .iter()
                .map(|&(d, c)| docs[d].chunks[c].clone())
                .collect();
            (batch.to_vec(), inputs)
        })
        .collect()
}

/// A finished batch: its vectors go to their chunks; a failure marks every
/// document it touched as failed (the first failure is kept).
fn take_batch(docs: &mut [Pending], batch: &Batch, result: Result<Vec<Vec<f32>>, TaskFailed>) {
    match result {
        Ok(vectors) => {
            for (&(d, c), v) in batch.iter().zip(vectors) {
                docs[d].vectors[c] = Some(v);
            }
        }
        Err(e) => {
            for &(d, _) in batch {
                docs[d].failed.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Where embedded documents go: staged in the knowledge base, committed in
/// groups, counted and reported.
struct Out<'a> {
    writer: Lent,
    /// (the line to show once committed, chunks) per staged document.
    staged: Vec<(String, usize)>,
    summary: Summary,
    progress: &'a dyn Progress,
}

impl Out<'_> {
    /// Read `path` and cut its text into chunks, unless it cannot be read
    /// (a failure), or its content is in the knowledge base already or among
    /// the documents of this run (`earlier`) (skipped); each is said.
    async fn read(&mut self, path: &Path, earlier: &[Pending]) -> Option<Pending> {
        let p = path.to_path_buf();
        let read = blocking::run(move || {
            let bytes = read::read(&p, FileKind::Document)?
                .ok_or_else(|| FileError::new(&p, "cannot read: no such file"))?;
            Ok::<_, FileError>((sha256_hex(&bytes), bytes))
        })
        .await;
        let (hash, bytes) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.failed(format!("❌ {e}")),
            Err(e) => return self.failed(format!("❌ {}: cannot read: {e}", path.display())),
        };
        if let Some(id) = self.writer.known(&hash) {
            let line = format!("⏭️  {}: already indexed as {id}", path.display());
            return self.skipped(line);
        }
        if let Some(first) = earlier.iter().find(|d| d.hash == hash) {
            let line = format!(
                "⏭️  {}: same content as {}",
                path.display(),
                first.path.display()
            );
            return self.skipped(line);
        }
        let p = path.to_path_buf();
        let text = match tokio::task::spawn_blocking(move || text_of(&p, &bytes)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return self.failed(format!("❌ {e}")),
            Err(e) => return self.failed(format!("❌ {}: {e}", path.display())),
        };
        let chunks = chunk_text(&text);
        Some(Pending {
            path: path.to_path_buf(),
            text,
            hash,
            vectors: vec![None; chunks.len()],
            chunks,
            failed: None,
        })
    }

    /// A file that could not be read: said and counted.
    fn failed(&mut self, line: String) -> Option<Pending> {
        self.progress.problem(line);
        self.summary.failed += 1;
        None
    }

    /// A file whose content is indexed already: said and counted.
    fn skipped(&mut self, line: String) -> Option<Pending> {
        self.progress.line(line);
        self.summary.skipped += 1;
        None
    }

    /// Write the staged documents' index entries; say which are in. False
    /// when the knowledge base could not be written (nothing more should be
    /// tried).
    async fn commit(&mut self) -> bool {
        if self.staged.is_empty() {
            return true;
        }
        let s = &mut self.summary;
        match self.writer.with(Writer::commit).await {
            Ok(_) => {
                for (line, chunks) in self.staged.drain(..) {
                    self.progress.line(line);
                    s.added += 1;
                    s.chunks += chunks;
                }
                true
            }
            Err(e) => {
                let n = self.staged.len();
                self.progress
                    .problem(format!("❌ {e}; {n} document(s) not saved"));
                s.failed += n;
                self.staged.clear();
                false
            }
        }
    }

    /// Stage one document whose chunks are all embedded (or say why not).
    async fn stage(&mut self, doc: &mut Pending) {
        let failed = |s: &mut Summary, line: String| {
            self.progress.problem(line);
            s.failed += 1;
        };
        if let Some(e) = &doc.failed {
            let line = format!(
                "❌ {}: not indexed: could not embed its chunks ({e})",
                doc.path.display()
            );
            return failed(&mut self.summary, line);
        }
        if doc.chunks.is_empty() {
            let line = format!("❌ {}: no text to index", doc.path.display());
            return failed(&mut self.summary, line);
        }
        let vectors: Vec<Vec<f32>> = doc.vectors.iter_mut().filter_map(Option::take).collect();
        let (path, hash) = (doc.path.clone(), doc.hash.clone());
        let text = std::mem::take(&mut doc.text);
        let chunks = std::mem::take(&mut doc.chunks);
        let n = chunks.len();
        let staged_as = self
            .writer
            .with(move |w| w.stage(&path, &text, &chunks, &vectors, &hash))
            .await;
        match staged_as {
            Ok(id) => {
                let line = format!(
                    "📄 {} → {id} ({n} chunk{})",
                    doc.path.display(),
                    if n == 1 { "" } else { "s" }
                );
                self.staged.push((line, n));
            }
            Err(e) => {
                let line = format!("❌ {}: not indexed: {e}", doc.path.display());
                failed(&mut self.summary, line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_spread_over_the_hosts() {
        assert_eq!(batch_size(0, 3), 1);
        assert_eq!(batch_size(10, 3), 1);
        assert_eq!(batch_size(120, 3), 10);
        assert_eq!(batch_size(400, 3), 15);
        assert_eq!(batch_size(400, 1), 16);
        assert_eq!(batch_size(10_000, 3), MAX_BATCH);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
