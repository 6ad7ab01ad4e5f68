//! The gateway (`synapticllamas serve`, the release binary as its own process)
//! in front of simulated hosts in this process, everything on 127.0.0.1:
//!
//! 1. added latency: one request at a time, straight to the node and through
//!    the gateway, in alternating blocks (non-streamed and streamed);
//! 2. throughput with instant nodes: 32 clients looping for a few seconds,
//!    through the gateway and straight to the nodes (round robin);
//! 3. the gateway's memory: idle, and with 100 streams open at once;
//! 4. 12 clients, one request each, on 3 machines — each with one Ollama, then
//!    each with two (two GPUs, or two instances, sharing the machine) — through
//!    the gateway (one request per machine at a time), with the plain
//!    least-connections policy olla and LiteLLM use (each request sent at once
//!    to the node with the fewest requests in flight), and with one request per
//!    *node* at a time (ollamaMQ's rule: a backend is eligible only when idle).
//!    The simulated machines slow down when shared: n requests at once make
//!    every token n × 1.5 as slow.
//!
//! cargo build --release --bin synapticllamas --example bench_gateway &&
//! target/release/examples/bench_gateway [LATENCY_BLOCKS THROUGHPUT_SECS [SECTIONS]]
//!
//! SECTIONS: a comma-separated subset of latency,throughput,memory,hosts (default all).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use synapticllamas::sim::{SimConfig, SimHost};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A gateway process.
struct Gateway {
    child: Child,
    url: String,
    _home: tempfile::TempDir,
}

impl Gateway {
    /// `serve --port 0 --quiet` over `nodes` ((url, host_id) each), with `settings`.
    fn start(bin: &str, nodes: &[(String, String)], settings: serde_json::Value) -> Gateway {
        let home = tempfile::tempdir().unwrap();
        let entries: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, (url, host))| json!({"url": url, "name": format!("n{i}"), "host_id": host}))
            .collect();
        std::fs::write(
            home.path().join(".synapticllamas_nodes.json"),
            json!({ "nodes": entries }).to_string(),
        )
        .unwrap();
        std::fs::write(
            home.path().join(".synapticllamas.json"),
            settings.to_string(),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--port", "0", "--quiet"])
            .env_clear()
            .env("HOME", home.path())
            .env("SYNAPTICLLAMAS_HOME", home.path())
            .env("NO_COLOR", "1")
            .env("SOLLOL_AUTO_DISCOVER", "false")
            .env("SYNAPTICLLAMAS_REDIS_URL", "redis://127.0.0.1:1/0")
            .env("SYNAPTICLLAMAS_SUBNETS", "127.77.77.0/30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin}: {e} (build it: cargo build --release --bin synapticllamas)")
            });
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let url = loop {
            let l = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the gateway starts");
            if let Some(rest) = l.split("Gateway listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        Gateway {
            child,
            url,
            _home: home,
        }
    }

    /// Resident and peak memory (MiB) from /proc.
    fn memory(&self) -> (f64, f64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sim(cfg: SimConfig, listeners: usize) -> Arc<SimHost> {
    SimHost::start("bench", LOCAL, &vec![0; listeners], cfg)
        .await
        .unwrap()
}

/// Four hosts of `cfg`, one listener each (`box-0`..`box-3`), and a gateway
/// over them that lets each host take `cfg.capacity` requests at once.
async fn four_hosts_behind_a_gateway(bin: &str, cfg: SimConfig) -> (Vec<Arc<SimHost>>, Gateway) {
    let mut hosts = Vec::new();
    for _ in 0..4 {
        hosts.push(sim(cfg.clone(), 1).await);
    }
    let nodes: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.url(), format!("box-{i}")))
        .collect();
    let g = Gateway::start(bin, &nodes, json!({ "host_capacity": cfg.capacity }));
    (hosts, g)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn body(prompt: &str, stream: bool) -> String {
    json!({"model": "llama3.2", "prompt": prompt, "stream": stream}).to_string()
}

/// One generation; milliseconds until the reply's last byte.
async fn one(http: &reqwest::Client, base: &str, prompt: &str, stream: bool) -> f64 {
    let t = Instant::now();
    let r = http
        .post(format!("{base}/api/generate"))
        .body(body(prompt, stream))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let b = r.bytes().await.unwrap();
    assert!(b.ends_with(b"}\n") || b.ends_with(b"}"), "a whole reply");
    t.elapsed().as_secs_f64() * 1000.0
}

