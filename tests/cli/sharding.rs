//! Routing paths and RPC backends without the real llama.cpp binaries: the
//! commands, the files they write, and `distributed both` routing against a
//! stand-in coordinator that speaks llama-server's `/health` and streamed
//! `/v1/chat/completions`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use serde_json::{json, Value};
use synapticllamas::sim::SimConfig;

use crate::support::*;

/// A stand-in llama-server on 127.0.0.1: answers /health and streams a chat
/// completion whose text is a JSON object with the requested Editor fields.
struct FakeCoordinator {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    /// The last chat request's body.
    last: Arc<Mutex<Value>>,
}

fn fake_coordinator() -> FakeCoordinator {
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    let last = Arc::new(Mutex::new(Value::Null));
    let keep = last.clone();
    let app = axum::Router::new()
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let count = count.clone();
                let keep = keep.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    *keep.lock().unwrap() = body.clone();
                    assert!(body["max_tokens"].as_u64().is_some(), "max_tokens is explicit");
                    let text = json!({"summary": "Sharded summary.", "key_points": ["one"], "detailed_explanation": "Sharded.\nSecond line.",
                                      "examples": ["e"], "practical_applications": ["p"], "detailed": "x"})
                    .to_string();
                    let mut sse = String::new();
                    for chunk in text.as_bytes().chunks(16) {
                        let piece = String::from_utf8_lossy(chunk);
                        sse.push_str(&format!("data: {}\n\n", json!({"choices": [{"delta": {"content": piece}}]})));
                    }
                    sse.push_str(&format!("data: {}\n\n", json!({"choices": [{"delta": {}, "finish_reason": "stop"}], "timings": {"predicted_n": 40, "predicted_ms": 100.0}})));
                    sse.push_str("data: [DONE]\n\n");
                    ([("content-type", "text/event-stream")], sse)
                }
            }),
        );
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt().spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeCoordinator {
        addr,
        requests,
        last,
    }
}

#[test]
fn rpc_commands_persist_and_validate() {
    let home = Home::new();
    home.write_settings(
        br#"{"rpc_backends": [{"host": "127.0.0.1", "port": 50099, "has_gpu": true}]}"#,
    );
    let r = run(&home, &[], "rpc add 127.0.0.1:50098\nrpc add 127.0.0.1:50098\nrpc add bad host\nrpc list\nrpc remove 127.0.0.1:50098\nrpc remove 127.0.0.1:1\n");
    r.failed()
        .out_has("✅ Added RPC backend: 127.0.0.1:50098")
        .err_has("Backend already configured: 127.0.0.1:50098")
        .err_has("`rpc add` takes one HOST[:PORT], got `bad host`")
        .out_has("Configured RPC Backends (2)")
        .out_has("✅ Removed RPC backend: 127.0.0.1:50098")
        .err_has("Backend not found: 127.0.0.1:1");
    let s = home.settings();
    assert_eq!(
        s["rpc_backends"],
        json!([{"host": "127.0.0.1", "port": 50099, "has_gpu": true}])
    );
}

