//! The cluster's models managed as one: `POST /api/pull`, `DELETE
//! /api/delete`, `/api/copy` and the empty generate that loads or unloads a
//! model, through the gateway (driven by the official `ollama` client and
//! curl); the shell's `pull` and `rm`; a cooling node's models still listed;
//! the retry line when one node has the model.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use synapticllamas::sim::{Fault, SimConfig, SimHost};

use crate::gateway_support::*;
use crate::support::*;

/// The names a simulated host lists in `/api/tags`.
fn listed(h: &Arc<SimHost>) -> Vec<String> {
    get_json(&format!("{}/api/tags", h.url()))["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// The names a simulated host has in memory (`/api/ps`).
fn running(h: &Arc<SimHost>) -> Vec<String> {
    get_json(&format!("{}/api/ps", h.url()))["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn has(list: &[String], model: &str) -> bool {
    list.iter().any(|m| m == model)
}

#[test]
fn the_official_client_pulls_loads_ejects_copies_and_deletes_on_every_node() {
    let (a, b) = (quick_sim(8), quick_sim(8));
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let g = Served::start(&home, &[]);
    let pull = r#"
import sys, ollama
c = ollama.Client(host=sys.argv[1])
parts = list(c.pull("tinyllama", stream=True))
assert parts[0].status == "pulling manifest", parts[0]
assert parts[-1].status == "success", parts[-1]
layers = [p for p in parts if p.digest]
assert layers and all(p.completed <= p.total for p in layers), layers
# Each layer ends complete on both nodes (its total is both nodes' sizes).
last = {p.digest: p for p in layers}
assert len(last) == 2 and all(p.completed == p.total for p in last.values()), last
assert "tinyllama:latest" in [m.model for m in c.list().models]
print("ok")
"#;
    python_ok(pull, &[&g.url]);
    for h in [&a, &b] {
        assert!(has(&listed(h), "tinyllama:latest"), "{:?}", listed(h));
    }
    let manage = r#"
import sys, ollama
c = ollama.Client(host=sys.argv[1])
# An empty generate loads the model on every node that has it...
r = c.generate(model="tinyllama", keep_alive="5m")
assert r.done and r.done_reason == "load" and r.response == "", r
print("loaded")
sys.stdout.flush()
sys.stdin.readline()
# ... and with keep_alive=0 ejects it wherever it is loaded.
r = c.generate(model="tinyllama", keep_alive=0)
assert r.done and r.done_reason == "unload", r
print("unloaded")
sys.stdout.flush()
sys.stdin.readline()
assert c.copy("tinyllama", "tiny-copy").status == "success"
assert c.delete("tinyllama").status == "success"
try:
    c.delete("tinyllama")
    raise SystemExit("a second delete found the model")
except ollama.ResponseError as e:
    assert e.status_code == 404 and e.error == "model 'tinyllama' not found", (e.status_code, e.error)
print("ok")
"#;
    let mut py = std::process::Command::new(pyenv_python())
        .args(["-c", manage, &g.url])
        .env("NO_PROXY", "*")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(py.stdout.take().unwrap());
    let mut stdin = py.stdin.take().unwrap();
    let step = |want: &str| {
        let got = out
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_default();
        assert_eq!(got, want, "the script did not get to {want:?}");
    };
    step("loaded");
    for h in [&a, &b] {
        assert_eq!(running(h), ["tinyllama:latest"]);
    }
    use std::io::Write;
    writeln!(stdin).unwrap();
    step("unloaded");
    for h in [&a, &b] {
        assert!(running(h).is_empty(), "{:?}", running(h));
    }
    writeln!(stdin).unwrap();
    step("ok");
    assert!(py.wait().unwrap().success());
    for h in [&a, &b] {
        let l = listed(h);
        assert!(
            !has(&l, "tinyllama:latest") && has(&l, "tiny-copy:latest"),
            "{l:?}"
        );
    }
}

#[test]
fn a_pull_that_fails_on_a_node_ends_with_its_error_and_no_success() {
    let a = quick_sim(8);
    let b = sim(SimConfig {
        pull_error: Some("simulated disk full".into()),
        ..Default::default()
    });
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let g = Served::start(&home, &[]);
    let (ok, body) = curl(&[
        &format!("{}/api/pull", g.url),
        "-d",
        r#"{"model":"tinyllama"}"#,
    ]);
    assert!(ok);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["node"], "beta", "{body}");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.contains("pull tinyllama on beta") && error.contains("simulated disk full"),
        "{error}"
    );
    assert!(
        !lines.iter().any(|l| l["status"] == "success"),
        "no success while a node lacks the model: {body}"
    );
    assert!(lines
        .iter()
        .any(|l| l["status"] == "pulled on alpha (1 of 2 nodes)"));
    assert!(has(&listed(&a), "tinyllama:latest"));
    assert!(!has(&listed(&b), "tinyllama:latest"));
    // Named nodes only (the header), whole: the node's failure as Ollama's 500.
    let (_, body) = curl(&[
        &format!("{}/api/pull", g.url),
        "-H",
        "X-SynapticLlamas-Nodes: beta",
        "-w",
        "\n%{http_code}",
        "-d",
        r#"{"model":"gemma3:1b","stream":false}"#,
    ]);
    let (json, code) = body.rsplit_once('\n').unwrap();
    assert_eq!(code, "500", "{body}");
    let v: Value = serde_json::from_str(json).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("pull gemma3:1b failed on beta (simulated disk full)"),
        "{v}"
    );
    let (_, body) = curl(&[
        &format!("{}/api/pull", g.url),
        "-H",
        "X-SynapticLlamas-Nodes: gamma",
        "-d",
        r#"{"model":"tinyllama"}"#,
    ]);
    assert!(
        body.contains("x-synapticllamas-nodes: no node named `gamma` (nodes: alpha, beta)"),
        "{body}"
    );
    // Create and push stay on a node.
    let (_, body) = curl(&[&format!("{}/api/push", g.url), "-d", r#"{"model":"x"}"#]);
    assert!(body.contains("run it on the node itself"), "{body}");
}

#[test]
fn the_shell_pulls_onto_every_node_and_removes_with_yes_only() {
    let (a, b) = (quick_sim(8), quick_sim(8));
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let r = run(&home, &[], "pull tinyllama\n");
    r.ok()
        .err_has("pulling tinyllama onto 2 node(s) on 2 host(s)")
        .err_has("✅ alpha: pulled tinyllama in ")
        .err_has("✅ beta: pulled tinyllama in ");
    for name in ["alpha", "beta"] {
        let row = r
            .stdout
            .lines()
            .find(|l| l.contains(&format!("| {name} ")))
            .unwrap();
        assert!(row.contains("| pulled "), "{row}");
    }
    assert!(has(&listed(&a), "tinyllama:latest") && has(&listed(&b), "tinyllama:latest"));
    // Again: nothing to do.
    run(&home, &[], "pull tinyllama\n")
        .ok()
        .err_has("every node has tinyllama already");
    // Piped without --yes: refused, nothing deleted.
    let r = run(&home, &[], "rm tinyllama\n");
    r.failed()
        .err_has("rm tinyllama: nothing deleted")
        .err_has("--yes");
    assert_eq!(
        r.stderr.lines().filter(|l| l.contains("❌")).count(),
        1,
        "{}",
        r.stderr
    );
    assert!(has(&listed(&a), "tinyllama:latest"));
    let r = run(&home, &[], "rm tinyllama --yes\n");
    r.ok().err_has("✅ alpha: deleted tinyllama");
    assert!(r.stdout.contains("| deleted "), "{}", r.stdout);
    assert!(!has(&listed(&a), "tinyllama:latest") && !has(&listed(&b), "tinyllama:latest"));
    run(&home, &[], "rm tinyllama --yes\n")
        .failed()
        .err_has("rm: no node has tinyllama");
}

#[test]
fn a_node_that_fails_a_pull_is_in_the_table_and_the_exit_status() {
    let a = quick_sim(8);
    let b = sim(SimConfig {
        pull_error: Some("simulated disk full".into()),
        ..Default::default()
    });
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let r = run(&home, &[], "pull phi3:mini\npull nope:7b alpha\n");
    r.failed()
        .err_has("✅ alpha: pulled phi3:mini")
        .err_has("❌ beta: pull of phi3:mini failed after")
        .err_has("❌ pull phi3:mini failed on 1 of 2 node(s): beta (simulated disk full)");
    let beta = r.stdout.lines().find(|l| l.contains("| beta ")).unwrap();
    assert!(beta.contains("| failed: simulated disk full "), "{beta}");
    // A name the library lacks: Ollama's words, on the node named only.
    r.err_has("alpha: pull of nope:7b failed after")
        .err_has("pull model manifest: file does not exist");
    run(&home, &[], "pull phi3:mini gamma\n")
        .failed()
        .err_has("no node named `gamma` (nodes: alpha, beta)");
}

#[test]
fn a_cooling_nodes_models_stay_listed_and_asking_for_one_explains_the_node() {
    let a = sim(SimConfig {
        models: vec!["solo:latest".into()],
        reply_words: 8,
        ..Default::default()
    });
    let b = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let g = Served::start(&home, &[]);
    let tags = |g: &Served| -> Vec<String> {
        get_json(&format!("{}/api/tags", g.url))["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(has(&tags(&g), "solo:latest"));
    a.kill();
    let ask = || {
        curl(&[
            &format!("{}/api/generate", g.url),
            "-w",
            "\n%{http_code}",
            "-d",
            r#"{"model":"solo","prompt":"hi","stream":false}"#,
        ])
        .1
    };
    let first = ask();
    let (_, code) = first.rsplit_once('\n').unwrap();
    assert_eq!(code, "502", "the node's failure, not 404: {first}");
    // The node is cooling now: its models are still listed...
    wait_until("alpha cooling", Duration::from_secs(20), || {
        get_json(&format!("{}/api/cluster", g.url))["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "alpha" && n["status"] == "cooling")
    });
    let listed_now = tags(&g);
    assert!(has(&listed_now, "solo:latest"), "{listed_now:?}");
    assert!(has(&listed_now, "llama3.2:latest"));
    // ... and a request for the model it alone has gets the gateway's account.
    // (503 with Retry-After: the node may come back.)
    let again = ask();
    let (body, code) = again.rsplit_once('\n').unwrap();
    assert_eq!(code, "503", "{again}");
    let v: Value = serde_json::from_str(body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("no node can take a request for solo now")
            && msg.contains("alpha: cooling"),
        "{msg}"
    );
}

#[test]
fn a_retry_on_the_only_node_with_the_model_says_so() {
    let a = sim(SimConfig {
        reply_words: 8,
        fault: Fault::Reset,
        fault_every: 2,
        ..Default::default()
    });
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let mut g = Served::start(&home, &[]);
    for _ in 0..2 {
        let (_, out) = curl(&[
            &format!("{}/api/generate", g.url),
            "-d",
            r#"{"model":"llama3.2","prompt":"hi","stream":false}"#,
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["done"], true, "{out}");
    }
    let line = g.until_err("failed on alpha", Duration::from_secs(10));
    assert!(
        line.contains("retrying from scratch on alpha (the only node that can take it)")
            && !line.contains("another host"),
        "{line}"
    );
}
