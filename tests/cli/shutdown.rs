//! Every way out runs the same shutdown: a coordinator this shell started is
//! stopped when stdout's reader goes away (`… | head`) and on Ctrl-C while idle,
//! as it is on `exit` and at the end of input. The coordinator here is a small
//! stand-in `llama-server` (python3) that answers `/health` and streams chat
//! completions, started by the shell exactly as it starts the real one.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const FAKE_LLAMA_SERVER: &str = r#"#!/usr/bin/env python3
# A stand-in llama-server: /health, and /v1/chat/completions streamed as SSE
# with one JSON object carrying every built-in agent's fields.
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
with open(os.environ["FAKE_LLAMA_PIDFILE"], "w") as f:
    f.write(str(os.getpid()))
FIELDS = {
    "context": "Some context.", "key_facts": ["a"], "topics": ["b"], "sources": ["c"],
    "issues": ["d"], "biases": ["e"], "strengths": ["f"], "recommendations": ["g"],
    "summary": "A summary.", "key_points": ["h"], "detailed_explanation": "Detail.",
    "examples": ["i"], "practical_applications": ["j"],
}

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, "application/json", b'{"status":"ok"}')
        else:
            self.reply(404, "text/plain", b"not found")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        text = json.dumps(FIELDS)
        out = ""
        for i in range(0, len(text), 40):
            out += "data: " + json.dumps({"choices": [{"delta": {"content": text[i:i + 40]}}]}) + "\n\n"
        out += "data: " + json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}],
                                      "timings": {"predicted_n": 40, "predicted_ms": 100.0}}) + "\n\n"
        out += "data: [DONE]\n\n"
        self.reply(200, "text/event-stream", out.encode())

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// A home set up so the first query starts the stand-in coordinator.
struct Setup {
    home: Home,
    pidfile: PathBuf,
    // An RPC backend that accepts connections (the shell only checks that).
    _backend: std::net::TcpListener,
}

fn setup() -> Setup {
    let home = Home::new();
    let script = home.path().join("llama-server");
    std::fs::write(&script, FAKE_LLAMA_SERVER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = home.path().join("model.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    home.write_settings(
        json!({"model_sharding_enabled": true, "task_distribution_enabled": false,
               "coordinator_start_timeout_secs": 60,
               "rpc_backends": [{"host": "127.0.0.1", "port": backend.local_addr().unwrap().port()}]})
        .to_string()
        .as_bytes(),
    );
    Setup {
        pidfile: home.path().join("coordinator.pid"),
        home,
        _backend: backend,
    }
}

fn spawn(s: &Setup) -> Child {
    let mut c = command(&s.home, &[]);
    c.env(
        "SYNAPTICLLAMAS_LLAMA_SERVER",
        s.home.path().join("llama-server"),
    )
    .env("SOLLOL_MODEL_PATH", s.home.path().join("model.gguf"))
    .env("SOLLOL_COORDINATOR_PORT", dead_port().to_string())
    .env("FAKE_LLAMA_PIDFILE", &s.pidfile);
    c.spawn().expect("binary runs")
}

/// Read stdout until a line holds `marker`.
fn read_until(out: &mut BufReader<std::process::ChildStdout>, marker: &str) {
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        match out.read_line(&mut l) {
            Ok(0) | Err(_) => panic!("stdout ended before {marker:?}:\n{seen}"),
            Ok(_) if l.contains(marker) => return,
            Ok(_) => seen.push_str(&l),
        }
    }
}

fn running(pid: i32) -> bool {
    // A zombie has exited; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The stand-in coordinator's PID, once it has written it.
fn coordinator_pid(pidfile: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the coordinator never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for the shell to exit; then the coordinator must be gone too (it is
/// killed here if not, and the test fails).
fn shell_and_coordinator_end(mut child: Child, coordinator: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            unsafe { libc::kill(coordinator, libc::SIGKILL) };
            panic!("the shell did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(coordinator) {
        if Instant::now() > deadline {
            // SAFETY: the stand-in this test's shell started; clean up after a failure.
            unsafe { libc::kill(coordinator, libc::SIGKILL) };
            panic!("coordinator {coordinator} still running after the shell exited ({status})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    status.code().unwrap_or(-1)
}

#[test]
fn a_closed_stdout_runs_the_shutdown() {
    let s = setup();
    let mut child = spawn(&s);
    let mut stdin = child.stdin.take().unwrap();
    // The query, then more output than a pipe holds: the shell is still writing
    // when the reader goes away.
    let mut script = String::from("hello there\n");
    script.push_str(&"help\n".repeat(300));
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
    });
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut out, "FINAL ANSWER");
    let pid = coordinator_pid(&s.pidfile);
    assert!(running(pid));
    drop(out); // `| head` has read enough
    let code = shell_and_coordinator_end(child, pid);
    let _ = writer.join();
    let stderr = errors.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Coordinator ready"), "{stderr}");
}

#[test]
fn ctrl_c_while_idle_runs_the_shutdown() {
    let s = setup();
    let mut child = spawn(&s);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello there\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut out, "Type 'metrics'");
    let pid = coordinator_pid(&s.pidfile);
    // Idle, waiting for the next line: Ctrl-C. (Sent again until the shell
    // leaves: one that lands in the moment before it is idle again only
    // cancels the finished command.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        // SAFETY: signalling the shell this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let wait = Instant::now() + Duration::from_millis(300);
        while Instant::now() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let code = shell_and_coordinator_end(child, pid);
    assert_eq!(code, 130);
    drop(stdin);
}
