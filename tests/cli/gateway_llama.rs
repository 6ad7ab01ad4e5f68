//! The gateway's coordinator path with the real llama.cpp binaries: under
//! `distributed model` every request goes to a `llama-server` sharding a small
//! model over an `rpc-server`; Ollama clients get its OpenAI-shaped reply
//! translated back into Ollama's API, OpenAI clients get it as OpenAI's.

use std::time::Duration;

use serde_json::json;

use crate::gateway_support::*;
use crate::llama::{binaries, with_llama_cpp, RpcServer};
use crate::support::*;

#[test]
fn ollama_and_openai_clients_reach_the_sharded_model_through_the_gateway() {
    let b = binaries();
    let home = Home::new();
    let rpc = RpcServer::start(&b.rpc_server, home.path().join("rpc.log"));
    let coord_port = dead_port();
    home.write_settings(
        json!({"model_sharding_enabled": true, "task_distribution_enabled": false,
               "rpc_backends": [{"host": "127.0.0.1", "port": rpc.port}],
               "model": "smollm2:135m", "num_predict": 24,
               "coordinator_start_timeout_secs": 180})
        .to_string()
        .as_bytes(),
    );
    let mut g = Served::start_with(with_llama_cpp(command(&home, &[]), &b, coord_port), &[]);
    assert!(
        g.seen_err
            .iter()
            .any(|l| l.contains("✅ Coordinator ready at")),
        "{}",
        g.seen_err.join("\n")
    );
    let script = r#"
import sys, ollama, openai
url = sys.argv[1]
c = ollama.Client(host=url)
names = [m.model for m in c.list().models]
assert "smollm2:135m" in names, names
q = [{"role": "user", "content": "Say hello."}]
r = c.chat(model="smollm2:135m", messages=q, options={"num_predict": 16, "temperature": 0})
assert r.done and r.message.role == "assistant" and r.message.content.strip(), r
assert r.eval_count and r.eval_count <= 16, r.eval_count
parts = list(c.chat(model="smollm2:135m", messages=q, stream=True, options={"num_predict": 16}))
assert parts[-1].done and "".join(p.message.content for p in parts).strip(), parts[-3:]
g = c.generate(model="smollm2:135m", prompt="Once upon a time", options={"num_predict": 12})
assert g.done and g.response.strip(), g
o = openai.OpenAI(base_url=url + "/v1", api_key="x")
cc = o.chat.completions.create(model="smollm2:135m", messages=q, max_tokens=12)
assert cc.choices[0].message.content.strip() and cc.usage.completion_tokens > 0, cc
chunks = list(o.chat.completions.create(model="smollm2:135m", messages=q, max_tokens=12, stream=True,
                                        stream_options={"include_usage": True}))
assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, chunks[-1]
assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).strip()
print("ok")
"#;
    python_ok(script, &[&g.url]);
    let (_, out) = curl(&[
        "-D",
        "-",
        &format!("{}/api/generate", g.url),
        "-d",
        r#"{"model":"smollm2:135m","prompt":"Hi","stream":false,"options":{"num_predict":4}}"#,
    ]);
    assert!(
        out.to_ascii_lowercase()
            .contains("x-synapticllamas-node: coordinator"),
        "{out}"
    );
    g.signal(libc::SIGTERM);
    g.until_err("👋 Gateway stopped", Duration::from_secs(30));
    let (code, stderr) = g.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    drop(rpc);
}
