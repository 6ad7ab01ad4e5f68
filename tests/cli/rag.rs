//! RAG end to end: the real binary, simulated hosts whose `/api/embed` gives
//! deterministic vectors where related texts are near, knowledge bases built
//! by `rag index`, written by hand in both FlockParser index flavours, or
//! served by a FlockParser-style API server in the test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use synapticllamas::sim::embed::embed;
use synapticllamas::sim::{SimConfig, SimHost};

use crate::support::*;

const EMBED_MODEL: &str = "mxbai-embed-large:latest";

const TIDES: &str = "Tides are the regular rise and fall of the ocean surface. The gravity of the moon pulls on the ocean, and the sun adds a smaller pull.\n\nSpring tides come at full moon and new moon, when sun and moon line up; neap tides come at the quarter moons. Most coasts see two high tides a day.";
const BREAD: &str = "# Sourdough bread\n\nSourdough bread rises with a starter of wild yeast and lactic acid bacteria instead of baker's yeast. The dough ferments slowly, which gives the bread its sour taste.\n\nBake sourdough bread in a hot oven, around 230 degrees, in a covered pot so the crust stays moist at first.";
const RUST: &str = "The Rust borrow checker enforces ownership rules at compile time. Each value has one owner; references are shared or mutable but never both at once. Lifetimes say how long references stay valid.";

/// A simulated host; `embeds` decides whether it has the embedding model.
fn host(embeds: bool, ttft_ms: u64) -> Arc<SimHost> {
    let mut models = vec!["llama3.2:latest".to_string()];
    if embeds {
        models.push(EMBED_MODEL.into());
    }
    sim(SimConfig {
        models,
        ttft_ms,
        reply_words: 60,
        ..SimConfig::default()
    })
}

