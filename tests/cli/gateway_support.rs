//! Running `synapticllamas serve` in front of simulated hosts, and the clients
//! that talk to it: the official `ollama` and `openai` Python libraries (from
//! the venv `scripts/setup.sh` makes), curl, and a plain HTTP client for the
//! gateway's own JSON (`/api/cluster`, `/metrics`).

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use synapticllamas::sim::{SimConfig, SimHost};

use crate::support::*;

/// A simulated host (kept alive by the caller), the node name it is
/// registered as and the physical host it stands on.
pub type Member<'a> = (&'a Arc<SimHost>, &'a str, &'a str);

/// A home whose node file lists every listener of `members` (a host with two
/// listeners is two nodes on one machine).
pub fn home_with(members: &[Member<'_>]) -> Home {
    let home = Home::new();
    let mut entries = Vec::new();
    for (sim, name, host_id) in members {
        for (i, url) in sim.urls().iter().enumerate() {
            let name = if i == 0 {
                name.to_string()
            } else {
                format!("{name}-{}", i + 1)
            };
            entries.push(entry(url, &name, host_id));
        }
    }
    home.write_nodes(&node_file(&entries));
    home
}

/// A simulated host with short replies, the usual models and an embedding model.
pub fn quick_sim(words: usize) -> Arc<SimHost> {
    sim(SimConfig {
        reply_words: words,
        models: vec![
            "llama3.2:latest".into(),
            "qwen2.5:0.5b".into(),
            "mxbai-embed-large:latest".into(),
        ],
        embed_dims: 64,
        ..Default::default()
    })
}

/// A running `synapticllamas serve`, killed (by its PID) if still running when dropped.
pub struct Served {
    pub child: Child,
    pub url: String,
    err_lines: Receiver<String>,
    pub seen_err: Vec<String>,
}

impl Served {
    /// `serve --port 0 ARGS…` for `home`; returns once it listens.
    pub fn start(home: &Home, args: &[&str]) -> Served {
        Served::start_with(command(home, &[]), args)
    }

    /// `serve` with a prepared command (extra environment), `--port 0` unless given.
    pub fn start_with(mut c: Command, args: &[&str]) -> Served {
        c.arg("serve");
        if !args.contains(&"--port") {
            c.args(["--port", "0"]);
        }
        c.args(args).stdin(Stdio::null());
        let mut child = c.spawn().expect("binary runs");
        drop(child.stdout.take());
        let err_lines = lines_of(child.stderr.take().unwrap());
        let mut s = Served {
            child,
            url: String::new(),
            err_lines,
            seen_err: Vec::new(),
        };
        let line = s.until_err("Gateway listening on ", Duration::from_secs(60));
        let at = line.rfind("Gateway listening on ").unwrap() + "Gateway listening on ".len();
        s.url = line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches(',')
            .to_string();
        s
    }

    /// Read stderr until a line contains `marker`; that line.
    pub fn until_err(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err_lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen_err.push(l.clone());
                    if l.contains(marker) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no {marker:?} on stderr within {limit:?}; so far:\n{}",
                    self.seen_err.join("\n")
                ),
            }
        }
    }

    /// Send a signal to the gateway (its own child process, by PID).
    pub fn signal(&self, sig: i32) {
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill {}", self.child.id());
    }

    /// Wait for it to exit (at most `limit`); the exit code and all of stderr.
    pub fn wait(mut self, limit: Duration) -> (i32, String) {
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {limit:?}; stderr:\n{}",
                self.seen_err.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.err_lines.recv_timeout(Duration::from_secs(5)) {
            self.seen_err.push(l);
        }
        (code, self.seen_err.join("\n"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of a pipe, on a channel.
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Run a Python script with the venv's interpreter (the official clients).
pub fn python(script: &str, args: &[&str]) -> Output {
    Command::new(pyenv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "*")
        .output()
        .expect("the venv's python runs")
}

/// Assert a Python script printed `ok` last, showing everything otherwise.
pub fn python_ok(script: &str, args: &[&str]) -> String {
    let out = python(script, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `curl ARGS…` (silent, no proxy); (status of curl, stdout).
pub fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// GET a JSON document from the gateway.
pub fn get_json(url: &str) -> Value {
    let (ok, body) = curl(&[url]);
    assert!(ok, "GET {url} failed");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// Poll `f` every few milliseconds until it returns true (panics after `limit`).
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Requests waiting for a host, per the gateway's `/api/cluster`.
pub fn queue_depth(url: &str) -> u64 {
    get_json(&format!("{url}/api/cluster"))["queue"]["depth"]
        .as_u64()
        .unwrap()
}

/// `clients` threads of the official `ollama` client at once, each asking
/// `questions` chats in turn through `url` (each question names its client and
/// number); asserts every one was answered without an error. The answers.
pub fn concurrent_chats(url: &str, clients: usize, questions: usize) -> Vec<String> {
    let script = r#"
import sys, json, threading, ollama
url, clients, questions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers, errors = [], []
def client(i):
    for j in range(questions):
        try:
            r = ollama.Client(host=url).chat(model="llama3.2",
                messages=[{"role": "user", "content": f"Client {i}, question {j}: why is the sky blue?"}])
            answers.append(r.message.content)
        except Exception as e:
            errors.append(repr(e))
threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors and len(answers) == clients * questions, errors
print(json.dumps(answers))
print("ok")
"#;
    let out = python_ok(script, &[url, &clients.to_string(), &questions.to_string()]);
    let answers = out.lines().rev().nth(1).unwrap_or_default();
    serde_json::from_str(answers).unwrap_or_else(|e| panic!("answers not JSON ({e}): {out}"))
}
