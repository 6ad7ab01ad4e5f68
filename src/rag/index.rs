//! The loaded knowledge base: every chunk's vector in one contiguous matrix,
//! each row normalised to unit length, so a cosine is a dot product. Texts stay
//! on disk and are read for the few chunks a search returns. Loaded once (in
//! parallel), reloaded when the index files or the chunk folder change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::kb::{self, Catalog};

/// A search's hit: a row of the matrix and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

#[derive(Debug)]
struct Doc {
    id: String,
    name: String,
}

#[derive(Debug)]
struct Row {
    doc: u32,
    file: PathBuf,
}

/// What changes when a knowledge base is modified: both index files and the
/// chunk folder (a file added, removed or replaced by rename changes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<(SystemTime, u64)>>);

impl Fingerprint {
    pub fn of(root: &Path) -> Fingerprint {
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        Fingerprint(vec![
            stamp(&kb::cli_index(root)),
            stamp(&kb::root_index(root)),
            stamp(&root.join(kb::KB_DIR)),
        ])
    }
}

#[derive(Debug)]
pub struct Index {
    dims: usize,
    /// rows × dims, row-major.
    vectors: Vec<f32>,
    rows: Vec<Row>,
    docs: Vec<Doc>,
}

/// A loaded index with what was skipped while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub index: Index,
    pub problems: Vec<String>,
    pub fingerprint: Fingerprint,
}

/// Below this many multiply-adds a search runs on one thread.
const PARALLEL_FROM: usize = 1 << 20;

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// A dot product written so the compiler vectorises it (eight lanes).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// The number of dimensions: the first readable chunk's (0 when none is).
fn first_dims(files: &[(u32, PathBuf)]) -> usize {
    for (_, f) in files {
        if let Ok(v) = kb::read_vector(f) {
            return v.len();
        }
    }
    0
}

/// Read every file's vector into its row of one matrix, normalised, on all
/// cores: (the matrix, which rows loaded, why the others did not). Without
/// `dims` (no readable chunk) each file is only read for its error.
fn read_all(
    files: &[(u32, PathBuf)],
    dims: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> (Vec<f32>, Vec<bool>, Vec<String>) {
    let total = files.len();
    let mut vectors = vec![0.0f32; total * dims.max(1)];
    let mut ok = vec![false; total];
    let mut errors: Vec<Vec<String>> = Vec::new();
    if dims > 0 && total > 0 {
        let done = AtomicUsize::new(0);
        let n = threads().min(total);
        let per = total.div_ceil(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = vectors
                .chunks_mut(per * dims)
                .zip(ok.chunks_mut(per))
                .zip(files.chunks(per))
                .map(|((out, ok), files)| {
                    let done = &done;
                    s.spawn(move || {
                        let mut errs = Vec::new();
                        for (j, (_, f)) in files.iter().enumerate() {
                            match read_row(f, dims, &mut out[j * dims..(j + 1) * dims]) {
                                Ok(()) => ok[j] = true,
                                Err(e) => errs.push(e.to_string()),
                            }
                            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if d.is_multiple_of(256) || d == total {
                                progress(d, total);
                            }
                        }
                        errs
                    })
                })
                .collect();
            for h in handles {
                errors.push(h.join().unwrap_or_default());
            }
        });
    } else {
        for (_, f) in files {
            if let Err(e) = kb::read_vector(f) {
                errors.push(vec![format!("{e}; skipped")]);
            }
        }
    }
    (vectors, ok, errors.into_iter().flatten().collect())
}

/// Read chunk file `f`'s vector into `row`, normalised; why not when it is
/// unreadable or has other than `dims` dimensions.
fn read_row(f: &Path, dims: usize, row: &mut [f32]) -> Result<(), RowError> {
    let v = kb::read_vector(f).map_err(RowError::Unreadable)?;
    if v.len() != dims {
        return Err(RowError::Dimensions {
            file: f.to_path_buf(),
            got: v.len(),
            want: dims,
        });
    }
    row.copy_from_slice(&v);
    normalise(row);
    Ok(())
}

/// Why one chunk's vector was left out of the index.
#[derive(Debug, thiserror::Error)]
enum RowError {
    #[error("{0}; skipped")]
    Unreadable(crate::config::FileError),
    #[error("{}: {got} dimensions where the knowledge base has {want}; skipped", file.display())]
    Dimensions {
        file: PathBuf,
        got: usize,
        want: usize,
    },
}

/// The rows that loaded (`ok`), in order: moved up in `vectors` (without a
/// second copy of the matrix), which is cut to them.
fn keep_loaded(
    vectors: &mut Vec<f32>,
    files: Vec<(u32, PathBuf)>,
    ok: &[bool],
    dims: usize,
) -> Vec<Row> {
    let mut rows = Vec::with_capacity(files.len());
    let mut kept = 0;
    for (i, (doc, file)) in files.into_iter().enumerate() {
        if !ok[i] {
            continue;
        }
        if kept != i {
            vectors.copy_within(i * dims..(i + 1) * dims, kept * dims);
        }
        rows.push(Row { doc, file });
        kept += 1;
    }
    vectors.truncate(kept * dims);
    vectors.shrink_to_fit();
    rows.shrink_to_fit();
    rows
}

