//! Answers from real models (issue 16): the time of the one-line question and
//! of a five-part report on two real llama.cpp nodes with 1,024 tokens of
//! context each (SmolLM2-135M, `llama-server -c 1024 -t 1` behind the
//! Ollama-compatible adapter of the tests), before and after, in the same run:
//!
//! - before: the binary built from main before this work (the original's rule:
//!   "what is" makes a five-part report; retry prompts that quote the checker;
//!   a fixed `num_ctx` of 8192 and `num_predict` 4096, whatever the context);
//! - after, `longform always`: this binary with the original's rule for the
//!   size of the answer (same parts as before) and the new requests;
//! - after, `longform auto` (the default): the one-line question in one part.
//!
//! Each cell runs `BIN -i QUESTION` in a fresh temporary home and reports the
//! wall time, the pipeline and parts, what happened to the synthesis, the HTTP
//! 400 refusals the nodes sent, and whether the answer holds the checker's
//! words or JSON. Replies depend on sampling (the adapter fixes llama-server's
//! seed) and on which node gets which request, so times vary from run to run:
//! RUNS runs per cell, the median shown.
//!
//! bash scripts/install-llama-cpp.sh
//! git archive 52cd698 | tar -x -C /tmp/before && (cd /tmp/before && cargo build --release --bin synapticllamas && cp $CARGO_TARGET_DIR/release/synapticllamas /tmp/synapticllamas-before)
//! cargo build --release && cargo run --release --example bench_answers -- /tmp/synapticllamas-before [RUNS] [--json]
//!
//! `--json`: the nodes constrain replies to JSON when asked, as Ollama does;
//! without it the model writes as it likes, as the nodes did.

#[path = "../tests/cli/ollama_adapter.rs"]
mod ollama_adapter;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ollama_adapter::LlamaNode;
use serde_json::{json, Value};

const MODEL: &str = "smollm2:135m";
const FRANCE: &str = "What is the capital of France?";
const REPORT: &str = "Write a comprehensive report on the history of the printing press in Europe";
/// What must never reach an answer: the checker's words, prompt text, JSON.
const LEAKS: &[&str] = &[
    "rejected",
    "too few",
    "too short",
    "quality check",
    "An earlier attempt",
    "could not be used",
    "Reply shape",
    "Request:",
    "{\"",
    "\":",
];

struct Cell {
    seconds: f64,
    pipeline: String,
    parts: u64,
    synthesis: String,
    refused: u64,
    leaks: Vec<&'static str>,
    ok: bool,
}

