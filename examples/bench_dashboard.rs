//! The dashboard's cost to request latency (in-process, loopback only).
//!
//! One request at a time through `ollama::Client` to an instant simulated host,
//! each recorded in the node's state and reported to the hub as the app does
//! (`record_request` + `Hub::observe_latency`). Three modes, in interleaved
//! blocks so that drift hits them alike:
//! - no hub: the request and `record_request` only (reference);
//! - dashboard closed: plus the hub update, no server;
//! - dashboard open: plus a running dashboard with one SSE client reading
//!   every snapshot it pushes.
//!
//! cargo run --release --example bench_dashboard [-- BLOCKS PER_BLOCK]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use synapticllamas::config::nodes_file::NodeEntry;
use synapticllamas::dashboard::{self, Hub};
use synapticllamas::nodes::Node;
use synapticllamas::ollama::types::GenerateRequest;
use synapticllamas::ollama::{Client, Timeouts};
use synapticllamas::sim::{SimConfig, SimHost};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NoHub,
    Closed,
    Open,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn one(client: &Client, hub: Option<&Hub>, node: &Node, req: &GenerateRequest) -> f64 {
    let t = Timeouts::generation(Duration::from_secs(10));
    let s = Instant::now();
    let r = client.generate(node.url(), req, t, |_| {}).await;
    let took = s.elapsed();
    node.state()
        .record_request(took, r.is_ok(), r.ok().and_then(|c| c.tokens_per_second()));
    if let Some(h) = hub {
        h.observe_latency(node.name(), &node.host, took.as_secs_f64());
    }
    s.elapsed().as_secs_f64() * 1000.0
}