async fn latency(bin: &str, http: &reqwest::Client, blocks: usize) {
    let node = sim(
        SimConfig {
            reply_words: 4,
            ..Default::default()
        },
        1,
    )
    .await;
    let g = Gateway::start(bin, &[(node.url(), "box".into())], json!({}));
    let (idle_rss, _) = g.memory();
    println!(
        "### 1. Added latency (one request at a time, instant node, {blocks} × 200 per mode)\n"
    );
    println!("| request | mode | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    for stream in [false, true] {
        let (mut direct, mut via) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            one(http, &node.url(), "warm", stream).await;
            one(http, &g.url, "warm", stream).await;
        }
        for b in 0..blocks {
            // Alternate which mode goes first, so drift hits both alike.
            for via_gateway in [b % 2 == 1, b % 2 == 0] {
                let (url, out) = if via_gateway {
                    (g.url.clone(), &mut via)
                } else {
                    (node.url(), &mut direct)
                };
                for _ in 0..200 {
                    out.push(one(http, &url, "Why is the sky blue?", stream).await);
                }
            }
        }
        let kind = if stream {
            "streamed, to its last line"
        } else {
            "`\"stream\": false`"
        };
        for (mode, v) in [
            ("straight to the node", &direct),
            ("through the gateway", &via),
        ] {
            println!(
                "| {kind} | {mode} | {:.3} | {:.3} |",
                pct(v, 0.5),
                pct(v, 0.99)
            );
        }
        println!(
            "| {kind} | **added by the gateway** | **{:.3}** | **{:.3}** |",
            pct(&via, 0.5) - pct(&direct, 0.5),
            pct(&via, 0.99) - pct(&direct, 0.99)
        );
    }
    println!("\nGateway resident memory, idle after start-up: {idle_rss:.1} MiB\n");
}

