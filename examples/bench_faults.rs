//! Faults in the network lab (needs root and iproute2): the time of a query when
//! one host of three hangs after its first request, when one host is 5× slower,
//! and a four-host mix of broken hosts, each as a ratio against the all-healthy
//! run measured in the same run; plus the extra requests hedging costs on a
//! healthy cluster.
//!
//! Every host is a `sim-serve` process in its own namespace; the shell runs in
//! the LAN namespace with a fresh temporary home per session.
//!
//! cargo build --release --examples && cargo run --release --example bench_faults [RUNS]

#[path = "../tests/cli/lab.rs"]
mod lab;

use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use serde_json::{json, Value};

const BIN: &str = "target/release/synapticllamas";
/// A long-form question (research, 5 parts).
/// Long-form on purpose: `!long` asks for parts whatever `longform auto` decides
/// (it answers this question in one part: it asks for no depth or length).
const LONG: &str = "!long Explain the history of the printing press in Europe";
/// A one-chunk question (Researcher and Critic, then the Editor).
const SHORT: &str = "hello there";
const PORT: u16 = 11434;
/// Every host: 100 tokens/s, 30 ms to the first token, about 130 tokens a reply.
const HOST: &[&str] = &["--tps", "100", "--ttft-ms", "30", "--words", "100"];

struct Cluster {
    lab: lab::Lab,
    home: tempfile::TempDir,
    hosts: usize,
}

/// A lab with one `sim-serve` per entry of `extra` (its extra flags).
fn cluster(extra: &[&[&str]]) -> Cluster {
    let mut lab = lab::Lab::new(extra.len()).expect("the lab needs root and iproute2");
    for (i, more) in extra.iter().enumerate() {
        let i = i + 1;
        let ns = lab.host_ns(i).to_string();
        let ip = lab.host_ip(i).to_string();
        let mut c = lab.command_in(&ns, BIN);
        // The host's own flags replace the defaults of the same name.
        let defaults = HOST.chunks(2).filter(|kv| !more.contains(&kv[0])).flatten();
        c.args(["sim-serve", "--bind", &ip, "--port", &PORT.to_string()])
            .args(defaults)
            .args(*more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        lab.spawn_in(&ns, c).expect("sim-serve starts");
        lab.wait_port(&ns, lab.host_ip(i), PORT)
            .expect("sim-serve listens");
    }
    let home = tempfile::tempdir().unwrap();
    let nodes: Vec<Value> = (1..=extra.len())
        .map(|i| {
            json!({"url": format!("http://{}:{PORT}", lab.host_ip(i)), "name": format!("h{i}"),
                   "priority": 0, "host_id": format!("h{i}")})
        })
        .collect();
    std::fs::write(
        home.path().join(".synapticllamas_nodes.json"),
        serde_json::to_vec_pretty(&json!({ "nodes": nodes })).unwrap(),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".synapticllamas.json"),
        json!({"mode": "distributed", "agent_timeout": 60}).to_string(),
    )
    .unwrap();
    Cluster {
        lab,
        home,
        hosts: extra.len(),
    }
}

struct Session {
    stdout: String,
    stderr: String,
    /// `metrics --json` after each query.
    metrics: Vec<Value>,
}

