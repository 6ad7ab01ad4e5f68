//! RAG with a real embedding model: llama.cpp's `llama-server --embeddings`
//! serving the small test model (built and cached by
//! `scripts/install-llama-cpp.sh`), behind a thin Ollama-style adapter in this
//! file (`/api/tags`, `/api/embed` → `/v1/embeddings`). `rag index` of a few
//! text files, then a question that retrieves from them.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use synapticllamas::sim::SimConfig;

use crate::llama::binaries;
use crate::support::*;

/// A llama-server child, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_embedding_server(log: std::path::PathBuf) -> (Server, String) {
    let b = binaries();
    let port = dead_port();
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&b.llama_server)
        .arg("-m")
        .arg(&b.model)
        .args([
            "--embeddings",
            "--pooling",
            "mean",
            "-c",
            "2048",
            "-b",
            "2048",
            "-ub",
            "2048",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("llama-server starts");
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = http_client();
    loop {
        let ok = rt().block_on(async {
            client
                .get(format!("{url}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "llama-server did not become ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (server, url)
}

/// An HTTP client that never uses a proxy (everything here is on loopback).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The model name the adapter reports in `/api/tags`.
const MODEL: &str = "smollm2-embed:latest";

struct Adapter {
    upstream: String,
    client: reqwest::Client,
    calls: std::sync::atomic::AtomicUsize,
}

async fn tags() -> Json<Value> {
    Json(json!({"models": [{"name": MODEL, "model": MODEL, "size": 1, "digest": "0"}]}))
}

/// Ollama's `/api/embed` on top of llama-server's OpenAI-style `/v1/embeddings`.
async fn embed(State(a): State<Arc<Adapter>>, Json(req): Json<Value>) -> Json<Value> {
    a.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let input = match &req["input"] {
        Value::String(s) => json!([s]),
        other => other.clone(),
    };
    let reply: Value = a
        .client
        .post(format!("{}/v1/embeddings", a.upstream))
        .json(&json!({"input": input, "model": MODEL}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut data = reply["data"].as_array().cloned().unwrap_or_default();
    data.sort_by_key(|d| d["index"].as_u64());
    let embeddings: Vec<Value> = data.into_iter().map(|d| d["embedding"].clone()).collect();
    Json(json!({"model": req["model"], "embeddings": embeddings}))
}

#[test]
fn rag_index_and_retrieval_with_a_real_embedding_model() {
    let home = Home::new();
    let (_server, upstream) = start_embedding_server(home.path().join("llama-server.log"));
    let adapter = Arc::new(Adapter {
        upstream,
        client: http_client(),
        calls: Default::default(),
    });
    let app = Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/tags", get(tags))
        .route("/api/embed", post(embed))
        .with_state(adapter.clone());
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let adapter_url = format!("http://{}", listener.local_addr().unwrap());
    rt().spawn(async move { axum::serve(listener, app).await });
    // Answers come from a simulated node; embeddings only from the adapter,
    // the one node with the embedding model.
    let chat = sim(SimConfig::default());
    home.write_nodes(&node_file(&[
        json!({"url": chat.url(), "name": "chat", "priority": 0, "host_id": "A"}),
        json!({"url": adapter_url, "name": "llama-embed", "priority": 5, "host_id": "B"}),
    ]));
    home.write_settings(
        json!({"mode": "standard", "rag_model": "smollm2-embed"})
            .to_string()
            .as_bytes(),
    );
    let docs = home.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for (name, text) in [
        ("tides.txt", "Tides are the regular rise and fall of the ocean surface. The gravity of the moon pulls on the ocean, and the sun adds a smaller pull. Spring tides come at full moon."),
        ("bread.txt", "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria instead of baker's yeast. Bake it in a hot oven around 230 degrees."),
        ("rust.txt", "The Rust borrow checker enforces ownership rules at compile time. Each value has one owner; references are shared or mutable but never both."),
    ] {
        std::fs::write(docs.join(name), text).unwrap();
    }
    let r = run(
        &home,
        &[],
        &format!("rag index {}\nrag on\n", docs.display()),
    );
    r.ok()
        .out_has("✅ Indexed 3 document(s), 3 chunk(s)")
        .out_has("3 docs, 3 chunks");
    assert!(adapter.calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(
        chat.stats().embed_requests,
        0,
        "the node without the model was not asked"
    );
    let kb = home
        .path()
        .join("FlockParser/knowledge_base/doc_1_chunk_0.json");
    let chunk: Value = serde_json::from_str(&std::fs::read_to_string(kb).unwrap()).unwrap();
    let dims = chunk["embedding"].as_array().unwrap().len();
    assert!(dims >= 64, "a real model's vector: {dims} dimensions");

    for (question, want) in [
        ("How does the moon cause ocean tides?", "tides.txt"),
        (
            "What temperature should I bake sourdough bread at?",
            "bread.txt",
        ),
        ("What does the Rust borrow checker enforce?", "rust.txt"),
    ] {
        let r = run(&home, &["-i", question], "");
        r.ok().err_has("📚 RAG for the question:");
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        // The list is in first-cited order; the best match has the highest similarity.
        let sources = v["sources"].as_array().unwrap();
        let best = sources
            .iter()
            .max_by(|a, b| {
                let sim = |v: &Value| v["similarity"].as_f64().unwrap_or(f64::NAN);
                sim(a).total_cmp(&sim(b))
            })
            .unwrap();
        assert_eq!(best["name"], want, "{question}: {sources:#?}");
        assert_eq!(v["rag"]["retrievals"][0]["node"], "llama-embed");
        let answer = v["final_output"].as_str().unwrap();
        let list = answer.split("## 📚 Source Documents\n").nth(1).unwrap();
        assert!(
            list.lines().any(|l| l.ends_with(&format!(". {want}"))),
            "{answer}"
        );
    }
}