#[test]
fn model_and_both_need_a_backend_or_coordinator() {
    let home = Home::new();
    home.write_settings(br#"{"model": "mine"}"#);
    let before = std::fs::read(home.settings_path()).unwrap();
    for line in ["distributed model", "distributed both"] {
        run(&home, &[], &format!("{line}\n"))
            .failed()
            .err_has("No RPC backends or coordinator configured! Nothing changed.");
        assert_eq!(std::fs::read(home.settings_path()).unwrap(), before);
    }
}

#[test]
fn routing_paths_persist_and_say_what_changed() {
    let home = Home::new();
    home.write_settings(
        br#"{"model": "mine", "rpc_backends": [{"host": "127.0.0.1", "port": 50097}]}"#,
    );
    let r = run(&home, &[], "distributed model\n");
    r.ok()
        .out_has("MODEL SHARDING MODE")
        .out_has("Model: mine → codellama:13b");
    let s = home.settings();
    assert_eq!(
        (
            s["task_distribution_enabled"].clone(),
            s["model_sharding_enabled"].clone()
        ),
        (json!(false), json!(true))
    );
    assert_eq!(s["model"], "codellama:13b");
    let r = run(&home, &[], "distributed both\n");
    r.ok()
        .out_has("HYBRID MODE")
        .out_has("Synthesis model: none → codellama:13b");
    let s = home.settings();
    assert_eq!(
        (
            s["task_distribution_enabled"].clone(),
            s["model_sharding_enabled"].clone()
        ),
        (json!(true), json!(true))
    );
    assert_eq!(
        (s["model"].clone(), s["synthesis_model"].clone()),
        (json!("llama3.2"), json!("codellama:13b"))
    );
    run(&home, &[], "distributed off\n")
        .ok()
        .out_has("ALL DISTRIBUTION DISABLED");
    let s = home.settings();
    assert_eq!(
        (
            s["task_distribution_enabled"].clone(),
            s["model_sharding_enabled"].clone()
        ),
        (json!(false), json!(false))
    );
    run(&home, &[], "distributed task\n")
        .ok()
        .out_has("TASK DISTRIBUTION MODE");
    assert_eq!(home.settings()["synthesis_model"], Value::Null);
}

#[test]
fn rpc_backend_flags_are_saved() {
    let home = Home::new();
    let r = run(
        &home,
        &[
            "--enable-distributed-inference",
            "--rpc-backend",
            "127.0.0.1",
            "--rpc-backend",
            "127.0.0.1:50060",
        ],
        "rpc list\n",
    );
    r.ok()
        .err_has("Configured 2 RPC backend(s)")
        .out_has("127.0.0.1:50052")
        .out_has("127.0.0.1:50060");
    let s = home.settings();
    assert_eq!(s["model_sharding_enabled"], true);
    assert_eq!(
        s["rpc_backends"][1],
        json!({"host": "127.0.0.1", "port": 50060})
    );
}

#[test]
fn both_routes_large_models_to_the_coordinator() {
    let fake = fake_coordinator();
    let (a, b) = (sim(SimConfig::default()), sim(SimConfig::default()));
    let home = Home::new();
    home.write_nodes(&node_file(&[
        entry(&a.url(), "a", "A"),
        entry(&b.url(), "b", "B"),
    ]));
    home.write_settings(
        json!({"mode": "distributed", "coordinator_url": format!("http://{}", fake.addr)})
            .to_string()
            .as_bytes(),
    );
    let r = run(&home, &[], "distributed both\nhello there\nnodes\n");
    r.ok()
        .err_has("🔀 llama3.2 → Ollama pool")
        .err_has(
            "🔀 codellama:13b → coordinator: codellama:13b implies 13B parameters (> 8B): sharded",
        )
        .err_has("Using the coordinator already running")
        .out_has("Sharded.\nSecond line.")
        .out_has("found running; left alone")
        .out_has("✅ HEALTHY");
    let editor_row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("| Editor"))
        .unwrap();
    assert!(editor_row.contains("coordinator"), "{editor_row}");
    assert!(r
        .stdout
        .lines()
        .any(|l| l.starts_with("| Researcher") && !l.contains("coordinator")));
    assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
    // llama-server is asked for the Editor's reply by its JSON Schema.
    let rf = fake.last.lock().unwrap()["response_format"].clone();
    assert_eq!(rf["type"], "json_schema", "{rf}");
    assert_eq!(rf["json_schema"]["name"], "Editor");
    assert_eq!(rf["json_schema"]["strict"], true);
    let schema = &rf["json_schema"]["schema"];
    assert_eq!(
        schema["required"],
        json!([
            "summary",
            "key_points",
            "detailed_explanation",
            "examples",
            "practical_applications"
        ]),
        "{schema}"
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn model_path_with_no_backend_left_names_them() {
    let home = Home::new();
    let dead = dead_port();
    let mut c = command(&home, &[]);
    c.env("SOLLOL_COORDINATOR_PORT", dead_port().to_string());
    home.write_settings(
        json!({"rpc_backends": [{"host": "127.0.0.1", "port": dead}]})
            .to_string()
            .as_bytes(),
    );
    let r = run_with(c, "distributed model\nhello there\nnodes\n");
    r.failed()
        .err_has(&format!("RPC backend 127.0.0.1:{dead} is down"))
        .err_has(&format!(
            "no RPC backend is left: 127.0.0.1:{dead} not answering"
        ))
        .out_has("❌ down");
}

#[test]
fn missing_model_file_is_named() {
    let home = Home::new();
    let rpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = rpc.local_addr().unwrap().port();
    home.write_settings(
        json!({"rpc_backends": [{"host": "127.0.0.1", "port": port}]})
            .to_string()
            .as_bytes(),
    );
    let mut c = command(&home, &[]);
    c.env("SOLLOL_COORDINATOR_PORT", dead_port().to_string())
        .env("OLLAMA_MODELS", home.path().join("store"));
    let r = run_with(c, "distributed model\nhello there\n");
    r.failed()
        .err_has("no GGUF file for model `codellama:13b`")
        .err_has("library/codellama/13b (no manifest)");
}
