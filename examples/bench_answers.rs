//! Answers from real models (issues 16 and 22): the one-line question and a
//! report on two real llama.cpp nodes with 1,024 tokens of context each
//! (SmolLM2-135M, `llama-server -c 1024 -t 1` behind the Ollama-compatible
//! adapter of the tests), before and after, in the same run, on the same nodes:
//!
//! - before, old adapter: the binary built from main before this work, with
//!   the adapter as it was (it reported Ollama 0.0.0, so the binary asked for
//!   `format: "json"`, and it turned any `format` into a `json_object`);
//! - before: the same binary with the adapter as it is now (an Ollama of today:
//!   it reports 0.12.6 and turns a `format` schema into llama-server's
//!   `json_schema`, so replies are constrained to the agent's fields);
//! - after: this binary, the same adapter (parts planned for the question, a
//!   short answer for a short factual question, no empty part).
//!
//! Each cell runs `BIN -i QUESTION` in a fresh temporary home and reports the
//! wall time, the pipeline and parts, how many agent replies were the agent's
//! object on the first try, the retries, the "did not match the agent's
//! fields" warnings, parts of 0 words and missing parts, the sections of the
//! one-line answer and the report's part headings. Replies depend on which
//! node gets which request (the adapter fixes llama-server's seed), so RUNS
//! runs per cell, the median time shown and the counts summed.
//!
//! bash scripts/install-llama-cpp.sh
//! git archive c07c1b7 | tar -x -C /tmp/before && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bin synapticllamas)
//! cargo build --release && cargo run --release --example bench_answers -- /tmp/before-target/release/synapticllamas [RUNS] [--free]
//!
//! `--free`: the nodes ignore `format` and the model writes as it likes (as the
//! nodes of issue 16 did). `BENCH_ANSWERS_DUMP=DIR` keeps every answer and its
//! stderr to read.

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
const REPORT: &str = "Write a detailed report on how vaccines train the immune system";
/// Words that name the report's subject in a part's heading.
const TOPIC: &[&str] = &["vaccin", "immun", "antibod", "antigen"];

#[derive(Default)]
struct Cell {
    seconds: f64,
    pipeline: String,
    parts: u64,
    replies: u64,
    valid_first_try: u64,
    retries: u64,
    warnings: usize,
    empty_parts: usize,
    missing: usize,
    /// HTTP 400 refusals ("exceeds the available context size") the nodes sent.
    refused: u64,
    /// The answer's `## ` headings.
    headings: Vec<String>,
    ok: bool,
}