/// The documents some row belongs to (one none of whose chunks loaded is not
/// counted), with the rows' document numbers changed to match.
fn keep_used(docs: Vec<Doc>, rows: &mut [Row]) -> Vec<Doc> {
    let mut used = vec![false; docs.len()];
    rows.iter().for_each(|r| used[r.doc as usize] = true);
    let mut remap = vec![0u32; docs.len()];
    let mut kept_docs = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if used[i] {
            remap[i] = kept_docs.len() as u32;
            kept_docs.push(d);
        }
    }
    rows.iter_mut().for_each(|r| r.doc = remap[r.doc as usize]);
    kept_docs
}

impl Index {
    /// Read every chunk file the catalog lists, on all cores. `progress(done,
    /// total)` is called as files are read.
    pub fn load(root: &Path, progress: &(dyn Fn(usize, usize) + Sync)) -> Loaded {
        let fingerprint = Fingerprint::of(root);
        let Catalog {
            docs: entries,
            mut problems,
            ..
        } = kb::read_catalog(root);
        let mut docs = Vec::new();
        let mut files: Vec<(u32, PathBuf)> = Vec::new();
        for (i, d) in entries.into_iter().enumerate() {
            docs.push(Doc {
                id: d.id,
                name: d.name,
            });
            files.extend(d.chunks.into_iter().map(|f| (i as u32, f)));
        }
        let dims = first_dims(&files);
        let (mut vectors, ok, errors) = read_all(&files, dims, progress);
        problems.extend(errors);
        let mut rows = keep_loaded(&mut vectors, files, &ok, dims);
        let docs = keep_used(docs, &mut rows);
        Loaded {
            index: Index {
                dims,
                vectors,
                rows,
                docs,
            },
            problems,
            fingerprint,
        }
    }

    /// An index built from vectors in memory (benchmarks, tests): `vectors`
    /// holds `files.len()` rows of `dims`; `files[i]` is (document name, chunk file).
    pub(crate) fn from_vectors(
        dims: usize,
        mut vectors: Vec<f32>,
        files: Vec<(String, PathBuf)>,
    ) -> Index {
        assert_eq!(vectors.len(), dims * files.len(), "one row per chunk file");
        vectors.chunks_mut(dims.max(1)).for_each(normalise);
        let mut docs: Vec<Doc> = Vec::new();
        let rows = files
            .into_iter()
            .map(|(name, file)| {
                let doc = match docs.iter().position(|d| d.name == name) {
                    Some(i) => i,
                    None => {
                        docs.push(Doc {
                            id: format!("doc_{}", docs.len() + 1),
                            name,
                        });
                        docs.len() - 1
                    }
                };
                Row {
                    doc: doc as u32,
                    file,
                }
            })
            .collect();
        Index {
            dims,
            vectors,
            rows,
            docs,
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn chunks(&self) -> usize {
        self.rows.len()
    }

    pub fn documents(&self) -> usize {
        self.docs.len()
    }

    /// Bytes held by the matrix and the row and document tables.
    pub fn heap_bytes(&self) -> usize {
        self.vectors.capacity() * 4
            + self.rows.capacity() * std::mem::size_of::<Row>()
            + self
                .rows
                .iter()
                .map(|r| r.file.as_os_str().len())
                .sum::<usize>()
            + self
                .docs
                .iter()
                .map(|d| std::mem::size_of::<Doc>() + d.id.len() + d.name.len())
                .sum::<usize>()
    }

    /// (document id, document name, chunk file) of a row.
    pub fn row(&self, row: usize) -> (&str, &str, &Path) {
        let r = &self.rows[row];
        let d = &self.docs[r.doc as usize];
        (&d.id, &d.name, &r.file)
    }

    /// The `k` rows most similar to `query` with a cosine of at least `min`,
    /// best first. `query` need not be normalised; it must have `dims()` values.
    pub fn search(&self, query: &[f32], k: usize, min: f32) -> Vec<Hit> {
        if k == 0 || self.rows.is_empty() || query.len() != self.dims {
            return Vec::new();
        }
        let mut q = query.to_vec();
        normalise(&mut q);
        let dims = self.dims;
        let scan = |start: usize, block: &[f32]| -> Vec<Hit> {
            let mut hits: Vec<Hit> = block
                .chunks_exact(dims)
                .enumerate()
                .filter_map(|(i, row)| {
                    let score = dot(row, &q);
                    (score >= min).then_some(Hit {
                        row: start + i,
                        score,
                    })
                })
                .collect();
            top(&mut hits, k);
            hits
        };
        let n = if self.vectors.len() >= PARALLEL_FROM {
            threads()
        } else {
            1
        };
        let mut hits = if n == 1 {
            scan(0, &self.vectors)
        } else {
            let per = self.rows.len().div_ceil(n);
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .vectors
                    .chunks(per * dims)
                    .enumerate()
                    .map(|(t, block)| {
                        let scan = &scan;
                        s.spawn(move || scan(t * per, block))
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect::<Vec<Hit>>()
            })
        };
        top(&mut hits, k);
        hits
    }
}

/// Keep the best `k` hits, best first (ties: the earlier row), by a partial sort.
fn top(hits: &mut Vec<Hit>, k: usize) {
    let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, order);
        hits.truncate(k);
    }
    hits.sort_unstable_by(order);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(rows: &[[f32; 3]]) -> Index {
        let files = (0..rows.len())
            .map(|i| (format!("d{}", i % 2), PathBuf::from(format!("c{i}"))))
            .collect();
        Index::from_vectors(3, rows.iter().flatten().copied().collect(), files)
    }