async fn throughput(bin: &str, secs: u64) {
    let cfg = SimConfig {
        reply_words: 4,
        capacity: 64,
        ..Default::default()
    };
    let (hosts, g) = four_hosts_behind_a_gateway(bin, cfg).await;
    println!(
        "### 2. Throughput (instant nodes, 4 hosts of capacity 64, 32 clients, {secs} s each)\n"
    );
    println!("| target | requests/s | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    let mut rates = Vec::new();
    for target in ["straight to the nodes (round robin)", "through the gateway"] {
        let urls: Vec<String> = if target.starts_with("straight") {
            hosts.iter().map(|h| h.url()).collect()
        } else {
            vec![g.url.clone()]
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..32 {
            let (http, urls, done) = (http.clone(), urls.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = c;
                while Instant::now() < stop {
                    lat.push(one(&http, &urls[i % urls.len()], "hi", false).await);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                lat
            }));
        }
        let t = Instant::now();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let rate = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        rates.push(rate);
        println!(
            "| {target} | {rate:.0} | {:.2} | {:.2} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    println!(
        "\nThrough the gateway ÷ straight: {:.2} of the requests per second (client, gateway and nodes share the 2 cores)\n",
        rates[1] / rates[0]
    );
}

async fn memory(bin: &str) {
    let cfg = SimConfig {
        reply_words: 400,
        tokens_per_sec: 20.0,
        capacity: 25,
        ..Default::default()
    };
    let (_hosts, g) = four_hosts_behind_a_gateway(bin, cfg).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = g.memory();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let begun = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for i in 0..100 {
        let (http, url, begun) = (http.clone(), g.url.clone(), begun.clone());
        streams.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/api/generate"))
                .body(body(&format!("stream {i}"), true))
                .send()
                .await
                .unwrap();
            let mut s = r.bytes_stream();
            let mut first = true;
            while let Some(Ok(_)) = s.next().await {
                if first {
                    begun.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while begun.load(Ordering::Relaxed) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 100 streams began within 60 s",
            begun.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut peak_now: f64 = 0.0;
    for _ in 0..10 {
        peak_now = peak_now.max(g.memory().0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, hwm) = g.memory();
    for s in streams {
        s.abort();
    }
    println!("### 3. Gateway memory (resident, from /proc)\n");
    println!("| state | MiB |");
    println!("|---|---|");
    println!("| idle (4 nodes registered) | {idle:.1} |");
    println!("| 100 streams open at once (highest of 10 samples) | {peak_now:.1} |");
    println!("| peak over the whole run (VmHWM) | {hwm:.1} |\n");
}

/// Nodes that take one request at a time, first come first served (ollamaMQ's rule).
struct PerNode {
    busy: std::sync::Mutex<Vec<bool>>,
    freed: tokio::sync::Notify,
}

impl PerNode {
    async fn take(&self) -> usize {
        loop {
            let notified = self.freed.notified();
            {
                let mut b = self.busy.lock().unwrap();
                if let Some(k) = b.iter().position(|x| !x) {
                    b[k] = true;
                    return k;
                }
            }
            notified.await;
        }
    }

    fn give(&self, k: usize) {
        self.busy.lock().unwrap()[k] = false;
        self.freed.notify_one();
    }
}

/// 12 requests at once; (makespan, per-request seconds).
async fn twelve(
    http: &reqwest::Client,
    policy: &str,
    gateway: &str,
    nodes: &[String],
) -> (f64, Vec<f64>) {
    let in_flight: Arc<Vec<AtomicUsize>> =
        Arc::new(nodes.iter().map(|_| AtomicUsize::new(0)).collect());
    let per_node = Arc::new(PerNode {
        busy: std::sync::Mutex::new(vec![false; nodes.len()]),
        freed: tokio::sync::Notify::new(),
    });
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (http, gateway, nodes, in_flight, per_node) = (
            http.clone(),
            gateway.to_string(),
            nodes.to_vec(),
            in_flight.clone(),
            per_node.clone(),
        );
        let policy = policy.to_string();
        tasks.push(tokio::spawn(async move {
            // Each request's time counts from when its client asked, waits included.
            let asked = Instant::now();
            let prompt = format!("client {i}: why is the sky blue?");
            if policy == "per-node" {
                let k = per_node.take().await;
                one(&http, &nodes[k], &prompt, false).await;
                per_node.give(k);
            } else if policy == "least" {
                // olla's and LiteLLM's least-connections: the node with the fewest in flight, now.
                let k = (0..nodes.len())
                    .min_by_key(|&k| (in_flight[k].load(Ordering::SeqCst), (k + i) % nodes.len()))
                    .unwrap();
                in_flight[k].fetch_add(1, Ordering::SeqCst);
                one(&http, &nodes[k], &prompt, false).await;
                in_flight[k].fetch_sub(1, Ordering::SeqCst);
            } else {
                one(&http, &gateway, &prompt, false).await;
            }
            asked.elapsed().as_secs_f64()
        }));
    }
    let mut each = Vec::new();
    for t in tasks {
        each.push(t.await.unwrap());
    }
    (t.elapsed().as_secs_f64(), each)
}

async fn host_rule(bin: &str, http: &reqwest::Client) {
    println!("### 4. 12 clients on 3 machines: the host rule against least-connections\n");
    println!("| machines | policy | all 12 answered (s) | ideal 4 rounds (s) | ideal ÷ measured | p50 per request (s) | slowest request (s) | most in flight on one machine |");
    println!("|---|---|---|---|---|---|---|---|");
    let cfg = SimConfig {
        reply_words: 30,
        tokens_per_sec: 100.0,
        capacity: 1,
        penalty: 1.5,
        ..Default::default()
    };
    for per_machine in [1, 2] {
        let mut machines = Vec::new();
        for _ in 0..3 {
            machines.push(sim(cfg.clone(), per_machine).await);
        }
        let nodes: Vec<(String, String)> = machines
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                m.urls()
                    .into_iter()
                    .map(move |u| (u, format!("machine-{i}")))
            })
            .collect();
        let urls: Vec<String> = nodes.iter().map(|(u, _)| u.clone()).collect();
        // One request alone on an idle machine: a round.
        let mut alone = Vec::new();
        for _ in 0..3 {
            alone.push(one(http, &urls[0], "client 0: why is the sky blue?", false).await / 1000.0);
        }
        let round = pct(&alone, 0.5);
        let g = Gateway::start(bin, &nodes, json!({}));
        for (label, policy) in [
            ("gateway: one request per machine", "gateway"),
            ("one request per node (ollamaMQ)", "per-node"),
            ("least-connections (olla, LiteLLM)", "least"),
        ] {
            let before: Vec<u64> = machines.iter().map(|m| m.stats().requests).collect();
            let mut best: Option<(f64, Vec<f64>)> = None;
            for _ in 0..3 {
                let (span, each) = twelve(http, policy, &g.url, &urls).await;
                if best.as_ref().is_none_or(|b| span < b.0) {
                    best = Some((span, each));
                }
            }
            // The policies run in order of how much they allow at once, so the
            // machines' high-water marks are each policy's own.
            let max_in_flight = machines
                .iter()
                .map(|m| m.stats().max_in_flight)
                .max()
                .unwrap_or(0);
            let after: Vec<u64> = machines.iter().map(|m| m.stats().requests).collect();
            assert_eq!(
                after.iter().sum::<u64>() - before.iter().sum::<u64>(),
                36,
                "every request answered"
            );
            let (span, each) = best.unwrap();
            let ideal = 4.0 * round;
            println!(
                "| 3 × {per_machine} node(s) | {label} | {span:.2} | {ideal:.2} | {:.2} | {:.2} | {:.2} | {} |",
                ideal / span,
                pct(&each, 0.5),
                each.iter().cloned().fold(0.0, f64::max),
                max_in_flight
            );
        }
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let blocks: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let bin = std::env::var("SYNAPTICLLAMAS_BIN")
        .unwrap_or_else(|_| "target/release/synapticllamas".into());
    assert!(
        Path::new(&bin).is_file(),
        "{bin} is missing: cargo build --release --bin synapticllamas"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sections = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "latency,throughput,memory,hosts".into());
    let on = |s: &str| sections.split(',').any(|x| x.trim() == s);
    rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        if on("latency") {
            latency(&bin, &http, blocks).await;
        }
        if on("throughput") {
            throughput(&bin, secs).await;
        }
        if on("memory") {
            memory(&bin).await;
        }
        if on("hosts") {
            host_rule(&bin, &http).await;
        }
    });
}
