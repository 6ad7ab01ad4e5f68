//! Load: many queries back to back in one session, and many one-shot `-i`
//! processes at once, against simulated hosts in their own `sim-serve` processes
//! on 127.0.0.1 (tps 0: instant). Open file descriptors, threads, established TCP
//! connections and resident memory of the shell and of the hosts are sampled from
//! /proc between phases and must not grow beyond small bounds.
//! `SYNAPTICLLAMAS_LOAD_QUERIES` (default 200), `SYNAPTICLLAMAS_LOAD_PROCS`
//! (default 20), `SYNAPTICLLAMAS_LOAD_ROUNDS` (default 2).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::security::tcp_sockets;
use crate::support::*;

/// What /proc says about one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub fds: usize,
    pub threads: usize,
    pub rss_kb: usize,
    pub established: usize,
}

pub fn sample(pid: u32) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        fds,
        threads: field("Threads:"),
        rss_kb: field("VmRSS:"),
        established: tcp_sockets(pid).iter().filter(|s| s.2 == "01").count(),
    }
}

/// A simulated host in its own process on 127.0.0.1 (killed on drop).
pub struct SimProc {
    pub child: Child,
    pub port: u16,
}

impl SimProc {
    pub fn start(extra: &[&str]) -> SimProc {
        let home = Home::new();
        let mut args = vec!["sim-serve", "--bind", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(extra);
        let mut c = command(&home, &args);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("sim-serve said {line:?}"));
        // Keep draining its stderr so it never blocks.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        SimProc { child, port }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn stats(&self) -> Value {
        http_get_json(self.port, "/sim/stats")
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a JSON document from 127.0.0.1:port (HTTP/1.1, one request).
pub fn http_get_json(port: u16, path: &str) -> Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn home_for(sims: &[SimProc]) -> Home {
    let home = Home::new();
    let entries: Vec<Value> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| entry(&s.url(), &format!("node-{}", i + 1), &format!("h{}", i + 1)))
        .collect();
    home.write_nodes(&node_file(&entries));
    home.write_settings(
        json!({"mode": "distributed", "request_idle_timeout_ms": 5000, "agent_timeout": 60})
            .to_string()
            .as_bytes(),
    );
    home
}

/// Long-form on purpose: `!long` asks for parts whatever `longform auto` decides
/// (it answers this question in one part: it asks for no depth or length).

#[test]
fn two_hundred_queries_in_one_session_leak_nothing() {
    let n = env_count("SYNAPTICLLAMAS_LOAD_QUERIES", 200).max(2);
    let sims: Vec<SimProc> = (0..3).map(|_| SimProc::start(&["--words", "40"])).collect();
    let home = home_for(&sims);
    let mut child = command(&home, &[]).spawn().unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let err_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut answers = 0usize;
    // Send queries then a marker setting; wait for the marker's output.
    let mut phase =
        |stdin: &mut std::process::ChildStdin, queries: usize, offset: usize, mark: u32| {
            let mut script = String::new();
            for i in 0..queries {
                if (offset + i) % 10 == 9 {
                    script.push_str(&format!("{LONG} ({})\n", offset + i));
                } else {
                    script.push_str(&format!("hello there number {}\n", offset + i));
                }
            }
            script.push_str(&format!("refine {mark}\n"));
            stdin.write_all(script.as_bytes()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let l = rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .expect("the shell keeps answering");
                if l.contains("FINAL ANSWER") {
                    answers += 1;
                }
                if l.contains(&format!("Refinement rounds set to {mark}")) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            let shell = sample(pid);
            let hosts: Vec<Sample> = sims.iter().map(|s| sample(s.pid())).collect();
            (shell, hosts)
        };
    let warm = 10;
    let (a, ha) = phase(&mut stdin, warm, 0, 1);
    let half = n / 2;
    let (b, hb) = phase(&mut stdin, half, warm, 2);
    let (c, hc) = phase(&mut stdin, n - half, warm + half, 3);
    drop(stdin);
    let status = child.wait().unwrap();
    let err = err_text.join().unwrap();
    assert!(
        status.success(),
        "{}",
        &err[err.len().saturating_sub(3000)..]
    );
    assert_eq!(answers, warm + n, "every query answered");
    let served: u64 = sims
        .iter()
        .map(|s| s.stats()["requests"].as_u64().unwrap())
        .sum();
    eprintln!(
        "load: {} queries ({served} inference requests). shell after {warm} / {} / {} queries: {a:?} / {b:?} / {c:?}",
        warm + n,
        warm + half,
        warm + n
    );
    eprintln!("load: hosts after warm-up {ha:?}\nload: hosts at the end {hc:?} (middle {hb:?})");
    // The warm-up may not have opened every pooled connection yet: growth is
    // judged from the middle sample on, with a looser bound from the warm-up.
    assert!(
        c.fds <= b.fds + 2 && c.fds <= a.fds + 6,
        "fds grew: {a:?} -> {b:?} -> {c:?}"
    );
    assert!(c.threads <= a.threads + 2, "threads grew: {a:?} -> {c:?}");
    assert!(
        c.established <= b.established + 2 && c.established <= 3 * sims.len(),
        "connections grew: {a:?} -> {b:?} -> {c:?}"
    );
    assert!(
        c.rss_kb <= b.rss_kb + 8 * 1024,
        "memory grew in the second half: {b:?} -> {c:?}"
    );
    assert!(
        c.rss_kb <= a.rss_kb + 24 * 1024,
        "memory grew: {a:?} -> {c:?}"
    );
    for (x, y) in ha.iter().zip(&hc) {
        assert!(y.fds <= x.fds + 4, "a host's fds grew: {x:?} -> {y:?}");
        assert!(
            y.threads <= x.threads + 2,
            "a host's threads grew: {x:?} -> {y:?}"
        );
        assert!(
            y.rss_kb <= x.rss_kb + 16 * 1024,
            "a host's memory grew: {x:?} -> {y:?}"
        );
    }
}

#[test]
fn twenty_one_shot_processes_at_once() {
    let procs = env_count("SYNAPTICLLAMAS_LOAD_PROCS", 20).max(1);
    let rounds = env_count("SYNAPTICLLAMAS_LOAD_ROUNDS", 2).max(1);
    let sims: Vec<SimProc> = (0..3).map(|_| SimProc::start(&["--words", "40"])).collect();
    let home = home_for(&sims);
    let before: Vec<Sample> = sims.iter().map(|s| sample(s.pid())).collect();
    let mut peak = Sample::default();
    let mut after_rounds = Vec::new();
    for round in 0..rounds {
        let children: Vec<Child> = (0..procs)
            .map(|i| {
                let q = if i % 4 == 3 {
                    format!("{LONG} ({round}-{i})")
                } else {
                    format!("hello there {round}-{i}")
                };
                command(&home, &["-i", &q]).spawn().unwrap()
            })
            .collect();
        // Sample the running processes while they work.
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for &p in &pids {
                let s = sample(p);
                peak.fds = peak.fds.max(s.fds);
                peak.threads = peak.threads.max(s.threads);
                peak.rss_kb = peak.rss_kb.max(s.rss_kb);
                peak.established = peak.established.max(s.established);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        for (i, ch) in children.into_iter().enumerate() {
            let out = ch.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "process {i} of round {round}: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_str(&stdout).unwrap();
            assert!(!v["final_output"].as_str().unwrap().is_empty());
        }
        std::thread::sleep(Duration::from_millis(300));
        after_rounds.push(sims.iter().map(|s| sample(s.pid())).collect::<Vec<_>>());
    }
    let served: u64 = sims
        .iter()
        .map(|s| s.stats()["requests"].as_u64().unwrap())
        .sum();
    let after = after_rounds.last().unwrap();
    eprintln!(
        "load: {rounds} rounds of {procs} concurrent -i processes ({served} inference requests); \
         peak of one process {peak:?}; hosts before {before:?}; after each round {after_rounds:?}"
    );
    // What one `-i` process holds at its busiest (measured: about 17 fds,
    // 3 threads, 13 MiB, 3-5 connections to the three hosts).
    assert!(peak.fds > 0, "no running process was sampled");
    assert!(peak.fds <= 48, "one process held {} fds", peak.fds);
    assert!(
        peak.threads <= 8,
        "one process ran {} threads",
        peak.threads
    );
    assert!(
        peak.rss_kb <= 64 * 1024,
        "one process used {} KiB",
        peak.rss_kb
    );
    assert!(
        peak.established <= 4 * sims.len(),
        "one process held {} connections to {} hosts",
        peak.established,
        sims.len()
    );
    for (x, y) in before.iter().zip(after) {
        assert!(y.fds <= x.fds + 4, "a host kept fds: {x:?} -> {y:?}");
        assert!(
            y.established <= x.established + 1,
            "a host kept connections: {x:?} -> {y:?}"
        );
        assert!(
            y.threads <= x.threads + 2,
            "a host's threads grew: {x:?} -> {y:?}"
        );
    }
    // The second round costs the hosts no more memory than the first.
    if after_rounds.len() >= 2 {
        for (x, y) in after_rounds[0].iter().zip(after) {
            assert!(
                y.rss_kb <= x.rss_kb + 8 * 1024,
                "a host's memory grew: {x:?} -> {y:?}"
            );
        }
    }
}