fn cache() -> PathBuf {
    std::env::var_os("SYNAPTICLLAMAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".cache/synapticllamas"))
}

fn run_one(bin: &Path, nodes: &[LlamaNode], settings: &Value, question: &str) -> Cell {
    let home = tempfile::tempdir().unwrap();
    let entries: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"url": n.url, "name": format!("real{i}"), "priority": 0, "host_id": format!("real-host-{i}")}))
        .collect();
    std::fs::write(
        home.path().join(".synapticllamas_nodes.json"),
        serde_json::to_vec_pretty(&json!({ "nodes": entries })).unwrap(),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".synapticllamas.json"),
        settings.to_string(),
    )
    .unwrap();
    let refused_before: u64 = nodes
        .iter()
        .map(|n| n.stats.too_large.load(Ordering::SeqCst))
        .sum();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["-i", question])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("SYNAPTICLLAMAS_HOME", home.path())
        .env("NO_COLOR", "1")
        .env("SOLLOL_AUTO_DISCOVER", "false")
        .env("SYNAPTICLLAMAS_REDIS_URL", "redis://127.0.0.1:1/0")
        .env("SYNAPTICLLAMAS_SUBNETS", "127.77.77.0/30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let refused: u64 = nodes
        .iter()
        .map(|n| n.stats.too_large.load(Ordering::SeqCst))
        .sum::<u64>()
        - refused_before;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let answer = v["final_output"].as_str().unwrap_or("");
    if let Some(dir) = std::env::var_os("BENCH_ANSWERS_DUMP") {
        // Every answer and its notices, to read what the models wrote.
        let name = format!(
            "{}-{}.txt",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            started.elapsed().as_millis()
        );
        let _ = std::fs::write(
            Path::new(&dir).join(name),
            format!(
                "{question}\n{settings}\n\n{answer}\n\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    let m = &v["metrics"];
    let _ = std::io::stderr().write_all(b".");
    Cell {
        seconds,
        pipeline: m["pipeline"].as_str().unwrap_or("failed").to_string(),
        parts: m["chunks_generated"].as_u64().unwrap_or(0),
        synthesis: m["synthesis"]
            .as_str()
            .map(|s| s.split([':', ';']).next().unwrap_or(s).to_string())
            .unwrap_or_else(|| "-".into()),
        refused,
        leaks: LEAKS
            .iter()
            .copied()
            .filter(|w| answer.contains(w))
            .collect(),
        ok: v.get("final_output").is_some(),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let before = PathBuf::from(
        args.first()
            .expect("usage: bench_answers BEFORE-BINARY [RUNS] [--json]"),
    );
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let honour_json = args.iter().any(|a| a == "--json");
    assert!(before.is_file(), "{} is not a file", before.display());
    let after =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("release/synapticllamas");
    assert!(after.is_file(), "build it first: cargo build --release");
    let cache = cache();
    let server = cache.join("llama.cpp/bin/llama-server");
    let gguf = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        server.is_file() && gguf.is_file(),
        "run scripts/install-llama-cpp.sh first"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let nodes: Vec<LlamaNode> = (0..2)
        .map(|i| {
            LlamaNode::start(
                &rt,
                &server,
                &gguf,
                1024,
                MODEL,
                &logs.path().join(format!("real{i}.log")),
            )
        })
        .collect();
    for n in &nodes {
        n.honour_format.store(honour_json, Ordering::SeqCst);
    }
    let base = json!({"mode": "distributed", "model": MODEL, "agent_timeout": 900, "request_idle_timeout_ms": 120000});
    let mut always = base.clone();
    always["longform"] = json!("always");
    let variants: [(&str, &Path, &Value); 3] = [
        ("before (main 52cd698, the original's rule)", &before, &base),
        ("after, `longform always`", &after, &always),
        ("after, `longform auto` (default)", &after, &base),
    ];
    println!(
        "Two llama-servers (SmolLM2-135M Q4_1, -c 1024 -t 1) behind the Ollama adapter on 127.0.0.1; replies {}; {runs} run(s) per cell, median wall time",
        if honour_json { "constrained to JSON when asked (as Ollama)" } else { "free (format ignored, as the issue's nodes)" }
    );
    println!();
    println!("| question | binary / rule | wall (s) | pipeline | parts | synthesis | HTTP 400s | checker words or JSON in the answer |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut medians: Vec<(String, f64)> = Vec::new();
    for (q, label) in [
        (FRANCE, "one-line question"),
        (REPORT, "comprehensive report"),
    ] {
        for (name, bin, settings) in variants {
            let cells: Vec<Cell> = (0..runs)
                .map(|_| run_one(bin, &nodes, settings, q))
                .collect();
            let t = median(cells.iter().map(|c| c.seconds).collect());
            let c = &cells[cells.len() / 2];
            let refused: u64 = cells.iter().map(|c| c.refused).sum();
            let mut leaks: Vec<&str> = cells.iter().flat_map(|c| c.leaks.clone()).collect();
            leaks.sort();
            leaks.dedup();
            let failed = cells.iter().filter(|c| !c.ok).count();
            println!(
                "| {label} | {name} | {t:.1} | {}{} | {} | {} | {refused} | {} |",
                c.pipeline,
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                },
                c.parts,
                c.synthesis,
                if leaks.is_empty() {
                    "none".to_string()
                } else {
                    leaks.join(", ")
                }
            );
            medians.push((format!("{label}, {name}"), t));
        }
    }
    eprintln!();
    let find = |k: &str| {
        medians
            .iter()
            .find(|(n, _)| n.starts_with(k))
            .map(|(_, t)| *t)
            .unwrap_or(f64::NAN)
    };
    let (b, a) = (
        find("one-line question, before"),
        find("one-line question, after, `longform auto`"),
    );
    println!();
    println!(
        "One-line question: {b:.1} s before, {a:.1} s after ({:.1}× faster).",
        b / a
    );
    let (b, a) = (
        find("comprehensive report, before"),
        find("comprehensive report, after, `longform auto`"),
    );
    println!(
        "Report: {b:.1} s before, {a:.1} s after ({:.2}× the time).",
        a / b
    );
}
