//! `synapticllamas serve` in front of simulated hosts, driven by real clients:
//! the official `ollama` and `openai` Python libraries and curl. What a client
//! of Ollama or OpenAI sees: the answers, the stream shapes, the errors, the
//! headers naming the node, and the server going on serving after bad input.

use std::time::Duration;

use serde_json::Value;
use synapticllamas::sim::Fault;

use crate::gateway_support::*;
use crate::support::*;

#[test]
fn the_official_ollama_client_uses_the_whole_cluster_through_the_gateway() {
    let (a, b) = (quick_sim(12), quick_sim(12));
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let g = Served::start(&home, &[]);
    let script = r#"
import sys, ollama
gw, node = sys.argv[1], sys.argv[2]
c = ollama.Client(host=gw)
names = sorted(m.model for m in c.list().models)
assert names == ["llama3.2:latest", "mxbai-embed-large:latest", "qwen2.5:0.5b"], names
q = [{"role": "user", "content": "Why is the sky blue?"}]
r = c.chat(model="llama3.2", messages=q, options={"temperature": 0.1}, keep_alive="5m")
assert r.done and r.done_reason == "stop" and r.message.role == "assistant", r
assert r.message.content.startswith("Why is the sky blue?"), r.message.content
direct = ollama.Client(host=node).chat(model="llama3.2", messages=q)
assert r.message.content == direct.message.content
parts = list(c.chat(model="llama3.2", messages=q, stream=True))
assert len(parts) > 3 and parts[-1].done and not parts[0].done, len(parts)
assert "".join(p.message.content for p in parts) == r.message.content
g = c.generate(model="llama3.2", prompt="Tell me about tides")
assert g.done and g.response.startswith("Tell me about tides"), g
gs = list(c.generate(model="llama3.2", prompt="Tell me about tides", stream=True))
assert "".join(p.response for p in gs) == g.response and gs[-1].done
e = c.embed(model="mxbai-embed-large", input=["tides", "moon", "sun", "waves", "sand"])
want = ollama.Client(host=node).embed(model="mxbai-embed-large", input=["tides", "moon", "sun", "waves", "sand"])
assert e.embeddings == want.embeddings, "same vectors, same order"
one = c.embed(model="mxbai-embed-large", input="tides")
assert one.embeddings == want.embeddings[:1]
old = c.embeddings(model="mxbai-embed-large", prompt="tides")
assert len(old.embedding) == 64
running = c.ps().models
assert {m.model for m in running} >= {"llama3.2:latest"}, running
s = c.show("llama3.2")
assert s.details.family == "simulated", s
try:
    c.chat(model="llama9", messages=q)
    raise SystemExit("no error for an unknown model")
except ollama.ResponseError as ex:
    assert ex.status_code == 404 and ex.error == "model 'llama9' not found", (ex.status_code, ex.error)
print("ok")
"#;
    python_ok(script, &[&g.url, &a.url()]);
    // Each running model names its node and host (the client library drops
    // fields it does not know, so they are read here).
    let ps = get_json(&format!("{}/api/ps", g.url));
    let running = ps["models"].as_array().unwrap();
    assert!(!running.is_empty());
    for m in running {
        let (node, host) = (m["node"].as_str().unwrap(), m["host"].as_str().unwrap());
        assert!(
            (node, host) == ("alpha", "box-a") || (node, host) == ("beta", "box-b"),
            "{m}"
        );
    }
    // The batch of five was split across both hosts.
    assert!(a.stats().embed_requests >= 1 && b.stats().embed_requests >= 1);
    assert_eq!(a.stats().max_in_flight, 1);
    assert_eq!(b.stats().max_in_flight, 1);
}