impl Cluster {
    /// One shell session in the LAN namespace: each query is followed by `metrics --json`.
    fn session(&self, queries: &[&str]) -> Session {
        let script: String = queries
            .iter()
            .map(|q| format!("{q}\nmetrics --json\n"))
            .collect();
        let mut c = self.lab.command_in(self.lab.lan_ns(), BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("SYNAPTICLLAMAS_HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env("SOLLOL_AUTO_DISCOVER", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Session {
            metrics: json_objects(&stdout),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Inference requests every host has received.
    fn requests(&self) -> u64 {
        (1..=self.hosts)
            .map(|i| {
                self.lab
                    .http_get(self.lab.lan_ns(), self.lab.host_ip(i), PORT, "/sim/stats")
                    .ok()
                    .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                    .and_then(|v| v["requests"].as_u64())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The top-level JSON objects printed (pretty) on stdout, in order.
fn json_objects(stdout: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for line in stdout.lines() {
        if line == "{" {
            buf.clear();
        }
        buf.push_str(line);
        buf.push('\n');
        if line == "}" {
            if let Ok(v) = serde_json::from_str(&buf) {
                out.push(v);
            }
            buf.clear();
        }
    }
    out
}

fn secs(m: &Value) -> f64 {
    m["total_execution_time"].as_f64().unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every part 1..5 present once, in order, and no marked gap.
fn complete(answer: &str) -> bool {
    let mut at = Vec::new();
    for n in 1..=5 {
        let hits: Vec<usize> = answer
            .match_indices(&format!("Part {n} of 5. Focus"))
            .map(|(i, _)| i)
            .collect();
        if hits.len() != 1 {
            return false;
        }
        at.push(hits[0]);
    }
    at.windows(2).all(|w| w[0] < w[1]) && !answer.contains("This part is missing")
}

/// Median query time over `runs` fresh clusters (one query per session).
fn timed(runs: usize, extra: &[&[&str]], query: &str) -> (f64, u64, u64) {
    let mut times = Vec::new();
    let (mut hedges, mut calls) = (0, 0);
    for _ in 0..runs {
        let c = cluster(extra);
        let s = c.session(&[query]);
        let m = s
            .metrics
            .first()
            .unwrap_or_else(|| panic!("no metrics: the query failed\n{}\n{}", s.stdout, s.stderr));
        times.push(secs(m));
        hedges += m["hedges"].as_u64().unwrap_or(0);
        calls += m["agent_count"].as_u64().unwrap_or(0);
    }
    (median(times), hedges, calls)
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let healthy: &[&[&str]] = &[&[], &[], &[]];
    let hang_after_first: &[&[&str]] = &[&["--fault", "hang", "--fault-after", "1"], &[], &[]];
    let hang: &[&[&str]] = &[&["--fault", "hang"], &[], &[]];
    let slow: &[&[&str]] = &[&[], &[], &["--tps", "20", "--ttft-ms", "150"]];

    let (long_ok, h1, c1) = timed(runs, healthy, LONG);
    let (short_ok, h2, c2) = timed(runs, healthy, SHORT);
    let (long_hang, _, _) = timed(runs, hang_after_first, LONG);
    let (short_hang, _, _) = timed(runs, hang, SHORT);
    let (long_slow, _, _) = timed(runs, slow, LONG);

    // Hedging on a healthy cluster: requests the hosts saw vs agent calls made.
    let c = cluster(healthy);
    let s = c.session(&[LONG, SHORT, LONG, SHORT, LONG]);
    let seen = c.requests();
    let calls: u64 = s
        .metrics
        .iter()
        .map(|m| m["agent_count"].as_u64().unwrap_or(0))
        .sum();
    let hedged: u64 = s
        .metrics
        .iter()
        .map(|m| m["hedges"].as_u64().unwrap_or(0))
        .sum();

    // The four-host mix, 20 long-form queries in one session.
    let mix: &[&[&str]] = &[
        &[],
        &["--fault", "drop", "--fault-after", "1"],
        &["--fault", "hang", "--fault-after", "1"],
        &["--fault", "drop", "--fault-every", "2"],
    ];
    let c = cluster(mix);
    let started = Instant::now();
    let queries: Vec<&str> = std::iter::repeat_n(LONG, 20).collect();
    let s = c.session(&queries);
    let mix_secs = started.elapsed().as_secs_f64();
    let answers: Vec<&str> = s.stdout.split("FINAL ANSWER").skip(1).collect();
    let whole = answers.iter().filter(|a| complete(a)).count();
    let mix_times: Vec<f64> = s.metrics.iter().map(secs).collect();

    println!("| scenario (3 hosts unless noted; median of {runs} fresh sessions) | query (s) | vs healthy |");
    println!("|---|---|---|");
    println!("| long-form (5 parts), all healthy — baseline | {long_ok:.2} | 1.00 |");
    println!(
        "| long-form, one host hangs after its first request | {long_hang:.2} | {:.2} |",
        long_hang / long_ok
    );
    println!(
        "| long-form, one host 5× slower | {long_slow:.2} | {:.2} |",
        long_slow / long_ok
    );
    println!("| one chunk, all healthy — baseline | {short_ok:.2} | 1.00 |");
    println!(
        "| one chunk, one host never answers | {short_hang:.2} | {:.2} |",
        short_hang / short_ok
    );
    println!();
    println!(
        "hedges in the healthy timing runs: {} of {} agent calls",
        h1 + h2,
        c1 + c2
    );
    println!(
        "healthy session (3 long-form + 2 one-chunk): {seen} requests reached the hosts for {calls} agent calls, {hedged} hedged: {:+.1} % extra requests",
        (seen as f64 / calls.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "four-host mix (h1 healthy, h2 drops after its first request, h3 hangs after its first request, h4 breaks every second stream): {whole}/20 answers with every part, {} with an answer at all; session {mix_secs:.1} s, query median {:.2} s, max {:.2} s",
        answers.len(),
        median(mix_times.clone()),
        mix_times.iter().copied().fold(0.0, f64::max)
    );
}
