//! Faults during queries, in the network lab: three simulated hosts in their own
//! namespaces (`sim-serve` processes), the shell in the LAN namespace, a long-form
//! query (5 chunks). One host is killed mid-stream, hangs, answers 500, sends an
//! error line or cuts the connection: the answer still completes with every chunk
//! exactly once, in order. Every host gone mid-query: the query fails within its
//! timeout naming the chunk and the nodes tried, and the next command works.
//!
//! Each case runs `SYNAPTICLLAMAS_FAULT_RUNS` times (default 1) and prints
//! `fault case <name>: <ok>/<runs> runs succeeded ...`.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::lab::{self, Lab};
use crate::support::*;

/// Long-form on purpose: `!long` asks for parts whatever `longform auto` decides
/// (it answers this question in one part: it asks for no depth or length).
const PORT: u16 = 11434;
/// Slow enough that a query takes a few seconds and a kill lands mid-stream.
const HOST_ARGS: &[&str] = &["--tps", "150", "--words", "60"];

struct Cluster {
    lab: Lab,
    pids: Vec<u32>,
    home: Home,
}

/// Host flags meaning "nothing listens on this host" (connections are refused).
const NO_SERVER: &[&str] = &["<no server>"];

/// A lab with three hosts; host i runs `sim-serve` with `HOST_ARGS` plus `extra[i]`
/// (or nothing at all for `NO_SERVER`).
fn cluster(extra: [&[&str]; 3]) -> Result<Cluster, String> {
    let mut lab = Lab::new(3).map_err(|e| format!("the lab needs root and iproute2: {e:#}"))?;
    let mut pids = Vec::new();
    for (i, more) in extra.iter().enumerate() {
        let i = i + 1;
        let ns = lab.host_ns(i).to_string();
        let ip = lab.host_ip(i);
        if *more == NO_SERVER {
            continue;
        }
        let mut c = lab.command_in(&ns, BIN);
        c.args([
            "sim-serve",
            "--bind",
            &ip.to_string(),
            "--port",
            &PORT.to_string(),
        ])
        // A host's own flags replace the defaults of the same name.
        .args(
            HOST_ARGS
                .chunks(2)
                .filter(|kv| !more.contains(&kv[0]))
                .flatten(),
        )
        .args(*more)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        pids.push(lab.spawn_in(&ns, c).map_err(|e| format!("{e:#}"))?);
        lab.wait_port(&ns, ip, PORT).map_err(|e| format!("{e:#}"))?;
    }
    let home = Home::new();
    let nodes: Vec<Value> = (1..=3)
        .map(|i| {
            entry(
                &format!("http://{}:{PORT}", lab.host_ip(i)),
                &format!("node-{i}"),
                &format!("h{i}"),
            )
        })
        .collect();
    home.write_nodes(&node_file(&nodes));
    home.write_settings(
        json!({"mode": "distributed", "request_idle_timeout_ms": 1500, "agent_timeout": 30})
            .to_string()
            .as_bytes(),
    );
    Ok(Cluster { lab, pids, home })
}

