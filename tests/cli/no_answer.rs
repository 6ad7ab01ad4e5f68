//! Nodes that do not answer (issue 21, item 7): when every node refuses
//! connections a query fails at once with one line that says so and what to
//! do, so a long command file with no Ollama running ends line after line;
//! a hung node is given the short first-token deadline of probation once it
//! is suspect. Behaviour only: no assertion on how long anything took.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use synapticllamas::sim::{Fault, SimConfig};

use crate::support::*;

/// Run the binary with `script` piped in, killed (by its PID) and failed
/// if it has not ended within `limit`.
fn run_within(home: &Home, script: &str, limit: Duration) -> Run {
    let mut c = command(home, &[]);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = script.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr so far:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

#[test]
fn with_every_node_refusing_each_line_of_a_long_file_fails_at_once_with_a_hint() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&url, "nothing-there", "h1")]));
    let lines = 50;
    let script: String = (0..lines)
        .map(|i| format!("What is the meaning of line {i}?\n"))
        .collect();
    let r = run_within(&home, &script, Duration::from_secs(120));
    r.failed();
    let want = format!(
        "❌ Query failed: no node answers: nothing-there ({url}) refused the connection — start \
         Ollama there, `add URL` for a node that runs, or try the simulated cluster: \
         `synapticllamas --simulate 3`"
    );
    let said = r.stderr.lines().filter(|l| *l == want).count();
    assert_eq!(said, lines, "each line fails with the hint:\n{}", r.stderr);
    assert!(
        !r.stderr.contains("waiting up to"),
        "waited for a node that refuses connections:\n{}",
        r.stderr
    );
}

#[test]
fn a_hung_node_fails_the_query_with_the_short_probation_deadline_and_is_suspect() {
    // /api/tags answers, inference never does.
    let hung = sim(SimConfig {
        fault: Fault::Hang,
        ..SimConfig::default()
    });
    let home = nodes_home(
        &[&hung],
        json!({"mode": "distributed", "request_idle_timeout_ms": 1000}),
    );
    let r = run_within(
        &home,
        "What is the capital of France?\nnodes\n",
        Duration::from_secs(120),
    );
    r.failed();
    // The first request waits the settings' limit (3 s to connect + 1 s);
    // once the node is suspect, the probation deadline (3 × the 1 s prior
    // time to a first token, with no model load it never saw).
    r.err_has("failed on node-1 (no answer within 4.0s (no first token)); node-1 is suspect")
        .err_has("failed on node-1 (no answer within 3.0s (no first token)); node-1 cooled down (re-probe in 5s)")
        .err_has("❌ Query failed: Researcher failed on every node tried: node-1 (no answer within");
    assert!(
        !r.stderr
            .contains("no answer within 4.0s (no first token)); node-1 cooled down"),
        "the suspect node was given the full deadline:\n{}",
        r.stderr
    );
    // It answers probes but not requests: suspect, with the last failure.
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("| node-1 ") && l.contains("http://"))
        .unwrap_or_else(|| panic!("no node row:\n{}", r.stdout));
    assert!(
        row.contains("suspect (no answer within 3.0s (no first token))"),
        "{row}"
    );
}