/// A home with `hosts` as its nodes (each its own machine) and `settings`.
fn home_with(hosts: &[&Arc<SimHost>], settings: Value) -> Home {
    nodes_home(hosts, settings)
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// The knowledge base `rag index` writes when no `rag path` is set.
fn default_kb(home: &Home) -> PathBuf {
    home.path().join("FlockParser")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A standard-mode home with the three documents indexed by `rag index`.
fn indexed_home(hosts: &[&Arc<SimHost>]) -> Home {
    let home = home_with(
        hosts,
        json!({"mode": "standard", "flockparser_enabled": true}),
    );
    let docs = home.path().join("docs");
    write_files(
        &docs,
        &[
            ("tides.txt", TIDES),
            ("bread.md", BREAD),
            ("rust.txt", RUST),
        ],
    );
    run(&home, &[], &format!("rag index {}\n", docs.display()))
        .ok()
        .out_has("✅ Indexed 3 document(s), 3 chunk(s)");
    home
}

#[test]
fn the_right_document_is_retrieved_cited_and_listed() {
    let a = host(true, 0);
    let home = indexed_home(&[&a]);
    let r = run(&home, &["-i", "How does the moon cause ocean tides?"], "");
    r.ok()
        .err_has("📚 RAG for the question: 1 excerpt(s) from 1 document(s)");
    let v = json_of(&r);
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{v:#}");
    assert_eq!(sources[0]["name"], "tides.txt");
    assert_eq!(sources[0]["cited"], true);
    assert!(sources[0]["similarity"].as_f64().unwrap() >= 0.55, "{v:#}");
    let answer = v["final_output"].as_str().unwrap();
    // The simulated model cites only what a prompt offers for citation.
    assert!(answer.contains("[1]"), "{answer}");
    assert!(
        answer.ends_with("\n\n## 📚 Source Documents\n1. tides.txt"),
        "{answer}"
    );
    assert_eq!(v["rag"]["retrievals"][0]["node"], "node-1");
    assert_eq!(v["rag"]["model"], "mxbai-embed-large");
    // A second question finds the other document.
    let r = run(
        &home,
        &["-i", "What temperature to bake sourdough bread?"],
        "",
    );
    assert_eq!(json_of(&r)["sources"][0]["name"], "bread.md");
}

#[test]
fn the_gate_drops_off_topic_questions_and_says_so() {
    let a = host(true, 0);
    let home = indexed_home(&[&a]);
    let r = run(&home, &["-i", "Which chess openings suit beginners?"], "");
    r.ok().err_has("📚 RAG skipped for the question:");
    let v = json_of(&r);
    assert_eq!(v["sources"], json!([]));
    assert!(v["rag"]["retrievals"][0]["skipped"].is_string());
    let answer = v["final_output"].as_str().unwrap();
    assert!(!answer.contains("Source Documents"), "{answer}");
    assert!(!answer.contains("[1]"), "no sources were offered: {answer}");
}

#[test]
fn long_answers_retrieve_per_part_in_parallel_across_hosts() {
    let hosts: Vec<Arc<SimHost>> = (0..3).map(|_| host(true, 250)).collect();
    let home = home_with(
        &hosts.iter().collect::<Vec<_>>(),
        json!({"mode": "distributed", "flockparser_enabled": true}),
    );
    let docs = home.path().join("docs");
    write_files(
        &docs,
        &[
            ("gutenberg.txt", "Johannes Gutenberg built the printing press with movable metal type in Mainz around 1450. His press printed the Gutenberg Bible, and printing in Europe began there."),
            ("venice.txt", "The printing press spread across Europe after Mainz: by 1500 printers in Venice, Paris and Lyon had printed thousands of books, the incunabula, and the history of the book changed."),
            ("frontiers.txt", "Research frontiers in the history of printing: open problems include how many presses Europe had, and future directions use digital methods to study the spread of the printing press."),
            ("bread.md", BREAD),
        ],
    );
    run(&home, &[], &format!("rag index {}\n", docs.display())).ok();
    let before: Vec<u64> = hosts.iter().map(|h| h.stats().embed_requests).collect();
    let r = run(
        &home,
        &[
            "-i",
            "!long Explain the history of the printing press in Europe",
        ],
        "",
    );
    r.ok().err_has("Detected long-form research (est. 5 parts)");
    let v = json_of(&r);
    let retrievals = v["rag"]["retrievals"].as_array().unwrap();
    let parts: Vec<u64> = retrievals
        .iter()
        .map(|x| x["part"].as_u64().unwrap())
        .collect();
    assert_eq!(parts, [1, 2, 3, 4, 5]);
    // One embedding request per retrieval, on every host, overlapping in time.
    let per_host: Vec<u64> = hosts
        .iter()
        .zip(&before)
        .map(|(h, b)| h.stats().embed_requests - b)
        .collect();
    assert_eq!(per_host.iter().sum::<u64>(), 5, "{per_host:?}");
    assert!(
        per_host.iter().all(|&n| n >= 1),
        "every host embedded: {per_host:?}"
    );
    let spans: Vec<(usize, Instant, Instant)> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.embed_spans().into_iter().map(move |(s, e)| (i, s, e)))
        .collect();
    let overlap = spans
        .iter()
        .any(|a| spans.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(
        overlap,
        "embeddings on different hosts ran at the same time: {spans:?}"
    );
    for h in &hosts {
        assert_eq!(h.stats().max_in_flight, 1, "one request per host at a time");
    }
    // Sources from every retrieval are listed, renumbered in first-cited order.
    let sources = v["sources"].as_array().unwrap();
    assert!(sources.len() >= 2, "{v:#}");
    assert!(
        sources
            .iter()
            .any(|s| s["parts"].as_array().unwrap().iter().any(|p| p != 1)),
        "a part's own retrieval is in the list: {sources:?}"
    );
    assert!(sources.iter().all(|s| s["name"] != "bread.md"));
    let answer = v["final_output"].as_str().unwrap();
    let mut first_seen = Vec::new();
    for n in answer
        .split('[')
        .skip(1)
        .filter_map(|s| s.split(']').next()?.parse::<usize>().ok())
    {
        if !first_seen.contains(&n) {
            first_seen.push(n);
        }
    }
    let cited = sources.iter().filter(|s| s["cited"] == true).count();
    assert!(cited >= 1);
    assert_eq!(first_seen, (1..=cited).collect::<Vec<_>>(), "{answer}");
    let list = answer.split("## 📚 Source Documents\n").nth(1).unwrap();
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split_once(". ").unwrap().1)
        .collect();
    let want: Vec<&str> = sources
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, want);
}

#[test]
fn nodes_without_the_embedding_model_are_not_asked() {
    let with = host(true, 0);
    let without = host(false, 0);
    let home = indexed_home(&[&without, &with]);
    assert_eq!(
        without.stats().embed_requests,
        0,
        "rag index asked only the node with the model"
    );
    let mut s = home.settings();
    s["mode"] = json!("distributed");
    home.write_settings(s.to_string().as_bytes());
    let r = run(
        &home,
        &["-i", "!long Explain how the moon causes ocean tides"],
        "",
    );
    r.ok();
    let v = json_of(&r);
    assert!(v["rag"]["retrievals"].as_array().unwrap().len() > 1);
    for x in v["rag"]["retrievals"].as_array().unwrap() {
        assert_eq!(x["node"], "node-2", "{x}");
    }
    assert_eq!(without.stats().embed_requests, 0);
    assert!(
        without.stats().requests > 0,
        "it still writes parts of the answer"
    );

    // Nobody has the model: said once, the answer comes without documents.
    let home = home_with(
        &[&without],
        json!({"mode": "distributed", "flockparser_enabled": true}),
    );
    let kb = indexed_kb_copy(&home);
    assert!(kb.is_dir());
    let r = run(
        &home,
        &["-i", "Explain how the moon causes ocean tides"],
        "",
    );
    r.ok();
    assert_eq!(
        r.stderr
            .matches("no node has the embedding model mxbai-embed-large")
            .count(),
        1,
        "{}",
        r.stderr
    );
    let v = json_of(&r);
    assert!(v["rag"].is_null() && v["sources"] == json!([]), "{v:#}");
    assert!(!v["final_output"]
        .as_str()
        .unwrap()
        .contains("Source Documents"));
    assert_eq!(without.stats().embed_requests, 0);
}

/// A knowledge base with the tides document, written as FlockParser does
/// (without asking any node), in `home`'s default place.
fn indexed_kb_copy(home: &Home) -> PathBuf {
    let root = default_kb(home);
    let kb = root.join("knowledge_base");
    std::fs::create_dir_all(&kb).unwrap();
    let f = kb.join("doc_1_chunk_0.json");
    std::fs::write(
        &f,
        json!({"text": TIDES, "embedding": embed(TIDES, 1024)}).to_string(),
    )
    .unwrap();
    std::fs::write(
        kb.join("document_index.json"),
        json!({"documents": [{"id": "doc_1", "original": "/p/tides.pdf",
                              "chunks": [{"chunk_id": "doc_1_chunk_0", "file": f}]}]})
        .to_string(),
    )
    .unwrap();
    root
}

#[test]
fn both_index_flavours_are_read_and_a_corrupt_chunk_is_skipped_by_name() {
    let a = host(true, 0);
    let home = home_with(
        &[&a],
        json!({"mode": "standard", "flockparser_enabled": true}),
    );
    let root = home.path().join("kb");
    let kbd = root.join("knowledge_base");
    std::fs::create_dir_all(&kbd).unwrap();
    let chunk = |name: &str, text: &str| {
        std::fs::write(
            kbd.join(name),
            json!({"text": text, "embedding": embed(text, 1024)}).to_string(),
        )
        .unwrap();
    };
    chunk("doc_1_chunk_0.json", TIDES);
    chunk("doc_2_chunk_0.json", RUST);
    std::fs::write(
        kbd.join("doc_3_chunk_0.json"),
        "{\"text\": \"broken\", \"embedding\": [0.1,",
    )
    .unwrap();
    // The root flavour (create_document_index.py): integer ids, a relative path.
    std::fs::write(
        root.join("document_index.json"),
        json!({"documents": [{"id": "doc_1", "original": "/home/joker/FlockParser/testpdfs/tides.pdf",
                              "chunk_count": 1,
                              "chunks": [{"chunk_id": 0, "file": "knowledge_base/doc_1_chunk_0.json"}]}],
               "created": "2025-10-04", "version": "1.0"})
        .to_string(),
    )
    .unwrap();
    // The CLI flavour: string ids, absolute paths from another machine.
    std::fs::write(
        kbd.join("document_index.json"),
        json!({"documents": [
            {"id": "doc_2", "original": "/home/joker/papers/rust.pdf", "text_path": "/x.txt",
             "processed_date": "2025-10-01T10:00:00",
             "chunks": [{"chunk_id": "doc_2_chunk_0", "file": "/home/joker/FlockParser/knowledge_base/doc_2_chunk_0.json"}]},
            {"id": "doc_3", "original": "/home/joker/papers/broken.pdf",
             "chunks": [{"chunk_id": "doc_3_chunk_0", "file": "/home/joker/FlockParser/knowledge_base/doc_3_chunk_0.json"}]}]})
        .to_string(),
    )
    .unwrap();
    let r = run(
        &home,
        &[],
        &format!("rag path {}\nstatus\n", root.display()),
    );
    r.ok()
        .out_has("| FlockParser RAG    | ON (2 docs, 2 chunks)")
        .err_has("doc_3_chunk_0.json: line 1, column");
    assert_eq!(
        r.stderr.matches("doc_3_chunk_0.json").count(),
        1,
        "{}",
        r.stderr
    );
    let r = run(&home, &["-i", "How does the moon cause ocean tides?"], "");
    r.ok().err_has("doc_3_chunk_0.json");
    assert_eq!(json_of(&r)["sources"][0]["name"], "tides.pdf");
    let r = run(
        &home,
        &["-i", "What does the Rust borrow checker enforce?"],
        "",
    );
    assert_eq!(json_of(&r)["sources"][0]["name"], "rust.pdf");
}

/// A FlockParser API server (`/health`, `/stats`, `/query`) over chunks in
/// memory; it keeps the `/query` bodies it was sent.
struct FakeFlockParser {
    chunks: Vec<(String, String)>,
    queries: Mutex<Vec<Value>>,
}

async fn fp_health() -> Json<Value> {
    Json(json!({"status": "healthy", "available": true, "document_index_exists": true}))
}

async fn fp_stats(State(fp): State<Arc<FakeFlockParser>>) -> Json<Value> {
    let mut names: Vec<&str> = fp.chunks.iter().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    Json(
        json!({"available": true, "documents": names.len(), "chunks": fp.chunks.len(),
                "document_names": names}),
    )
}

async fn fp_query(State(fp): State<Arc<FakeFlockParser>>, Json(q): Json<Value>) -> Json<Value> {
    fp.queries.lock().unwrap().push(q.clone());
    let v: Vec<f32> = serde_json::from_value(q["query_embedding"].clone()).unwrap_or_default();
    let min = q["min_similarity"].as_f64().unwrap_or(0.0) as f32;
    let mut found: Vec<Value> = fp
        .chunks
        .iter()
        .enumerate()
        .filter_map(|(i, (name, text))| {
            let sim: f32 = embed(text, 1024).iter().zip(&v).map(|(a, b)| a * b).sum();
            (sim >= min).then(|| json!({"text": text, "doc_name": name, "similarity": sim, "doc_id": format!("doc_{}", i + 1)}))
        })
        .collect();
    found.sort_by(|a, b| {
        let sim = |v: &Value| v["similarity"].as_f64().unwrap_or(f64::NAN);
        sim(b).total_cmp(&sim(a))
    });
    let total = found.len();
    found.truncate(q["top_k"].as_u64().unwrap_or(15) as usize);
    Json(json!({"chunks": found, "total_found": total}))
}

#[test]
fn a_remote_flockparser_server_is_queried_with_the_embedding() {
    let fp = Arc::new(FakeFlockParser {
        chunks: vec![
            ("tides.pdf".into(), TIDES.into()),
            ("bread.pdf".into(), BREAD.into()),
            (
                "bread.pdf".into(),
                "Sourdough starters need feeding with flour and water.".into(),
            ),
        ],
        queries: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/health", get(fp_health))
        .route("/stats", get(fp_stats))
        .route("/query", post(fp_query))
        .with_state(fp.clone());
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt().spawn(async move { axum::serve(listener, app).await });

    let a = host(true, 0);
    let home = home_with(&[&a], json!({"mode": "standard"}));
    let r = run(&home, &[], &format!("rag path {url}\nrag on\nstatus\n"));
    r.ok()
        .out_has(&format!("✅ RAG knowledge base: {url} (saved)"))
        .out_has(&format!("📚 Knowledge base {url}: 2 docs, 3 chunks"))
        .out_has("| FlockParser RAG    | ON (2 docs, 3 chunks)");
    assert_eq!(home.settings()["rag_path"], url.as_str());
    let r = run(&home, &["-i", "How does the moon cause ocean tides?"], "");
    r.ok();
    let v = json_of(&r);
    assert_eq!(v["sources"][0]["name"], "tides.pdf", "{v:#}");
    assert_eq!(v["rag"]["knowledge_base"], url.as_str());
    let q = fp.queries.lock().unwrap().last().cloned().unwrap();
    assert_eq!(q["query"], "How does the moon cause ocean tides?");
    assert_eq!(q["top_k"], 15);
    assert_eq!(q["min_similarity"], 0.5);
    assert_eq!(q["query_embedding"].as_array().unwrap().len(), 1024);
    assert_eq!(
        a.stats().embed_requests,
        1,
        "the embedding came from the node"
    );

    // A server that does not answer: said, and the answer comes without documents.
    let gone = format!("http://127.0.0.1:{}", dead_port());
    let home = home_with(
        &[&a],
        json!({"mode": "standard", "flockparser_enabled": true, "rag_path": gone}),
    );
    let r = run(&home, &["-i", "How does the moon cause ocean tides?"], "");
    r.ok()
        .err_has(&format!("⚠️  RAG: {gone}/health: no answer"));
    assert_eq!(json_of(&r)["sources"], json!([]));
}

#[test]
fn rag_commands_save_their_settings_and_check_their_arguments() {
    let home = Home::new();
    let r = run(
        &home,
        &[],
        "status\nrag on\nstatus\nrag model nomic-embed-text\nrag path ~/papers kb\nrag off\n",
    );
    r.ok()
        .out_has("| FlockParser RAG    | OFF")
        .out_has("| FlockParser RAG    | ON (no documents)")
        .out_has("✅ RAG embedding model set to: nomic-embed-text (saved)")
        .err_has("does not exist yet; `rag index PATH…` will create it");
    let s = home.settings();
    assert_eq!(s["rag_model"], "nomic-embed-text");
    assert_eq!(
        s["rag_path"],
        home.path().join("papers kb").display().to_string()
    );
    assert_eq!(s["flockparser_enabled"], false);
    for (line, expect) in [
        ("rag", "expected on, off, path, model or index"),
        ("rag maybe", "unknown sub-command `maybe`"),
        ("rag model a;b", "`a;b` is not a valid model name"),
        ("rag index", "`rag index` needs files or folders"),
        (
            "rag path ftp://x",
            "only http:// and https:// URLs are supported",
        ),
    ] {
        let before = std::fs::read(home.settings_path()).unwrap();
        let r = run(&home, &[], &format!("{line}\n"));
        r.failed().err_has(expect);
        assert_eq!(
            std::fs::read(home.settings_path()).unwrap(),
            before,
            "{line}"
        );
    }
    let r = run(&home, &[], "rag path http://127.0.0.1:9\nrag index /tmp\n");
    r.failed()
        .err_has("rag index writes a local knowledge base");
}

#[test]
fn rag_index_writes_flockparsers_format_and_resumes() {
    let a = host(true, 0);
    let home = home_with(&[&a], json!({"mode": "standard"}));
    let docs = home.path().join("docs");
    write_files(
        &docs,
        &[("tides.txt", TIDES), ("notes.docx", "x"), ("bad.md", "")],
    );
    std::fs::write(docs.join("latin1.txt"), b"caf\xe9").unwrap();
    let r = run(
        &home,
        &[],
        &format!(
            "rag index {} {}\n",
            docs.display(),
            docs.join("notes.docx").display()
        ),
    );
    r.failed()
        .out_has("tides.txt → doc_1 (1 chunk)")
        .err_has("notes.docx: not a .txt, .md or .pdf file")
        .err_has("latin1.txt: not UTF-8 text (byte 4)")
        .err_has("bad.md: no text in the file");
    let root = default_kb(&home);
    // The CLI flavour, as FlockParser's CLI writes it.
    let cli = read_json(&root.join("knowledge_base/document_index.json"));
    let d = &cli["documents"][0];
    assert_eq!(d["id"], "doc_1");
    assert_eq!(d["original"], docs.join("tides.txt").display().to_string());
    assert_eq!(d["chunks"][0]["chunk_id"], "doc_1_chunk_0");
    assert!(Path::new(d["text_path"].as_str().unwrap()).is_file());
    let chunk = read_json(Path::new(d["chunks"][0]["file"].as_str().unwrap()));
    assert_eq!(chunk.as_object().unwrap().len(), 2);
    assert_eq!(chunk["text"], TIDES);
    assert_eq!(chunk["embedding"].as_array().unwrap().len(), 1024);
    // The root flavour, which the original and FlockParser's API server read.
    let rooti = read_json(&root.join("document_index.json"));
    assert_eq!(rooti["documents"][0]["chunks"][0]["chunk_id"], 0);
    assert_eq!(
        rooti["documents"][0]["chunks"][0]["file"],
        d["chunks"][0]["file"]
    );

    // A second run adds only what is new.
    write_files(&docs, &[("bread.md", BREAD)]);
    std::fs::remove_file(docs.join("bad.md")).unwrap();
    std::fs::remove_file(docs.join("latin1.txt")).unwrap();
    let r = run(&home, &[], &format!("rag index {}\n", docs.display()));
    r.ok()
        .out_has("tides.txt: already indexed as doc_1")
        .out_has("bread.md → doc_2 (1 chunk)")
        .out_has("✅ Indexed 1 document(s), 1 chunk(s)");
    let rooti = read_json(&root.join("document_index.json"));
    assert_eq!(rooti["documents"].as_array().unwrap().len(), 2);
}

#[test]
fn an_interrupted_rag_index_leaves_complete_documents_and_resumes() {
    // Slow embeddings (four requests of three chunks, 0.7 s each; documents are
    // committed at least every second): killed after the first commit.
    let a = host(true, 700);
    let home = home_with(&[&a], json!({"mode": "standard"}));
    let docs = home.path().join("docs");
    let files: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("note{i:02}.txt"),
                format!("Note {i}: the tide tables for harbour {i} list two high waters a day."),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    write_files(&docs, &refs);
    let mut s = Session::spawn(command(&home, &[]));
    s.send(&format!("rag index {}\n", docs.display()));
    s.until("→ doc_2 ", Duration::from_secs(30));
    s.child.kill().unwrap();
    let _ = s.child.wait();
    let root = default_kb(&home);
    let cli = read_json(&root.join("knowledge_base/document_index.json"));
    let written = cli["documents"].as_array().unwrap().len();
    assert!(
        (2..12).contains(&written),
        "killed part-way: {written} documents"
    );
    for d in cli["documents"].as_array().unwrap() {
        for c in d["chunks"].as_array().unwrap() {
            let chunk = read_json(Path::new(c["file"].as_str().unwrap()));
            assert_eq!(chunk["embedding"].as_array().unwrap().len(), 1024);
        }
    }
    let r = run(&home, &[], &format!("rag index {}\n", docs.display()));
    r.ok().out_has(&format!(
        "✅ Indexed {} document(s), {} chunk(s)",
        12 - written,
        12 - written
    ));
    assert_eq!(
        r.stdout.matches(": already indexed as doc_").count(),
        written
    );
    let cli = read_json(&root.join("knowledge_base/document_index.json"));
    let ids: Vec<&str> = cli["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (1..=12).map(|i| format!("doc_{i}")).collect();
    assert_eq!(ids, want);
    let leftovers: Vec<_> = std::fs::read_dir(root.join("knowledge_base"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn pdfs_are_indexed_through_their_text() {
    let a = host(true, 0);
    let home = home_with(
        &[&a],
        json!({"mode": "standard", "flockparser_enabled": true}),
    );
    let docs = home.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    write_pdf(
        &docs.join("moon.pdf"),
        &[
            "Tides and the moon",
            "The gravity of the moon raises ocean tides twice a day.",
        ],
    );
    std::fs::write(docs.join("broken.pdf"), b"%PDF-1.4\nthis is not a PDF body").unwrap();
    let r = run(&home, &[], &format!("rag index {}\n", docs.display()));
    r.failed()
        .out_has("moon.pdf → doc_1 (1 chunk)")
        .err_has("broken.pdf: ");
    let cli = read_json(&default_kb(&home).join("knowledge_base/document_index.json"));
    let chunk = read_json(Path::new(
        cli["documents"][0]["chunks"][0]["file"].as_str().unwrap(),
    ));
    let text = chunk["text"].as_str().unwrap();
    assert!(
        text.contains("gravity of the moon raises ocean tides"),
        "{text:?}"
    );
    // Every line of a PDF is its own paragraph, as in FlockParser.
    assert!(
        text.contains("Tides and the moon\n\nThe gravity"),
        "{text:?}"
    );
    let r = run(&home, &["-i", "Why does the moon raise ocean tides?"], "");
    assert_eq!(json_of(&r)["sources"][0]["name"], "moon.pdf");
}

/// A one-page PDF with one line of Helvetica text per entry.
fn write_pdf(path: &Path, lines: &[&str]) {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut ops = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
    ];
    for (i, l) in lines.iter().enumerate() {
        ops.push(Operation::new(
            "Td",
            vec![
                if i == 0 { 72.into() } else { 0.into() },
                if i == 0 { 700.into() } else { (-20).into() },
            ],
        ));
        ops.push(Operation::new("Tj", vec![Object::string_literal(*l)]));
    }
    ops.push(Operation::new("ET", vec![]));
    let content = Content { operations: ops };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    doc.save(path).unwrap();
}

#[test]
fn a_changed_knowledge_base_is_reloaded_between_questions() {
    let a = host(true, 0);
    let home = indexed_home(&[&a]);
    let question = "How do glaciers carve fjords into valleys?";
    let mut s = Session::spawn(command(&home, &[]));
    s.send(&format!("{question}\n"));
    let first = s.until("Type 'metrics'", Duration::from_secs(60));
    assert!(!first.contains("Source Documents"), "{first}");
    // Another process adds a document about it.
    let more = home.path().join("more");
    write_files(
        &more,
        &[("glaciers.txt", "Glaciers carve fjords: the moving ice grinds valleys deeper than the sea level, and when the glaciers melt the sea floods the carved valleys.")],
    );
    run(&home, &[], &format!("rag index {}\n", more.display())).ok();
    s.send(&format!("{question}\nexit\n"));
    let (rest, _err, code) = s.finish();
    assert_eq!(code, 0);
    assert!(
        rest.contains("## 📚 Source Documents\n1. glaciers.txt"),
        "{rest}"
    );
}

/// The question asked through a gateway for `home`'s settings (`serve`, then
/// `/api/orchestrate` with curl): the final object of the NDJSON stream.
fn orchestrated(home: &Home, question: &str) -> Value {
    let g = crate::gateway_support::Served::start(home, &[]);
    let (ok, out) = crate::gateway_support::curl(&[
        "-N",
        &format!("{}/api/orchestrate", g.url),
        "-d",
        &json!({ "query": question }).to_string(),
    ]);
    assert!(ok, "{out}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn the_gateways_orchestrate_answers_from_the_same_documents() {
    let a = host(true, 0);
    let home = indexed_home(&[&a]);
    let last = orchestrated(&home, "How does the moon cause ocean tides?");
    let sources = last["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{last:#}");
    assert_eq!(sources[0]["name"], "tides.txt");
    assert_eq!(last["rag"]["model"], "mxbai-embed-large");
    assert!(
        last["final_output"].as_str().unwrap().contains("[1]"),
        "the answer cites the excerpt: {last:#}"
    );
    // RAG off in the settings: the same request answers without documents.
    let off = home_with(&[&a], json!({"mode": "standard"}));
    let last = orchestrated(&off, "How does the moon cause ocean tides?");
    assert!(
        last["rag"].is_null() && last["sources"] == json!([]),
        "{last:#}"
    );
}

/// Issue 21: a Markdown file of French, emoji and Japanese, indexed and asked
/// about on hosts whose model has a context of 4,096 tokens. The excerpts
/// must be budgeted as the prompt is measured, so no agent's request is
/// refused as too large for the context.
#[test]
fn excerpts_in_any_script_fit_the_context() {
    let hosts: Vec<Arc<SimHost>> = (0..2)
        .map(|_| {
            sim(SimConfig {
                models: vec!["llama3.2:latest".into(), EMBED_MODEL.into()],
                reply_words: 60,
                context_length: Some(4096),
                ..SimConfig::default()
            })
        })
        .collect();
    let home = home_with(
        &hosts.iter().collect::<Vec<_>>(),
        json!({"mode": "standard", "flockparser_enabled": true}),
    );
    let docs = home.path().join("docs");
    let japanese = "春の大潮では、月と太陽が一直線に並ぶため、潮の満ち引きの差が最も大きくなります。日本語の資料によれば、満月と新月のころに海面は大きく上下します。";
    let paragraph = |i: usize| {
        format!(
            "## Les marées de printemps 🌊 日本語 — partie {i}\n\nLes marées de printemps 🌊 se produisent quand la Lune et le Soleil sont alignés ; l'écart entre la marée haute et la marée basse est alors le plus grand. 🌕☀️ {}\n\n{}",
            japanese.repeat(3),
            japanese.repeat(4)
        )
    };
    let text: String = (1..=12).map(paragraph).collect::<Vec<_>>().join("\n\n");
    write_files(&docs, &[("marees.md", &text)]);
    run(&home, &[], &format!("rag index {}\n", docs.display())).ok();
    let r = run(&home, &["-i", "Les marées de printemps 🌊 日本語"], "");
    assert!(
        !r.stderr.contains("leave no room"),
        "a request was refused as too large:\n{}",
        r.stderr
    );
    r.ok().err_has("📚 RAG for the question:");
    let v = json_of(&r);
    assert_eq!(v["sources"][0]["name"], "marees.md", "{v:#}");
    assert_eq!(v["complete"], true, "{v:#}");
    for h in &hosts {
        assert_eq!(
            h.stats().too_large,
            0,
            "a host refused a request as too large"
        );
    }
}
