//! RAG benchmarks (loopback only, in a temporary folder).
//!
//! 1. Search over a FlockParser knowledge base of 50,000 chunks × 1024
//!    dimensions (chunk files as FlockParser writes them: text plus the
//!    embedding as JSON floats): load time, memory against the raw vectors, and
//!    the latency of one search (top 15, floor 0.5) with and without reading
//!    the hits' texts — against the original's approach measured in the same
//!    run: parse every chunk file and compute every cosine on each query
//!    (here in Rust, one thread, so faster than the Python original).
//! 2. `rag index` of 200 documents (400 chunks) on simulated hosts, 3 hosts
//!    against 1, with the same per-request embedding cost on each host.
//!
//! cargo run --release --example bench_rag [-- CHUNKS]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use synapticllamas::config::nodes_file::NodeEntry;
use synapticllamas::nodes::Node;
use synapticllamas::ollama::Client;
use synapticllamas::rag::context::MIN_SIMILARITY;
use synapticllamas::rag::embed::Embedder;
use synapticllamas::rag::index::Index;
use synapticllamas::rag::indexer::{self, Progress};
use synapticllamas::rag::kb;
use synapticllamas::rag::writer::Writer;
use synapticllamas::scheduler::Scheduler;
use synapticllamas::sim::{SimConfig, SimHost};

const DIMS: usize = 1024;
const CHUNKS_PER_DOC: usize = 100;
const QUERIES: usize = 100;
const ORIGINAL_QUERIES: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal, mean 0.
    fn gauss(&mut self) -> f64 {
        (0..4)
            .map(|_| (self.next() % 10_000) as f64 / 10_000.0)
            .sum::<f64>()
            - 2.0
    }
    fn unit(&mut self) -> Vec<f64> {
        let v: Vec<f64> = (0..DIMS).map(|_| self.gauss()).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

const WORDS: &[&str] = &[
    "tide", "moon", "ocean", "gravity", "press", "type", "printer", "book", "europe", "history",
    "model", "vector", "river", "delta", "basin", "glacier", "rock", "layer", "study", "result",
];

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.95) as usize).min(v.len() - 1)]
}

/// A knowledge base as FlockParser's CLI writes it; returns some stored vectors
/// (to derive queries from).
fn write_kb(root: &Path, chunks: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let kbd = root.join(kb::KB_DIR);
    std::fs::create_dir_all(&kbd).unwrap();
    let mut docs = Vec::new();
    let mut samples = Vec::new();
    for d in 0..chunks.div_ceil(CHUNKS_PER_DOC) {
        let id = format!("doc_{}", d + 1);
        let mut refs = Vec::new();
        for c in 0..CHUNKS_PER_DOC.min(chunks - d * CHUNKS_PER_DOC) {
            let v = rng.unit();
            if samples.len() < QUERIES && rng.next().is_multiple_of(200) {
                samples.push(v.clone());
            }
            let file = kbd.join(format!("{id}_chunk_{c}.json"));
            let body = json!({"text": words(rng, 160), "embedding": v});
            let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
            serde_json::to_writer(&mut f, &body).unwrap();
            f.flush().unwrap();
            refs.push(json!({"chunk_id": format!("{id}_chunk_{c}"), "file": file}));
        }
        docs.push(
            json!({"id": id, "original": format!("/papers/paper{}.pdf", d + 1),
                         "text_path": "", "processed_date": "", "chunks": refs}),
        );
    }
    std::fs::write(
        kb::cli_index(root),
        serde_json::to_vec(&json!({ "documents": docs })).unwrap(),
    )
    .unwrap();
    samples
}

#[derive(Deserialize)]
struct ChunkFile {
    text: String,
    embedding: Vec<f64>,
}