#[test]
fn the_official_openai_client_uses_the_cluster_through_the_gateway() {
    let a = quick_sim(12);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &[]);
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
msgs = [{"role": "user", "content": "Why is the sky blue?"}]
r = c.chat.completions.create(model="llama3.2", messages=msgs, max_tokens=500, temperature=0.2)
text = r.choices[0].message.content
assert r.object == "chat.completion" and r.choices[0].finish_reason == "stop", r
assert text.startswith("Why is the sky blue?") and r.usage.completion_tokens > 3, r
chunks = list(c.chat.completions.create(model="llama3.2", messages=msgs, stream=True,
                                        stream_options={"include_usage": True}))
assert chunks[-1].usage is not None and chunks[-1].choices == [], chunks[-1]
assert chunks[-2].choices[0].finish_reason == "stop"
assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
plain = list(c.chat.completions.create(model="llama3.2", messages=msgs, stream=True))
assert all(ch.usage is None for ch in plain)
t = c.completions.create(model="llama3.2", prompt="Tides")
assert t.object == "text_completion" and t.choices[0].text.startswith("Tides"), t
ids = sorted(m.id for m in c.models.list())
assert ids == ["llama3.2:latest", "mxbai-embed-large:latest", "qwen2.5:0.5b"], ids
assert c.models.retrieve("llama3.2").id == "llama3.2:latest"
# The client asks for base64 by default and decodes it; floats must match.
e = c.embeddings.create(model="mxbai-embed-large", input=["tides", "moon", "sun"])
f = c.embeddings.create(model="mxbai-embed-large", input=["tides", "moon", "sun"], encoding_format="float")
assert [d.index for d in e.data] == [0, 1, 2] and len(e.data[0].embedding) == 64
for x, y in zip(e.data, f.data):
    assert max(abs(p - q) for p, q in zip(x.embedding, y.embedding)) < 1e-6
try:
    c.chat.completions.create(model="llama9", messages=msgs)
    raise SystemExit("no error for an unknown model")
except openai.NotFoundError as ex:
    assert ex.body["message"] == "model 'llama9' not found", ex.body
print("ok")
"#;
    python_ok(script, &[&g.url]);
}

