//! Model sharding with the real llama.cpp binaries and a real small model, built
//! and cached by `scripts/install-llama-cpp.sh` (CI runs it before the tests).
//! Two rpc-servers on 127.0.0.1, a piped session that adds both, switches to
//! `distributed model` and asks a question through the coordinator it starts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

pub struct Binaries {
    pub llama_server: PathBuf,
    pub rpc_server: PathBuf,
    pub model: PathBuf,
}

pub fn binaries() -> Binaries {
    let cache = std::env::var_os("SYNAPTICLLAMAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".cache/synapticllamas"));
    let b = Binaries {
        llama_server: cache.join("llama.cpp/bin/llama-server"),
        rpc_server: cache.join("llama.cpp/bin/ggml-rpc-server"),
        model: cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    for p in [&b.llama_server, &b.rpc_server, &b.model] {
        assert!(
            p.is_file(),
            "{} is missing: run `bash scripts/install-llama-cpp.sh` first",
            p.display()
        );
    }
    b
}

/// `c` told where the llama.cpp server and the model are, and which port the
/// coordinator it starts listens on.
pub fn with_llama_cpp(mut c: Command, b: &Binaries, coord_port: u16) -> Command {
    c.env("SYNAPTICLLAMAS_LLAMA_SERVER", &b.llama_server)
        .env("SOLLOL_MODEL_PATH", &b.model)
        .env("SOLLOL_COORDINATOR_PORT", coord_port.to_string());
    c
}

/// An rpc-server on 127.0.0.1:port, killed on drop.
pub struct RpcServer {
    child: Child,
    pub port: u16,
}

impl RpcServer {
    pub fn start(bin: &PathBuf, log: PathBuf) -> RpcServer {
        let port = dead_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("rpc-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rpc-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RpcServer { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn sharded_query_over_two_real_rpc_servers() {
    let b = binaries();
    let home = Home::new();
    let mut rpc1 = RpcServer::start(&b.rpc_server, home.path().join("rpc1.log"));
    let mut rpc2 = RpcServer::start(&b.rpc_server, home.path().join("rpc2.log"));
    let coord_port = dead_port();
    home.write_settings(
        json!({"num_predict": 48, "agent_timeout": 300, "request_idle_timeout_ms": 120000, "coordinator_start_timeout_secs": 180,
               // llama.cpp logs where the layers went only at verbosity 4.
               "coordinator_args": ["-lv", "4"]})
            .to_string()
            .as_bytes(),
    );
    let c = with_llama_cpp(command(&home, &[]), &b, coord_port);
    let mut s = Session::spawn(c);
    s.send(&format!(
        "rpc add 127.0.0.1:{}\nrpc add 127.0.0.1:{}\ndistributed model\nhello there\n",
        rpc1.port, rpc2.port
    ));
    let answer = s.until("Type 'metrics'", Duration::from_secs(600));
    let body = answer
        .split("FINAL ANSWER")
        .nth(1)
        .expect("a FINAL ANSWER")
        .split("────")
        .next()
        .unwrap();
    assert!(
        body.trim().trim_matches('═').trim().len() > 10,
        "non-empty answer: {body:?}"
    );
    assert!(answer.contains("| coordinator"), "{answer}");

    // Layers on both backends, per the coordinator's log.
    let log = std::fs::read_to_string(
        home.path()
            .join(format!(".synapticllamas_coordinator-{coord_port}.log")),
    )
    .unwrap();
    for p in [rpc1.port, rpc2.port] {
        let line = format!("[127.0.0.1:{p}] model buffer size");
        assert!(
            log.lines()
                .any(|l| l.contains("load_tensors") && l.contains(&line)),
            "no layers on :{p} in the coordinator log:\n{log}"
        );
    }
    s.send("nodes\n");
    let nodes = s.until("🔗 RPC BACKENDS", Duration::from_secs(30));
    let nodes = nodes + &s.until(&format!("127.0.0.1:{}", rpc2.port), Duration::from_secs(30));
    assert!(nodes.contains("✅ HEALTHY"), "{nodes}");
    let pid = coordinator_pid(&nodes).expect("our coordinator's PID");
    assert!(
        nodes
            .lines()
            .filter(|l| l.contains("127.0.0.1:") && l.contains("✅ up"))
            .count()
            >= 2,
        "{nodes}"
    );

    // One backend dies: `nodes` shows it down; the next query either restarts
    // the coordinator on the backend that is left and answers, or fails naming
    // the dead backend. (A coordinator too busy to answer its health probe is
    // the scheduler's "busy" state, handled with the fault work.)
    rpc2.kill();
    let dead = format!("127.0.0.1:{}", rpc2.port);
    s.send("nodes\n");
    s.until("🔗 RPC BACKENDS", Duration::from_secs(30));
    let row = s.until(&dead, Duration::from_secs(30));
    let row = row.lines().last().unwrap_or("");
    assert!(row.contains("❌ down"), "{row}");
    s.send("hello again\nnodes\n");
    let after = s.until("🔗 RPC BACKENDS", Duration::from_secs(600));
    s.until(&dead, Duration::from_secs(30));
    s.send("status\nexit\n");
    let (rest, stderr, _code) = s.finish();
    assert!(rest.contains("SYSTEM STATUS"), "the shell stays usable");
    let mut ours = vec![pid];
    if after.contains("FINAL ANSWER") {
        // Answered: by a new coordinator over the live backend only.
        assert!(
            stderr.contains("Restarting the coordinator on the backends that answer"),
            "{stderr}"
        );
        let backends = after
            .lines()
            .find_map(|l| l.trim().strip_prefix("Backends: "))
            .unwrap_or_else(|| panic!("no coordinator backends after the query:\n{after}"));
        assert_eq!(backends, format!("127.0.0.1:{}", rpc1.port), "{after}");
        let new_pid = coordinator_pid(&after).expect("the new coordinator's PID");
        assert_ne!(new_pid, pid, "the coordinator was restarted:\n{after}");
        ours.push(new_pid);
    } else {
        // Not answered: the failure names the dead backend.
        let failed = stderr
            .lines()
            .find(|l| l.starts_with("❌ Query failed:"))
            .unwrap_or_else(|| panic!("neither an answer nor a failure:\n{after}\n{stderr}"));
        assert!(failed.contains(&dead), "{failed}");
    }
    // After exit the coordinators this shell started are gone.
    for p in ours {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::path::Path::new(&format!("/proc/{p}")).exists() {
            assert!(
                Instant::now() < deadline,
                "coordinator {p} still running after exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    rpc1.kill();
}

/// The PID in a `nodes` coordinator section ("PID: 1234 (started by this shell …)").
fn coordinator_pid(nodes: &str) -> Option<u32> {
    nodes
        .lines()
        .find_map(|l| l.trim().strip_prefix("PID: "))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
}

/// Issue 16 with the real binaries: two llama-servers with 1,024 tokens of
/// context each, behind an Ollama-compatible adapter, in distributed mode. The
/// one-line question is answered in one part, without a refusal and without
/// the checker's words, whether the node constrains replies to JSON (as
/// Ollama does) or lets the model write as it likes (as the nodes did);
/// the comprehensive report is written in parts and, its parts being longer
/// than one request can hold, its synthesis is staged to fit the context
/// instead of being dropped.
#[test]
fn two_real_small_context_nodes_give_right_sized_answers_that_fit() {
    use crate::answers::{answer_text, assert_clean, metrics_json};
    use std::sync::atomic::Ordering;
    let home = Home::new();
    let nodes = two_real_nodes(&home);
    let france = "What is the capital of France?";
    let mut s = Session::spawn(command(&home, &[]));
    let limit = Duration::from_secs(900);
    // Ollama's way: replies constrained to JSON.
    s.send(&format!("{france}\nmetrics --json\n"));
    let json_mode = until_metrics_end(&mut s, limit);
    // The nodes: the model writes as it likes.
    for n in &nodes {
        n.honour_format.store(false, Ordering::SeqCst);
    }
    s.send(&format!("{france}\nmetrics --json\n"));
    let free_mode = until_metrics_end(&mut s, limit);
    let report = "Write a comprehensive report on the history of the printing press in Europe";
    s.send(&format!("{report}\nmetrics --json\n"));
    let long_out = until_metrics_end(&mut s, limit);
    let (_, stderr, code) = s.finish();
    assert_eq!(code, 0, "{stderr}");
    for n in &nodes {
        assert_eq!(
            n.stats.too_large.load(Ordering::SeqCst),
            0,
            "a refusal:\n{stderr}"
        );
        assert_eq!(
            n.stats.max_num_ctx.load(Ordering::SeqCst),
            1024,
            "num_ctx is the context the model is loaded with"
        );
    }
    assert!(!stderr.contains("HTTP 400"), "{stderr}");
    for out in [&json_mode, &free_mode] {
        let m = metrics_json(out);
        assert_eq!(m["pipeline"], "standard", "{m}");
        let answer = answer_text(out);
        assert_clean(&answer, "the answer to the one-line question");
        assert!(!answer.trim().is_empty(), "an answer");
    }
    let m = metrics_json(&long_out);
    assert_eq!(m["pipeline"], "long-form", "{m}");
    let synthesis = m["synthesis"].as_str().unwrap_or("");
    assert!(synthesis.starts_with("staged: "), "{synthesis}\n{stderr}");
    let long = answer_text(&long_out);
    assert!(long.starts_with("## Overview"), "{long}");
    for n in 1..=5 {
        assert!(
            long.contains(&format!("## Part {n}: ")),
            "part {n} kept:\n{long}"
        );
    }
    assert_clean(&long, "the report");
}

/// Two llama-servers (SmolLM2-135M, 1,024 tokens of context each) behind the
/// Ollama-compatible adapter, as the nodes of `home` in distributed mode.
fn two_real_nodes(home: &Home) -> Vec<crate::ollama_adapter::LlamaNode> {
    let b = binaries();
    let nodes: Vec<crate::ollama_adapter::LlamaNode> = (0..2)
        .map(|i| {
            crate::ollama_adapter::LlamaNode::start(
                rt(),
                &b.llama_server,
                &b.model,
                1024,
                "smollm2:135m",
                &home.path().join(format!("real{i}.log")),
            )
        })
        .collect();
    let entries: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| entry(&n.url, &format!("real{i}"), &format!("real-host-{i}")))
        .collect();
    home.write_nodes(&node_file(&entries));
    home.write_settings(
        json!({"mode": "distributed", "model": "smollm2:135m", "agent_timeout": 900,
               "request_idle_timeout_ms": 120000})
        .to_string()
        .as_bytes(),
    );
    nodes
}

/// Issue 22's acceptance, on two real nodes that constrain replies to the
/// schema they are sent (as an Ollama of today does): the one-line question
/// gets a short answer (no Examples or Practical Applications), the report's
/// parts are planned for it (their titles name its subject), no part is empty,
/// and the replies match the agents' fields (at most one warning in all).
#[test]
fn two_real_nodes_plan_the_report_and_answer_the_one_line_question_briefly() {
    use crate::answers::assert_clean;
    let home = Home::new();
    let nodes = two_real_nodes(&home);
    let france = run(&home, &["-i", "What is the capital of France?"], "");
    let report = run(
        &home,
        &[
            "-i",
            "Write a detailed report on how vaccines train the immune system",
        ],
        "",
    );
    let stderr = format!("{}\n{}", france.stderr, report.stderr);
    let warnings = stderr.matches("did not match the agent's fields").count();
    eprintln!("acceptance: {warnings} 'did not match' warning(s)\n{stderr}");
    eprintln!("acceptance: the France answer:\n{}", france.stdout);
    eprintln!("acceptance: the report:\n{}", report.stdout);
    assert!(warnings <= 1, "{warnings} warnings:\n{stderr}");
    for n in &nodes {
        use std::sync::atomic::Ordering;
        assert!(
            n.stats.schemas.load(Ordering::SeqCst) > 0
                && n.stats.json_only.load(Ordering::SeqCst) == 0,
            "every request carried its schema:\n{stderr}"
        );
    }
    // The one-line question: a short answer.
    assert_eq!(france.code, 0, "{}", france.stderr);
    let v = json_of(&france);
    let answer = v["final_output"].as_str().unwrap();
    assert_eq!(v["metrics"]["longform"]["brief"], true);
    assert!(answer.contains("## Summary"), "{answer}");
    for section in [
        "## Examples",
        "## Practical Applications",
        "## Detailed Explanation",
    ] {
        assert!(!answer.contains(section), "{section} in:\n{answer}");
    }
    assert_clean(answer, "the short answer");
    // The report: planned parts, none empty.
    let v = json_of(&report);
    let outline = &v["metrics"]["longform"]["outline"];
    let titles: Vec<&str> = outline["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("no outline: {v}"))
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    eprintln!(
        "acceptance: the report's outline ({}): {titles:?}",
        outline["planned"]
    );
    assert_eq!(outline["planned"], true, "{outline}\n{}", report.stderr);
    let on_topic = titles
        .iter()
        .filter(|t| {
            let t = t.to_lowercase();
            ["vaccin", "immun", "antibod", "antigen"]
                .iter()
                .any(|w| t.contains(w))
        })
        .count();
    assert!(
        on_topic >= 3,
        "{on_topic} titles name the topic: {titles:?}"
    );
    assert!(!report.stderr.contains(" (0 words"), "{}", report.stderr);
    let answer = v["final_output"].as_str().unwrap();
    for c in v["chunks"].as_array().unwrap() {
        let words = c["content"].as_str().unwrap().split_whitespace().count();
        assert!(words > 0, "an empty part was kept: {c}");
        let heading = format!("## Part {}: {}", c["chunk"], c["title"].as_str().unwrap());
        assert!(answer.contains(&heading), "{heading} in:\n{answer}");
    }
    // A part missing everywhere is a marked gap and exit 1, never a part of 0 words.
    let missing = v["failed_chunks"].as_array().unwrap().len();
    assert_eq!(
        report.code,
        if missing > 0 { 1 } else { 0 },
        "{}",
        report.stderr
    );
    assert_eq!(
        answer.matches("This part is missing").count(),
        missing,
        "{answer}"
    );
}

/// Stdout up to the end of the next `metrics --json` object (a line `}`).
fn until_metrics_end(s: &mut Session, limit: Duration) -> String {
    let mut out = s.until("\"longform\": {", limit);
    loop {
        let part = s.until("}", limit);
        out.push_str(&part);
        if part.lines().last() == Some("}") {
            return out;
        }
    }
}