/// The original's search: read the index, parse every chunk file, compute every
/// cosine, keep those ≥ 0.5, sort, take 15.
fn original_search(root: &Path, q: &[f64]) -> Vec<(String, f64)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(kb::cli_index(root)).unwrap()).unwrap();
    let qn = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut found = Vec::new();
    for d in index["documents"].as_array().unwrap() {
        for c in d["chunks"].as_array().unwrap() {
            let bytes = std::fs::read(c["file"].as_str().unwrap()).unwrap();
            let chunk: ChunkFile = serde_json::from_slice(&bytes).unwrap();
            let dot: f64 = chunk.embedding.iter().zip(q).map(|(a, b)| a * b).sum();
            let n = chunk.embedding.iter().map(|x| x * x).sum::<f64>().sqrt();
            let sim = if n == 0.0 || qn == 0.0 {
                0.0
            } else {
                dot / (n * qn)
            };
            if sim >= MIN_SIMILARITY as f64 {
                found.push((chunk.text, sim));
            }
        }
    }
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    found.truncate(15);
    found
}

fn search_bench(chunks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut rng = Rng(0x5EED);
    eprintln!("writing {chunks} chunk files of {DIMS} dimensions…");
    let t = Instant::now();
    let samples = write_kb(root, chunks, &mut rng);
    let bytes_on_disk: u64 = std::fs::read_dir(root.join(kb::KB_DIR))
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "  {:.1}s, {:.0} MiB on disk",
        t.elapsed().as_secs_f64(),
        bytes_on_disk as f64 / 1048576.0
    );
    // Queries near stored vectors (cosine about 0.8 to one chunk).
    let queries: Vec<Vec<f64>> = (0..QUERIES)
        .map(|i| {
            let base = &samples[i % samples.len()];
            let noise = rng.unit();
            base.iter()
                .zip(&noise)
                .map(|(b, n)| b * 0.8 + n * 0.6)
                .collect()
        })
        .collect();
    let q32: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| q.iter().map(|&x| x as f32).collect())
        .collect();

    let rss_before = rss_mib();
    let t = Instant::now();
    let loaded = Index::load(root, &|_, _| {});
    let load_s = t.elapsed().as_secs_f64();
    let rss_after = rss_mib();
    let idx = loaded.index;
    assert_eq!(idx.chunks(), chunks, "{:?}", loaded.problems);
    let raw = (chunks * DIMS * 4) as f64 / 1048576.0;
    let heap = idx.heap_bytes() as f64 / 1048576.0;

    let time = |f: &dyn Fn(&[f32]) -> usize| -> (Vec<f64>, usize) {
        let mut ms = Vec::new();
        let mut hits = 0;
        for q in &q32 {
            let t = Instant::now();
            hits += f(q);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        (ms, hits)
    };
    let (scan, hits) = time(&|q| idx.search(q, 15, MIN_SIMILARITY).len());
    let (scan_all, _) = time(&|q| idx.search(q, 15, -1.0).len());
    let (with_text, _) = time(&|q| {
        idx.search(q, 15, MIN_SIMILARITY)
            .iter()
            .filter(|h| kb::read_text_of(idx.row(h.row).2).is_ok())
            .count()
    });
    let mut orig = Vec::new();
    let mut orig_hits = 0;
    for q in queries.iter().take(ORIGINAL_QUERIES) {
        let t = Instant::now();
        orig_hits += original_search(root, q).len();
        orig.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Both find the same number of chunks for the same queries.
    let ours_first: usize = q32
        .iter()
        .take(ORIGINAL_QUERIES)
        .map(|q| idx.search(q, 15, MIN_SIMILARITY).len())
        .sum();
    assert_eq!(ours_first, orig_hits, "the same hits as the original's way");

    let orig_med = median(orig.clone());
    println!(
        "### Search: {chunks} chunks × {DIMS} dimensions ({:.0} MiB of chunk files)\n",
        bytes_on_disk as f64 / 1048576.0
    );
    println!("| | median (ms) | p95 (ms) | queries |");
    println!("|---|---|---|---|");
    println!(
        "| this port: scan, top 15, floor 0.5 | {:.2} | {:.2} | {QUERIES} |",
        median(scan.clone()),
        p95(scan.clone())
    );
    println!("| this port: scan, top 15, no floor (partial sort of all {chunks}) | {:.2} | {:.2} | {QUERIES} |", median(scan_all.clone()), p95(scan_all));
    println!(
        "| this port: scan + read the hits' texts | {:.2} | {:.2} | {QUERIES} |",
        median(with_text.clone()),
        p95(with_text.clone())
    );
    println!("| original's way: parse every chunk file per query (Rust, 1 thread) | {:.0} | {:.0} | {ORIGINAL_QUERIES} |", orig_med, p95(orig));
    println!();
    println!(
        "Speed-up per query (original's way ÷ scan + texts): {:.0}×. Hits per query: {:.2}.",
        orig_med / median(with_text),
        hits as f64 / QUERIES as f64
    );
    println!(
        "Load once: {load_s:.1} s on {} threads. Memory: raw vectors {raw:.1} MiB; index {heap:.1} MiB ({:.3}× the raw vectors); process RSS grew {:.1} MiB ({:.2}×).",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        heap / raw,
        rss_after - rss_before,
        (rss_after - rss_before) / raw
    );
    println!();
}

struct Quiet;

impl Progress for Quiet {
    fn line(&self, _: String) {}
    fn problem(&self, line: String) {
        eprintln!("{line}");
    }
    fn notice(&self, line: String) {
        eprintln!("{line}");
    }
    fn planned(&self, _: usize) {}
    fn embedded(&self, _: usize) {}
}

fn embed_host_cfg() -> SimConfig {
    SimConfig {
        models: vec!["mxbai-embed-large:latest".into()],
        // ≈ 18 ms of embedding per 230-word chunk, plus 20 ms per request.
        tokens_per_sec: 800.0,
        ttft_ms: 20,
        ..SimConfig::default()
    }
}

async fn index_once(hosts: usize, files: &[PathBuf]) -> (f64, usize) {
    let mut sims = Vec::new();
    let mut nodes = Vec::new();
    for h in 0..hosts {
        let s = SimHost::start(
            format!("h{h}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[0],
            embed_host_cfg(),
        )
        .await
        .unwrap();
        nodes.push(Arc::new(Node::new(
            NodeEntry {
                url: s.url(),
                name: format!("h{h}"),
                priority: 0,
                host_id: Some(format!("host-{h}")),
                extra: Default::default(),
            },
            false,
        )));
        sims.push(s);
    }
    let client = Client::default();
    let sched = Scheduler::new(client.clone());
    let embedder = Embedder::new(
        &client,
        sched,
        &nodes,
        "mxbai-embed-large",
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    let kbdir = tempfile::tempdir().unwrap();
    let writer = Writer::open(kbdir.path()).unwrap();
    let t = Instant::now();
    let s = indexer::run(writer, files, &embedder, &Quiet).await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((s.added, s.failed), (files.len(), 0));
    (secs, s.chunks)
}

fn index_bench(rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xD0C5);
    let files: Vec<PathBuf> = (0..200)
        .map(|i| {
            let p = dir.path().join(format!("doc{i:03}.txt"));
            let text = format!("{}.\n\n{}.", words(&mut rng, 230), words(&mut rng, 230));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();
    let mut rows = Vec::new();
    for hosts in [1, 3] {
        let mut times = Vec::new();
        let mut chunks = 0;
        for _ in 0..3 {
            let (s, c) = rt.block_on(index_once(hosts, &files));
            times.push(s);
            chunks = c;
        }
        rows.push((hosts, median(times), chunks));
    }
    let one = rows[0].1;
    println!("### `rag index`: 200 documents on simulated hosts\n");
    println!("| hosts | median of 3 (s) | chunks | speed-up vs 1 host |");
    println!("|---|---|---|---|");
    for (h, s, c) in &rows {
        println!("| {h} | {s:.2} | {c} | {:.2}× |", one / s);
    }
    println!();
    println!(
        "Each host: one request at a time, 20 ms per request plus ≈ 18 ms per chunk of 230 words (tokens_per_sec 800, one token per 16 words); batch size {} on 1 host, {} on 3.",
        indexer::batch_size(rows[0].2, 1),
        indexer::batch_size(rows[0].2, 3)
    );
}

fn main() {
    let chunks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    search_bench(chunks);
    index_bench(&rt);
}
