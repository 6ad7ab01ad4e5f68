//! The simulated Ollama hosts every other test relies on, driven by the official
//! `ollama` Python client (from the venv `scripts/setup.sh` makes): the client
//! lists the models and gets a chat reply, streamed and not.

use synapticllamas::sim::SimConfig;

use crate::support::*;

#[test]
fn the_official_ollama_client_talks_to_a_simulated_host() {
    let h = sim(SimConfig {
        reply_words: 12,
        ..Default::default()
    });
    let script = r#"
import sys, ollama
c = ollama.Client(host=sys.argv[1])
names = [m.model for m in c.list().models]
assert "llama3.2" in " ".join(names), names
r = c.chat(model="llama3.2", messages=[{"role": "user", "content": "Why is the sky blue?"}])
assert r.message.role == "assistant" and r.message.content, r
parts = [p.message.content for p in c.chat(model="llama3.2", stream=True,
         messages=[{"role": "user", "content": "Why is the sky blue?"}])]
assert len(parts) > 1 and "".join(parts) == r.message.content, parts
print("ok", len(parts))
"#;
    let out = std::process::Command::new(pyenv_python())
        .args(["-c", script, &h.url()])
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok "),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