fn cache() -> PathBuf {
    std::env::var_os("SYNAPTICLLAMAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".cache/synapticllamas"))
}

fn run_one(bin: &Path, nodes: &[LlamaNode], question: &str) -> Cell {
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
    let settings = json!({"mode": "distributed", "model": MODEL, "agent_timeout": 900, "request_idle_timeout_ms": 120000});
    std::fs::write(
        home.path().join(".synapticllamas.json"),
        settings.to_string(),
    )
    .unwrap();
    let refused = || -> u64 {
        nodes
            .iter()
            .map(|n| n.stats.too_large.load(Ordering::SeqCst))
            .sum()
    };
    let refused_before = refused();
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
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let answer = v["final_output"].as_str().unwrap_or("");
    if let Some(dir) = std::env::var_os("BENCH_ANSWERS_DUMP") {
        let name = format!(
            "{}-{}.txt",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            started.elapsed().as_millis()
        );
        let _ = std::fs::write(
            Path::new(&dir).join(name),
            format!("{question}\n\n{answer}\n\n{stderr}"),
        );
    }
    let m = &v["metrics"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let _ = std::io::stderr().write_all(b".");
    Cell {
        seconds,
        pipeline: m["pipeline"].as_str().unwrap_or("failed").to_string(),
        parts: n(&m["chunks_generated"]),
        replies: n(&m["replies"]["total"]),
        valid_first_try: n(&m["replies"]["valid_first_try"]),
        retries: n(&m["retries"]),
        warnings: stderr.matches("did not match the agent's fields").count(),
        empty_parts: stderr.matches(" (0 words").count(),
        missing: v["failed_chunks"].as_array().map_or(0, Vec::len),
        refused: refused() - refused_before,
        headings: answer
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(String::from)
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
            .expect("usage: bench_answers BEFORE-BINARY [RUNS] [--free]"),
    );
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let free = args.iter().any(|a| a == "--free");
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
        n.honour_format.store(!free, Ordering::SeqCst);
    }
    let variants: [(&str, &Path, bool); 3] = [
        (
            "before (main c07c1b7), old adapter (Ollama 0.0.0: \"json\")",
            &before,
            true,
        ),
        ("before (main c07c1b7)", &before, false),
        ("after", &after, false),
    ];
    println!(
        "Two llama-servers (SmolLM2-135M Q4_1, -c 1024 -t 1) behind the Ollama adapter on 127.0.0.1; replies {}; {runs} run(s) per cell (median time, counts summed)",
        if free { "free (format ignored)" } else { "constrained to the request's format (as Ollama)" }
    );
    println!();
    println!("| question | binary | wall (s) | pipeline, parts | replies valid on first try | retries | \"did not match\" warnings | parts of 0 words | missing parts | HTTP 400s | headings |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut times: Vec<(String, f64)> = Vec::new();
    for (q, label) in [(FRANCE, "one-line question"), (REPORT, "vaccines report")] {
        for (name, bin, legacy) in variants {
            for n in &nodes {
                n.legacy.store(legacy, Ordering::SeqCst);
            }
            let cells: Vec<Cell> = (0..runs).map(|_| run_one(bin, &nodes, q)).collect();
            let t = median(cells.iter().map(|c| c.seconds).collect());
            let c = &cells[cells.len() / 2];
            let sum = |f: fn(&Cell) -> u64| cells.iter().map(f).sum::<u64>();
            let (replies, valid) = (sum(|c| c.replies), sum(|c| c.valid_first_try));
            let failed = cells.iter().filter(|c| !c.ok).count();
            let headings = if q == REPORT {
                let parts: Vec<&String> = c
                    .headings
                    .iter()
                    .filter(|h| h.starts_with("Part "))
                    .collect();
                let on_topic = parts
                    .iter()
                    .filter(|h| TOPIC.iter().any(|w| h.to_lowercase().contains(w)))
                    .count();
                format!(
                    "{on_topic} of {} name the topic: {}",
                    parts.len(),
                    parts
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(" / ")
                )
            } else {
                c.headings.join(", ")
            };
            println!(
                "| {label} | {name} | {t:.1} | {}{}, {} | {valid} of {replies} ({:.0} %) | {} | {} | {} | {} | {} | {headings} |",
                c.pipeline,
                if failed > 0 { format!(" ({failed} failed)") } else { String::new() },
                c.parts,
                100.0 * valid as f64 / replies.max(1) as f64,
                sum(|c| c.retries),
                cells.iter().map(|c| c.warnings).sum::<usize>(),
                cells.iter().map(|c| c.empty_parts).sum::<usize>(),
                cells.iter().map(|c| c.missing).sum::<usize>(),
                sum(|c| c.refused),
            );
            times.push((format!("{label}, {name}"), t));
        }
    }
    eprintln!();
    println!();
    for label in ["one-line question", "vaccines report"] {
        let find = |k: &str| {
            times
                .iter()
                .find(|(n, _)| n == &format!("{label}, {k}"))
                .map(|(_, t)| *t)
                .unwrap_or(f64::NAN)
        };
        let (old, b, a) = (
            find(variants[0].0),
            find(variants[1].0),
            find(variants[2].0),
        );
        println!(
            "{label}: {old:.1} s before with the old adapter, {b:.1} s before, {a:.1} s after ({:.2}× the time of before).",
            a / b
        );
    }
}
