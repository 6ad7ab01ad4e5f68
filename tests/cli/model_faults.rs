//! Failures that are the request's, not the node's (issue 21, item 4): a
//! model broken on every host (the same error for the same model from two
//! hosts) and a model a node says it does not have (Ollama's 404) leave the
//! hosts healthy; later requests for the broken model fail with the real
//! reason while other models keep using every host. Through the gateway
//! (`serve`) and in the shell.

use std::sync::Arc;

use serde_json::{json, Value};
use synapticllamas::sim::{Fault, SimConfig, SimHost};

use crate::gateway_support::{self as gw, curl, get_json, Served};
use crate::support::*;

/// A host whose `qwen2.5` answers HTTP 500 (llama3.2 works), replies paced
/// so that requests running at once overlap.
fn qwen_broken() -> Arc<SimHost> {
    sim(SimConfig {
        fault: Fault::Http500,
        fault_model: Some("qwen2.5:0.5b".into()),
        tokens_per_sec: 100.0,
        reply_words: 20,
        ..SimConfig::default()
    })
}

/// The health word of every node, per the gateway's `/api/cluster`.
fn cluster_health(url: &str) -> Vec<(String, String)> {
    let v = get_json(&format!("{url}/api/cluster"));
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// POST `body` to the gateway's `path`; (HTTP status, body).
fn post(url: &str, path: &str, body: &Value) -> (u16, String) {
    let (ok, out) = curl(&[
        "-w",
        "\n%{http_code}",
        &format!("{url}{path}"),
        "-d",
        &body.to_string(),
    ]);
    assert!(ok, "curl {path} failed");
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

#[test]
fn a_model_broken_on_every_host_leaves_the_hosts_healthy_through_the_gateway() {
    let (a, b) = (qwen_broken(), qwen_broken());
    let home = gw::home_with(&[(&a, "node-a", "box-a"), (&b, "node-b", "box-b")]);
    let g = Served::start(&home, &[]);
    let qwen = json!({"model": "qwen2.5:0.5b", "prompt": "hello", "stream": false});
    for i in 0..3 {
        let (status, body) = post(&g.url, "/api/generate", &qwen);
        assert!(status >= 500, "qwen request {i}: {status} {body}");
        assert!(
            body.contains("simulated internal server error"),
            "qwen request {i} does not give the real reason: {body}"
        );
    }
    let health = cluster_health(&g.url);
    assert!(
        health.iter().all(|(_, s)| s == "up"),
        "a model's error counted against the hosts: {health:?}"
    );
    // Four llama3.2 requests at once use both hosts.
    let before = (a.stats().completed, b.stats().completed);
    let url = g.url.clone();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({"model": "llama3.2", "prompt": format!("question {i}"), "stream": false});
                post(&url, "/api/generate", &body)
            })
        })
        .collect();
    for c in clients {
        let (status, body) = c.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let served = (
        a.stats().completed - before.0,
        b.stats().completed - before.1,
    );
    assert_eq!(served.0 + served.1, 4, "{served:?}");
    assert!(
        served.0 >= 1 && served.1 >= 1,
        "the llama3.2 requests ran on one host only: {served:?}; health {:?}",
        cluster_health(&g.url)
    );
}

#[test]
fn orchestrate_with_a_model_no_node_has_is_404_and_leaves_the_nodes_healthy() {
    let (a, b) = (gw::quick_sim(10), gw::quick_sim(10));
    let home = gw::home_with(&[(&a, "node-a", "box-a"), (&b, "node-b", "box-b")]);
    let g = Served::start(&home, &[]);
    let (status, body) = post(
        &g.url,
        "/api/orchestrate",
        &json!({"query": "hello there", "model": "nope", "stream": false}),
    );
    assert_eq!(status, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"error": "model 'nope' not found"}));
    let health = cluster_health(&g.url);
    assert!(
        health.iter().all(|(_, s)| s != "suspect" && s != "cooling"),
        "{health:?}"
    );
    assert_eq!(a.stats().requests + b.stats().requests, 0);
}

/// The Status column of `nodes` for each node.
fn node_states(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("| node-") && l.contains("http://"))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn a_model_broken_on_every_host_leaves_the_hosts_healthy_in_the_shell() {
    let (a, b) = (qwen_broken(), qwen_broken());
    let home = nodes_home(
        &[&a, &b],
        json!({"mode": "distributed", "request_idle_timeout_ms": 5000}),
    );
    let script = "model qwen2.5:0.5b\nhello there\nhello again\nhello once more\nnodes\n\
                  model llama3.2\nWhat is the capital of France?\n";
    let r = run(&home, &[], script);
    r.failed();
    // Each qwen query fails with the real reason.
    assert_eq!(
        r.stderr.matches("❌ Query failed").count(),
        3,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("simulated internal server error"),
        "{}",
        r.stderr
    );
    let states = node_states(&r.stdout);
    assert_eq!(states.len(), 2, "{}", r.stdout);
    assert!(
        states.iter().all(|l| l.contains("healthy")),
        "a model's error counted against the hosts:\n{}",
        states.join("\n")
    );
    assert!(
        !r.stderr.contains("is suspect") && !r.stderr.contains("cooled down"),
        "{}",
        r.stderr
    );
    // The llama3.2 question runs its Researcher and Critic on both hosts.
    r.out_has("hosts used: 2 of 2");
}

#[test]
fn a_model_no_node_has_leaves_the_nodes_healthy_in_the_shell() {
    let (a, b) = (sim(paced()), sim(paced()));
    let home = nodes_home(&[&a, &b], json!({"mode": "distributed"}));
    let r = run(&home, &[], "model nope\nhello there\nnodes\n");
    r.failed().err_has("model 'nope' not found");
    let states = node_states(&r.stdout);
    assert_eq!(states.len(), 2, "{}", r.stdout);
    assert!(
        states.iter().all(|l| l.contains("healthy")),
        "a missing model counted against the nodes:\n{}",
        states.join("\n")
    );
}