#[test]
fn curl_sees_ollamas_shapes_headers_and_errors_and_the_gateway_keeps_serving() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--max-body-mb", "1"]);
    let u = &g.url;
    let (_, root) = curl(&[&format!("{u}/")]);
    assert_eq!(root, "Ollama is running");
    let (_, head) = curl(&["-I", &format!("{u}/")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A streamed chat: NDJSON, one object per line, the last one done; headers name the node.
    let (ok, out) = curl(&[
        "-N",
        "-D",
        "-",
        &format!("{u}/api/chat"),
        "-d",
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
    ]);
    assert!(ok);
    let (headers, body) = out.split_once("\r\n\r\n").unwrap();
    let headers = headers.to_ascii_lowercase();
    assert!(
        headers.contains("content-type: application/x-ndjson"),
        "{headers}"
    );
    assert!(
        headers.contains("x-synapticllamas-node: alpha"),
        "{headers}"
    );
    assert!(
        headers.contains("x-synapticllamas-host: box-a"),
        "{headers}"
    );
    assert!(headers.contains("x-synapticllamas-queue-ms: "), "{headers}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 3);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));

    let status = |args: &[&str]| -> (String, Value) {
        let mut a = vec!["-w", "\n%{http_code}"];
        a.extend_from_slice(args);
        let (_, out) = curl(&a);
        let (body, code) = out.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let chat = format!("{u}/api/chat");
    let (code, v) = status(&[&chat, "-d", r#"{"model":"nope:7b","messages":[]}"#]);
    assert_eq!(
        (code.as_str(), v["error"].as_str()),
        ("404", Some("model 'nope:7b' not found"))
    );
    let (code, v) = status(&[&chat, "-d", "{not json"]);
    assert_eq!(code, "400");
    assert!(
        v["error"].as_str().unwrap().starts_with("invalid JSON"),
        "{v}"
    );
    let (code, v) = status(&[&chat, "-d", r#"{"messages":[]}"#]);
    assert_eq!(
        (code.as_str(), v["error"].as_str()),
        ("400", Some("model is required"))
    );
    let (code, v) = status(&[&chat, "-X", "POST"]);
    assert_eq!(
        (code.as_str(), v["error"].as_str()),
        ("400", Some("missing request body"))
    );
    let (code, v) = status(&[&chat]);
    assert_eq!(code, "405");
    assert!(
        v["error"].as_str().unwrap().contains("GET is not allowed"),
        "{v}"
    );
    let big = format!(
        r#"{{"model":"llama3.2","prompt":"{}"}}"#,
        "x".repeat(1_200_000)
    );
    let body_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body_file.path(), big).unwrap();
    let (code, v) = status(&[
        &format!("{u}/api/generate"),
        "--data-binary",
        &format!("@{}", body_file.path().display()),
    ]);
    assert_eq!(code, "413", "{v}");
    assert!(v["error"].as_str().unwrap().contains("too large"), "{v}");
    let (code, v) = status(&[&format!("{u}/api/create"), "-d", r#"{"model":"llama3.2"}"#]);
    assert_eq!(code, "501");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("run it on the node") && msg.contains(&format!("alpha ({})", a.url())),
        "{msg}"
    );
    let (code, v) = status(&[&format!("{u}/api/nowhere")]);
    assert_eq!(code, "404");
    assert!(
        v["error"].as_str().unwrap().contains("no such endpoint"),
        "{v}"
    );
    let (code, v) = status(&[
        &format!("{u}/v1/chat/completions"),
        "-d",
        r#"{"model":"nope","messages":[]}"#,
    ]);
    assert_eq!(code, "404");
    assert_eq!(v["error"]["code"], "model_not_found", "OpenAI's shape: {v}");
    // Still serving, and counting.
    let (_, out) = curl(&[
        &format!("{u}/api/generate"),
        "-d",
        r#"{"model":"llama3.2","prompt":"hi","stream":false}"#,
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["done"], true);
    let (_, metrics) = curl(&[&format!("{u}/metrics")]);
    for want in [
        "synapticllamas_gateway_requests_total{route=\"/api/chat\",model=\"llama3.2\",node=\"alpha\",status=\"200\"} 1",
        "synapticllamas_gateway_requests_total{route=\"/api/chat\",model=\"-\",node=\"-\",status=\"404\"} 1",
        "synapticllamas_gateway_queue_wait_seconds_count 2",
        "synapticllamas_gateway_queue_depth 0",
        "synapticllamas_node_requests_total{node=\"alpha\",host=\"box-a\"}",
    ] {
        assert!(metrics.contains(want), "no {want:?} in:\n{metrics}");
    }
}

#[test]
fn a_node_that_fails_before_the_first_byte_is_invisible_to_the_client() {
    let bad = quick_sim(10);
    bad.set_fault(Fault::Reset, 0);
    let good = quick_sim(10);
    let home = Home::new();
    home.write_nodes(&node_file(&[
        serde_json::json!({"url": bad.url(), "name": "shaky", "priority": 0, "host_id": "box-a"}),
        serde_json::json!({"url": good.url(), "name": "steady", "priority": 5, "host_id": "box-b"}),
    ]));
    let g = Served::start(&home, &[]);
    let (ok, out) = curl(&[
        "-N",
        "-D",
        "-",
        &format!("{}/api/generate", g.url),
        "-d",
        r#"{"model":"llama3.2","prompt":"Why is the sky blue?"}"#,
    ]);
    assert!(ok);
    let (headers, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-synapticllamas-node: steady"),
        "{headers}"
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{body}");
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(bad.stats().requests >= 1, "the shaky node was tried first");
    let (_, m) = curl(&[&format!("{}/metrics", g.url)]);
    assert!(m.contains("synapticllamas_gateway_retries_total 1"), "{m}");
}

#[test]
fn a_reply_that_breaks_after_it_began_ends_with_an_error_the_clients_raise() {
    let flaky = quick_sim(40);
    flaky.set_fault(Fault::Drop, 0);
    let home = home_with(&[(&flaky, "flaky", "box-a")]);
    let g = Served::start(&home, &[]);
    let script = r#"
import sys, ollama, openai
c = ollama.Client(host=sys.argv[1])
got = []
try:
    for p in c.chat(model="llama3.2", stream=True, messages=[{"role": "user", "content": "hi"}]):
        got.append(p.message.content)
    raise SystemExit("the stream ended without an error")
except ollama.ResponseError as e:
    assert got and "flaky failed after the reply began" in e.error, (got, e.error)
o = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="x")
seen = 0
try:
    for ch in o.chat.completions.create(model="llama3.2", stream=True, messages=[{"role": "user", "content": "hi"}]):
        seen += 1
    raise SystemExit("the OpenAI stream ended without an error")
except openai.APIError as e:
    assert seen > 0 and "failed after the reply began" in e.message, (seen, e.message)
print("ok")
"#;
    python_ok(script, &[&g.url]);
    // The raw stream: tokens, then one error line, and nothing pretends to be done.
    let (_, body) = curl(&[
        "-N",
        &format!("{}/api/generate", g.url),
        "-d",
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    ]);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2, "{body}");
    assert!(lines.last().unwrap()["error"].is_string(), "{body}");
    assert!(lines.iter().all(|l| l["done"] != true), "{body}");
}

#[test]
fn orchestrate_streams_progress_and_ends_with_what_dash_i_prints() {
    let (a, b) = (quick_sim(30), quick_sim(30));
    let home = home_with(&[(&a, "alpha", "box-a"), (&b, "beta", "box-b")]);
    let g = Served::start(&home, &[]);
    let (ok, out) = curl(&[
        "-N",
        &format!("{}/api/orchestrate", g.url),
        "-d",
        r#"{"query":"What is a tide?","collab":false,"strategy":"parallel"}"#,
    ]);
    assert!(ok);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for want in ["queued", "started", "finished", "notice"] {
        assert!(events.contains(&want), "no {want} event in {events:?}");
    }
    let started: Vec<&Value> = lines.iter().filter(|l| l["event"] == "started").collect();
    assert!(started
        .iter()
        .all(|s| s["host"] == "box-a" || s["host"] == "box-b"));
    let last = lines.last().unwrap();
    assert!(
        last["final_output"]
            .as_str()
            .unwrap()
            .contains("## Summary"),
        "{last}"
    );
    // The same object as `-i` prints (same keys).
    let i = run(&home, &["-i", "What is a tide?"], "");
    i.ok();
    let want: Value = serde_json::from_str(&i.stdout).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(last), keys(&want));
    // How the agents' replies came back: all valid, asked with a schema.
    let replies = &last["metrics"]["replies"];
    let total = replies["total"].as_u64().unwrap();
    assert!(total >= 3, "{replies}");
    assert_eq!(replies["valid_first_try"], total, "{replies}");
    assert_eq!(replies["with_schema"], total, "{replies}");
    let (_, bad) = curl(&[
        "-w",
        " %{http_code}",
        &format!("{}/api/orchestrate", g.url),
        "-d",
        r#"{"query":"x","strategy":"fastest"}"#,
    ]);
    assert!(
        bad.ends_with(" 400") && bad.contains("strategy `fastest`"),
        "{bad}"
    );
}

#[test]
fn the_dashboard_is_served_under_its_own_path_and_shows_gateway_traffic() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &[]);
    let (_, page) = curl(&["-L", &format!("{}/dashboard", g.url)]);
    assert!(
        page.contains("<title>SynapticLlamas dashboard</title>"),
        "{page}"
    );
    let (_, js) = curl(&[&format!("{}/dashboard/dashboard.js", g.url)]);
    assert!(js.contains("EventSource(\"api/events\")"));
    curl(&[
        &format!("{}/api/generate", g.url),
        "-d",
        r#"{"model":"llama3.2","prompt":"hi","stream":false}"#,
    ]);
    wait_until(
        "the request on the dashboard",
        Duration::from_secs(5),
        || {
            let snap = get_json(&format!("{}/dashboard/api/snapshot", g.url));
            snap["gateway"]["recent"].as_array().is_some_and(|r| {
                r.iter().any(|x| {
                    x["route"] == "/api/generate" && x["node"] == "alpha" && x["status"] == 200
                })
            })
        },
    );
    let cluster = get_json(&format!("{}/api/cluster", g.url));
    assert_eq!(cluster["hosts"][0]["host"], "box-a");
    assert_eq!(cluster["hosts"][0]["capacity"], 1);
    assert_eq!(cluster["queue"]["depth"], 0);
    assert_eq!(cluster["nodes"][0]["name"], "alpha");
}

#[test]
fn api_keys_are_required_when_given_and_each_key_is_a_client() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &["--api-key", "sesame", "--api-key", "other"]);
    let script = r#"
import sys, ollama, openai
url = sys.argv[1]
assert ollama.Client(host=url, headers={"Authorization": "Bearer sesame"}).list().models
try:
    ollama.Client(host=url).list()
    raise SystemExit("no key, yet answered")
except ollama.ResponseError as e:
    assert e.status_code == 401, e
r = openai.OpenAI(base_url=url + "/v1", api_key="other").chat.completions.create(
    model="llama3.2", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content
try:
    openai.OpenAI(base_url=url + "/v1", api_key="wrong").models.list()
    raise SystemExit("a wrong key, yet answered")
except openai.AuthenticationError:
    pass
print("ok")
"#;
    python_ok(script, &[&g.url]);
    let (_, root) = curl(&[&format!("{}/", g.url)]);
    assert_eq!(root, "Ollama is running", "the liveness probe needs no key");
}

#[test]
fn a_non_loopback_address_needs_a_key_and_a_taken_port_is_named() {
    let home = Home::new();
    let r = run(&home, &["serve", "--bind", "0.0.0.0", "--port", "0"], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("needs an API key") && r.stderr.contains("--no-auth"),
        "{}",
        r.stderr
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let r = run(&home, &["serve", "--port", &port], "");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && r.stderr.contains("in use")
            && r.stderr.contains("--port"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_loopback_gateway_refuses_requests_addressed_to_another_host() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    let g = Served::start(&home, &[]);
    let (_, out) = curl(&[
        "-w",
        " %{http_code}",
        "-H",
        "Host: attacker.example",
        &format!("{}/api/tags", g.url),
    ]);
    assert!(out.ends_with(" 403"), "{out}");
    let (_, out) = curl(&[
        "-w",
        " %{http_code}",
        "-H",
        "Host: localhost:11434",
        &format!("{}/api/tags", g.url),
    ]);
    assert!(out.ends_with(" 200"), "{out}");
}

#[test]
fn headless_serve_runs_the_health_monitor_and_says_when_a_node_goes_down() {
    let a = quick_sim(8);
    let home = home_with(&[(&a, "alpha", "box-a")]);
    home.write_settings(br#"{"monitor_interval_secs": 1}"#);
    let mut g = Served::start(&home, &[]);
    a.kill();
    let line = g.until_err("node alpha is down", Duration::from_secs(10));
    assert!(line.starts_with("⚠️"), "{line}");
    // The gateway's view of the node changed with it (cooling, or suspect when
    // the probe reused a connection the dead host still held).
    let cluster = get_json(&format!("{}/api/cluster", g.url));
    let status = cluster["nodes"][0]["status"].as_str().unwrap();
    assert!(status == "cooling" || status == "suspect", "{cluster}");
}