impl Cluster {
    /// A count from host i's /sim/stats (1-based; 0 when it does not answer).
    fn stat(&self, i: usize, key: &str) -> u64 {
        self.lab
            .http_get(self.lab.lan_ns(), self.lab.host_ip(i), PORT, "/sim/stats")
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v[key].as_u64())
            .unwrap_or(0)
    }

    /// Inference requests in flight on host i (1-based), from its /sim/stats.
    fn in_flight(&self, i: usize) -> u64 {
        self.stat(i, "in_flight")
    }

    /// Wait until `hosts` have answered `n` inference requests in all.
    fn wait_answered(&self, hosts: &[usize], n: u64, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while hosts
            .iter()
            .map(|&h| self.stat(h, "completed"))
            .sum::<u64>()
            < n
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "hosts {hosts:?} did not answer {n} requests in {within:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Start the shell in the LAN namespace on `script`; the output comes from the handle.
    fn shell(&self, script: &str) -> std::thread::JoinHandle<(Run, Instant)> {
        let mut c = self.lab.command_in(self.lab.lan_ns(), BIN);
        scrub_env(&mut c, &self.home);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("the shell starts in the lab");
        let mut stdin = child.stdin.take().unwrap();
        let script = script.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        std::thread::spawn(move || {
            let out = child.wait_with_output().unwrap();
            let run = Run {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                code: out.status.code().unwrap_or(-1),
            };
            (run, Instant::now())
        })
    }

    /// Wait until one of `hosts` has a request in flight; which one.
    fn wait_busy(&self, hosts: &[usize], within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        loop {
            for &h in hosts {
                if self.in_flight(h) > 0 {
                    return Ok(h);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no request reached hosts {hosts:?} in {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The answer completed, with chunks 1..5 each once and in order.
fn completed(r: &Run, took: Duration) -> Result<(), String> {
    let order = chunk_order(&r.stdout, 5);
    let tail = |s: &str| {
        s.chars()
            .rev()
            .take(2500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };
    if r.code != 0 || !r.stdout.contains("FINAL ANSWER") || order != [1, 2, 3, 4, 5] {
        return Err(format!(
            "exit {}, chunk order {order:?} after {took:?}\nstderr: {}",
            r.code,
            tail(&r.stderr)
        ));
    }
    Ok(())
}

/// Whether the query met a fault on `node`: an attempt failed there, or was
/// given up there because a copy on another host answered first.
pub fn fault_hit(stderr: &str, node: &str) -> bool {
    stderr.contains(&format!("failed on {node} "))
        || stderr.contains(&format!("gave up on {node} "))
}

/// Run `case` `SYNAPTICLLAMAS_FAULT_RUNS` times (at least once); print the count;
/// fail unless every run succeeded.
fn repeat(name: &str, case: impl Fn(usize) -> Result<Duration, String>) {
    let runs = env_count("SYNAPTICLLAMAS_FAULT_RUNS", 1).max(1);
    let _one = lab::one_at_a_time();
    let mut ok = 0;
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for run in 0..runs {
        match case(run) {
            Ok(t) => {
                ok += 1;
                times.push(t.as_secs_f64());
            }
            Err(e) => failures.push(format!("run {run}: {e}")),
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let max = times.last().copied().unwrap_or(f64::NAN);
    eprintln!(
        "fault case {name}: {ok}/{runs} runs succeeded (query time median {median:.1}s, max {max:.1}s)"
    );
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

/// One host has a fault from the start (or after `after` requests).
fn one_bad_host(fault: &str, after: u64, script_before: &str) -> Result<Duration, String> {
    let after = after.to_string();
    let bad: &[&str] = &["--fault", fault, "--fault-after", &after];
    let c = cluster([bad, &[], &[]])?;
    let started = Instant::now();
    let (r, ended) = c.shell(&format!("{script_before}{LONG}\n")).join().unwrap();
    let took = ended - started;
    completed(&r, took)?;
    if !fault_hit(&r.stderr, "node-1") {
        return Err(format!("node-1 never failed:\n{}", r.stderr));
    }
    Ok(took)
}

#[test]
fn fault_host_killed_mid_stream() {
    repeat("host killed mid-stream", |_| {
        let mut c = cluster([&[], &[], &[]])?;
        let started = Instant::now();
        let shell = c.shell(&format!("{LONG}\n"));
        // Host 1 streams a reply: kill its process part-way.
        let busy = c.wait_busy(&[1], Duration::from_secs(20));
        if busy.is_ok() {
            std::thread::sleep(Duration::from_millis(250));
            let pid = c.pids[0];
            c.lab.kill(pid);
        }
        let (r, ended) = shell.join().unwrap();
        busy?;
        let took = ended - started;
        completed(&r, took)?;
        if !fault_hit(&r.stderr, "node-1") {
            return Err(format!(
                "the kill did not interrupt a request:\n{}",
                r.stderr
            ));
        }
        Ok(took)
    });
}

#[test]
fn fault_host_never_answers() {
    repeat("host accepts and never answers (hang)", |_| {
        one_bad_host("hang", 0, "")
    });
}

#[test]
fn fault_nothing_listens_on_a_host() {
    repeat("nothing listens on a host (refused)", |_| {
        let c = cluster([NO_SERVER, &[], &[]])?;
        let started = Instant::now();
        let (r, ended) = c.shell(&format!("{LONG}\n")).join().unwrap();
        let took = ended - started;
        completed(&r, took)?;
        if !r.stderr.contains("failed on node-1 (cannot connect") {
            return Err(format!("node-1 was never tried:\n{}", r.stderr));
        }
        Ok(took)
    });
}

#[test]
fn fault_connection_reset_before_the_first_token() {
    repeat("host resets the connection before the first token", |_| {
        one_bad_host("reset", 0, "")
    });
}

#[test]
fn fault_stream_stalls_mid_reply() {
    repeat("host stalls in the middle of a reply", |_| {
        one_bad_host("stall", 0, "")
    });
}

#[test]
fn fault_one_host_much_slower() {
    repeat("one host 5x slower", |_| {
        let c = cluster([&["--tps", "30"], &[], &[]])?;
        let started = Instant::now();
        let (r, ended) = c.shell(&format!("{LONG}\n")).join().unwrap();
        let took = ended - started;
        completed(&r, took)?;
        Ok(took)
    });
}

#[test]
fn fault_host_answers_500() {
    repeat("host answers HTTP 500", |_| one_bad_host("http500", 0, ""));
}

#[test]
fn fault_error_line_mid_stream() {
    repeat("host sends an error line mid-stream", |_| {
        one_bad_host("error_line", 0, "")
    });
}

#[test]
fn fault_connection_cut_mid_stream() {
    repeat("host cuts the connection mid-stream", |_| {
        one_bad_host("drop", 0, "")
    });
}

#[test]
fn fault_tags_answer_but_inference_hangs() {
    repeat("/api/tags works, inference hangs after one reply", |_| {
        let c = cluster([&["--fault", "hang", "--fault-after", "1"], &[], &[]])?;
        let started = Instant::now();
        let (r, ended) = c
            .shell(&format!("health\n{LONG}\nhealth\n"))
            .join()
            .unwrap();
        let took = ended - started;
        if r.stdout.matches("3/3 nodes healthy").count() != 2 {
            return Err(format!(
                "the health probes did not see 3 healthy nodes:\n{}",
                r.stdout
            ));
        }
        completed(&r, took)?;
        if !fault_hit(&r.stderr, "node-1") {
            return Err(format!("node-1 never hung:\n{}", r.stderr));
        }
        Ok(took)
    });
}

#[test]
fn fault_every_host_gone_mid_query() {
    repeat("every host gone mid-query", |_| {
        let mut c = cluster([&[], &[], &[]])?;
        let shell = c.shell(&format!("{LONG}\nrefine 3\nstatus\n"));
        // Mid-query: the outline is written, and a part is being written.
        let busy = c
            .wait_answered(&[1, 2, 3], 1, Duration::from_secs(20))
            .and_then(|()| c.wait_busy(&[1, 2, 3], Duration::from_secs(20)));
        let killed = Instant::now();
        if busy.is_ok() {
            std::thread::sleep(Duration::from_millis(150));
            for pid in c.pids.clone() {
                c.lab.kill(pid);
            }
        }
        let (r, ended) = shell.join().unwrap();
        busy?;
        let took = ended - killed;
        let failed = r
            .stderr
            .lines()
            .find(|l| l.contains("❌ Query failed:"))
            .ok_or_else(|| format!("the query did not fail:\n{}\n{}", r.stdout, r.stderr))?;
        let chunk =
            regex::Regex::new(r"chunk [1-5]/5 failed on every node tried: node-[123] ").unwrap();
        if !chunk.is_match(failed) {
            return Err(format!(
                "the message names no chunk or node: {failed}\n{}",
                r.stderr
            ));
        }
        if r.code != 1 || !r.stdout.contains("SYSTEM STATUS") {
            return Err(format!(
                "the shell did not go on: exit {}\n{}",
                r.code, r.stdout
            ));
        }
        if c.home.settings()["refinement_rounds"] != 3 {
            return Err("the command after the failed query did not run".into());
        }
        // How soon a task whose hosts all refuse gives up (well within the
        // agent timeout) is the scheduler's paused-clock test.
        eprintln!("  all gone: {failed}");
        Ok(took)
    });
}
