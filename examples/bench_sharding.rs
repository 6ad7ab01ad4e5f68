//! Sharding cost with the real llama.cpp binaries (built by
//! scripts/install-llama-cpp.sh): tokens/s for one prompt through a coordinator
//! over two rpc-servers on 127.0.0.1 against llama-server alone on the same
//! model, and the coordinator's start-up time (spawn → /health 200).
//!
//! bash scripts/install-llama-cpp.sh && cargo run --release --example bench_sharding

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synapticllamas::ollama::types::Message;
use synapticllamas::ollama::{Client, OpenAiChat, Timeouts};
use synapticllamas::sharding::coordinator::Coordinator;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rpc_server(bin: &Path) -> (Child, String) {
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("127.0.0.1:{port}"))
}

async fn tokens_per_second(client: &Client, url: &str) -> f64 {
    let msgs = vec![Message::user("Write a short paragraph about rivers.")];
    let t = Timeouts::generation(Duration::from_secs(300));
    let mut v = Vec::new();
    for _ in 0..3 {
        let c = client
            .openai_chat(
                url,
                OpenAiChat {
                    model: "m",
                    messages: &msgs,
                    max_tokens: 64,
                    response_format: None,
                },
                t,
                |_| {},
            )
            .await
            .unwrap();
        v.push(c.tokens_per_second().unwrap_or(0.0));
    }
    v.sort_by(f64::total_cmp);
    v[1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cache = std::env::var_os("SYNAPTICLLAMAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".cache/synapticllamas"));
    let server = cache.join("llama.cpp/bin/llama-server");
    let rpc = cache.join("llama.cpp/bin/ggml-rpc-server");
    let model = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let client = Client::default();
    let dir = tempfile::tempdir().unwrap();

    let (mut r1, a1) = rpc_server(&rpc);
    let (mut r2, a2) = rpc_server(&rpc);
    let started = Instant::now();
    let mut sharded = Coordinator::start(
        &client,
        &server,
        &model,
        free_port(),
        &[a1, a2],
        &[],
        &dir.path().join("sharded.log"),
        Duration::from_secs(300),
        &mut |_| {},
    )
    .await
    .unwrap();
    let sharded_start = started.elapsed().as_secs_f64();
    let sharded_tps = tokens_per_second(&client, &sharded.url).await;
    sharded.stop().await;
    let _ = (r1.kill(), r2.kill(), r1.wait(), r2.wait());

    let started = Instant::now();
    let mut alone = Coordinator::start(
        &client,
        &server,
        &model,
        free_port(),
        &[],
        &[],
        &dir.path().join("alone.log"),
        Duration::from_secs(300),
        &mut |_| {},
    )
    .await
    .unwrap();
    let alone_start = started.elapsed().as_secs_f64();
    let alone_tps = tokens_per_second(&client, &alone.url).await;
    alone.stop().await;

    println!(
        "| SmolLM2-135M Q4_1, 64 tokens, median of 3 | start-up to /health 200 (s) | tokens/s |"
    );
    println!("|---|---|---|");
    println!("| llama-server alone (baseline) | {alone_start:.2} | {alone_tps:.1} |");
    println!(
        "| coordinator over 2 rpc-servers on 127.0.0.1 | {sharded_start:.2} | {sharded_tps:.1} |"
    );
    println!();
    println!(
        "sharded / alone: tokens/s {:.2}x, start-up {:.2}x",
        sharded_tps / alone_tps,
        sharded_start / alone_start
    );
}