    #[test]
    fn search_ranks_by_cosine_with_a_floor_and_a_limit() {
        let idx = index(&[
            [1.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [1.0, 1.0, 0.0],
            [3.0, 0.1, 0.0],
        ]);
        let hits = idx.search(&[2.0, 0.0, 0.0], 2, 0.5);
        let rows: Vec<usize> = hits.iter().map(|h| h.row).collect();
        assert_eq!(rows, [0, 3]);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        let all = idx.search(&[1.0, 0.0, 0.0], 10, 0.5);
        assert_eq!(all.iter().map(|h| h.row).collect::<Vec<_>>(), [0, 3, 2]);
        assert!(idx.search(&[1.0, 0.0], 3, 0.0).is_empty(), "wrong length");
        assert!(
            idx.search(&[0.0, 0.0, 0.0], 3, 0.5).is_empty(),
            "a zero vector matches nothing"
        );
        assert_eq!(idx.documents(), 2);
    }

    #[test]
    fn parallel_scan_agrees_with_a_plain_one() {
        let dims = 256;
        let n = PARALLEL_FROM / dims + 37;
        let mut x: u64 = 7;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        };
        let vectors: Vec<f32> = (0..n * dims).map(|_| rnd()).collect();
        let q: Vec<f32> = (0..dims).map(|_| rnd()).collect();
        let files = (0..n)
            .map(|i| ("d".to_string(), PathBuf::from(i.to_string())))
            .collect();
        let idx = Index::from_vectors(dims, vectors, files);
        let got = idx.search(&q, 15, -1.0);
        let mut want: Vec<Hit> = (0..n)
            .map(|r| Hit {
                row: r,
                score: dot(&idx.vectors[r * dims..(r + 1) * dims], &{
                    let mut q = q.clone();
                    normalise(&mut q);
                    q
                }),
            })
            .collect();
        top(&mut want, 15);
        assert_eq!(got, want);
    }

    #[test]
    fn load_skips_bad_chunks_by_name_and_compacts_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let kbd = root.path().join(kb::KB_DIR);
        std::fs::create_dir(&kbd).unwrap();
        let mut chunks = Vec::new();
        for (i, body) in [
            json!({"text": "a", "embedding": [3.0, 4.0]}).to_string(),
            "{\"text\": \"b\", \"embedding\": [1.0,".to_string(),
            json!({"text": "c", "embedding": [1.0, 2.0, 3.0]}).to_string(),
            json!({"text": "d", "embedding": [0.0, 5.0]}).to_string(),
        ]
        .iter()
        .enumerate()
        {
            let p = kbd.join(format!("doc_1_chunk_{i}.json"));
            std::fs::write(&p, body).unwrap();
            chunks.push(json!({"chunk_id": format!("doc_1_chunk_{i}"), "file": p}));
        }
        std::fs::write(
            kb::cli_index(root.path()),
            json!({"documents": [{"id": "doc_1", "original": "/x/paper.pdf", "chunks": chunks}]})
                .to_string(),
        )
        .unwrap();
        let seen = AtomicUsize::new(0);
        let l = Index::load(root.path(), &|d, _| {
            seen.store(d, Ordering::Relaxed);
        });
        assert_eq!(seen.load(Ordering::Relaxed), 4);
        assert_eq!(l.index.chunks(), 2);
        assert_eq!(l.index.dims(), 2);
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(
            l.problems[0].contains("doc_1_chunk_1.json: line 1"),
            "{:?}",
            l.problems
        );
        assert!(l.problems[1].contains("doc_1_chunk_2.json: 3 dimensions"));
        assert_eq!(&l.index.vectors, &[0.6, 0.8, 0.0, 1.0]);
        assert_eq!(l.index.row(1).1, "paper.pdf");
        assert!(l.index.row(1).2.ends_with("doc_1_chunk_3.json"));
        assert_eq!(l.fingerprint, Fingerprint::of(root.path()));
    }
}