/// A dashboard with one SSE client counting the snapshots it receives.
async fn open(
    hub: &Arc<Hub>,
    events: Arc<AtomicU64>,
) -> (dashboard::Dashboard, tokio::task::JoinHandle<()>) {
    let d = dashboard::start(hub.clone(), LOCAL, 0).await.unwrap();
    let url = format!("{}api/events", d.url());
    let before = events.load(Ordering::Relaxed);
    let counter = events.clone();
    let reader = tokio::spawn(async move {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut body = http.get(url).send().await.unwrap().bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            let n = chunk
                .windows(15)
                .filter(|w| w == b"event: snapshot")
                .count();
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    // Wait for the first snapshot: the client is connected and streaming.
    while events.load(Ordering::Relaxed) == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (d, reader)
}

/// The hub update's cost, and one full snapshot's (what an SSE client costs per push).
fn unit_costs() -> (f64, f64) {
    let hub = Hub::new();
    let nodes: Vec<Arc<Node>> = (0..10)
        .map(|i| {
            let n = Node::new(
                NodeEntry {
                    url: format!("http://127.0.0.1:{}", 11434 + i),
                    name: format!("node-{i}"),
                    priority: 0,
                    host_id: Some(format!("box-{i}")),
                    extra: Default::default(),
                },
                true,
            );
            n.state().models = vec!["llama3.2:latest".into(), "qwen2.5:0.5b".into()];
            Arc::new(n)
        })
        .collect();
    hub.set_nodes(nodes);
    for i in 0..50 {
        hub.routing(format!("Researcher → node-{i}"), "model loaded, host idle");
        hub.notice(format!("⚠️ node node-{i} is down"));
    }
    let n = 100_000;
    let s = Instant::now();
    for i in 0..n {
        hub.observe_latency("node-1", "box-1", (i % 100) as f64 / 100.0);
    }
    let update_ns = s.elapsed().as_secs_f64() * 1e9 / n as f64;
    let n = 5_000;
    let s = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += serde_json::to_string(&hub.snapshot()).unwrap().len();
    }
    std::hint::black_box(bytes);
    (update_ns, s.elapsed().as_secs_f64() * 1e6 / n as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let blocks = args.first().copied().unwrap_or(12);
    let per_block = args.get(1).copied().unwrap_or(500);
    let cfg = SimConfig {
        reply_words: 20,
        ..Default::default()
    };
    let sim = SimHost::start("bench", LOCAL, &[0], cfg).await.unwrap();
    let node = Arc::new(Node::new(
        NodeEntry {
            url: sim.url(),
            name: "alpha".into(),
            priority: 0,
            host_id: Some("box-a".into()),
            extra: Default::default(),
        },
        true,
    ));
    let hub = Arc::new(Hub::new());
    hub.set_nodes(vec![node.clone()]);
    let client = Client::default();
    let req = GenerateRequest {
        model: "llama3.2".into(),
        prompt: "Why is the sky blue?".into(),
        stream: true,
        ..Default::default()
    };
    for _ in 0..200 {
        one(&client, Some(&hub), &node, &req).await;
    }

    let modes = [Mode::NoHub, Mode::Closed, Mode::Open];
    let mut samples: [Vec<f64>; 3] = Default::default();
    let events = Arc::new(AtomicU64::new(0));
    let mut open_secs = 0.0;
    // Per round (one block of each mode): p50 open / p50 closed.
    let mut round_ratios = Vec::new();
    let mut round_p50 = [0.0; 3];
    for b in 0..blocks * modes.len() {
        let mode = modes[(b + b / modes.len()) % modes.len()];
        let server = if mode == Mode::Open {
            Some(open(&hub, events.clone()).await)
        } else {
            None
        };
        let hub_ref = (mode != Mode::NoHub).then_some(&*hub);
        let started = Instant::now();
        let i = modes.iter().position(|m| *m == mode).unwrap();
        let mut block = Vec::with_capacity(per_block);
        for _ in 0..per_block {
            block.push(one(&client, hub_ref, &node, &req).await);
        }
        round_p50[i] = pct(&mut block.clone(), 0.5);
        samples[i].extend(block);
        if b % modes.len() == modes.len() - 1 {
            round_ratios.push(round_p50[2] / round_p50[1]);
        }
        if let Some((d, reader)) = server {
            open_secs += started.elapsed().as_secs_f64();
            d.stop().await;
            let _ = reader.await;
        }
    }

    let (update_ns, snapshot_us) = unit_costs();
    let [mut none, mut closed, mut opened] = samples;
    let (p50n, p50c, p50o) = (
        pct(&mut none, 0.5),
        pct(&mut closed, 0.5),
        pct(&mut opened, 0.5),
    );
    let (p99n, p99c, p99o) = (
        pct(&mut none, 0.99),
        pct(&mut closed, 0.99),
        pct(&mut opened, 0.99),
    );
    println!(
        "Per request to an instant simulated host ({blocks} interleaved blocks of {per_block} per mode):"
    );
    println!("| mode | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|");
    println!("| no hub (reference) | {p50n:.3} | {p99n:.3} |");
    println!("| hub updated, dashboard closed | {p50c:.3} | {p99c:.3} |");
    println!("| hub updated, dashboard open + 1 SSE client | {p50o:.3} | {p99o:.3} |");
    println!();
    println!(
        "dashboard open vs closed: p50 {:+.2}% ({:+.4} ms); hub update vs no hub: p50 {:+.2}%",
        (p50o / p50c - 1.0) * 100.0,
        p50o - p50c,
        (p50c / p50n - 1.0) * 100.0
    );
    println!(
        "median over {} rounds of (block p50 open / block p50 closed): {:+.2}%",
        round_ratios.len(),
        (pct(&mut round_ratios, 0.5) - 1.0) * 100.0
    );
    println!(
        "unit costs: hub update (observe_latency) {update_ns:.0} ns; one snapshot as JSON \
         (10 nodes, 50 routing decisions, 50 notices) {snapshot_us:.1} us; at most one per \
         {} ms per SSE client = {:.3}% of one core",
        dashboard::MIN_GAP.as_millis(),
        snapshot_us / dashboard::MIN_GAP.as_micros() as f64 * 100.0
    );
    println!(
        "snapshots streamed while open: {} in {:.1} s ({:.1}/s)",
        events.load(Ordering::Relaxed),
        open_secs,
        events.load(Ordering::Relaxed) as f64 / open_secs
    );
}
