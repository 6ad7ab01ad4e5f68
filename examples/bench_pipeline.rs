//! Pipeline benchmarks on simulated hosts (in-process, loopback only).
//!
//! 1. A 5-chunk long-form query on 1, 2 and 3 hosts and on 3 nodes over 2 hosts,
//!    under this port's scheduler and under the original's rule (all chunks at
//!    once whenever there are two or more distinct hosts, else one at a time).
//!    Hosts follow the contention model: capacity 1, penalty 1.5, fixed token rate.
//! 2. The time the orchestrator adds per request against an instant node, and
//!    requests per second through the scheduler with instant nodes.
//!
//! cargo run --release --example bench_pipeline

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use synapticllamas::config::choices::Route;
use synapticllamas::config::nodes_file::NodeEntry;
use synapticllamas::nodes::Node;
use synapticllamas::ollama::types::{ChatRequest, Message};
use synapticllamas::ollama::{Client, Timeouts};
use synapticllamas::pipeline::call::{call, Ctx};
use synapticllamas::pipeline::detect::ContentType;
use synapticllamas::pipeline::observer::Collect;
use synapticllamas::pipeline::{agents, longform, outline};
use synapticllamas::scheduler::{Policy, Pool, Scheduler};
use synapticllamas::sim::{SimConfig, SimHost};

const QUERY: &str = "Explain the history of the printing press in Europe";

fn contention() -> SimConfig {
    SimConfig {
        tokens_per_sec: 250.0,
        reply_words: 50,
        capacity: 1,
        penalty: 1.5,
        ..Default::default()
    }
}

/// `layout[i]` = number of nodes (ports) on host i.
async fn cluster(layout: &[usize], cfg: SimConfig) -> (Vec<Arc<SimHost>>, Vec<Arc<Node>>) {
    let mut hosts = Vec::new();
    let mut nodes = Vec::new();
    for (h, &ports) in layout.iter().enumerate() {
        let host = SimHost::start(
            format!("h{h}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &vec![0; ports],
            cfg.clone(),
        )
        .await
        .unwrap();
        for url in host.urls() {
            nodes.push(Arc::new(Node::new(
                NodeEntry {
                    url: url.clone(),
                    name: url,
                    priority: 0,
                    host_id: Some(format!("host-{h}")),
                    extra: Default::default(),
                },
                false,
            )));
        }
        hosts.push(host);
    }
    (hosts, nodes)
}

fn ctx(nodes: Vec<Arc<Node>>, capacity: u32) -> Ctx {
    let sched = Scheduler::new(Client::default());
    sched.set_capacities(capacity, Default::default());
    Ctx {
        client: Client::default(),
        sched,
        pool: Pool::new(nodes, Policy::Pool),
        coordinator: None,
        route: Route::Task,
        num_predict: synapticllamas::pipeline::call::NUM_PREDICT,
        model: "llama3.2".into(),
        synthesis_model: None,
        timeouts: Timeouts::generation(Duration::from_secs(120)),
        agents: agents::builtin(),
        observer: Arc::new(Collect::default()),
        replies: Default::default(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Wall time of one long-form query; `original` applies the original's rule.
async fn long_form(layout: &[usize], original: bool) -> f64 {
    let (_hosts, nodes) = cluster(layout, contention()).await;
    let distinct = layout.len();
    // The original: everything at once as soon as two hosts exist, else sequential.
    let capacity = if original && distinct >= 2 { 1000 } else { 1 };
    let c = ctx(nodes, capacity);
    let started = Instant::now();
    // The original's five research parts (no planner request: the same work as before).
    let o = outline::templates(ContentType::Research, 5, "the original's parts");
    let r = longform::run(&c, QUERY, ContentType::Research, (&o.parts, false), None)
        .await
        .expect("query completes");
    assert_eq!(r.chunks.len(), 5);
    started.elapsed().as_secs_f64()
}

/// One request alone on one host: the unit of the ideal schedule.
async fn unit() -> f64 {
    let (_h, nodes) = cluster(&[1], contention()).await;
    let c = ctx(nodes, 1);
    let mut v = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        call(
            &c,
            c.agent("ChunkWriter"),
            "unit",
            format!("Part {i} of 5. Focus: x\n\nRequest: {QUERY}"),
            "llama3.2",
            None,
        )
        .await
        .unwrap();
        v.push(started.elapsed().as_secs_f64());
    }
    median(v)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = 3;
    let t = unit().await;
    println!("One chunk alone on one host: {t:.3} s (tokens/s 250, capacity 1, penalty 1.5)\n");
    println!("| topology | ideal (s) | this port (s) | speedup vs 1 host | efficiency vs ideal | original's rule (s) | port vs original |");
    println!("|---|---|---|---|---|---|---|");
    let topologies: [(&str, Vec<usize>); 4] = [
        ("1 host", vec![1]),
        ("2 hosts", vec![1, 1]),
        ("3 hosts", vec![1, 1, 1]),
        ("3 nodes on 2 hosts", vec![2, 1]),
    ];
    let mut one_host = 0.0;
    for (name, layout) in topologies.iter() {
        let ours = median(
            futures_util::future::join_all((0..1).map(|_| long_form(layout, false)))
                .await
                .into_iter()
                .chain({
                    let mut v = Vec::new();
                    for _ in 1..runs {
                        v.push(long_form(layout, false).await);
                    }
                    v
                })
                .collect(),
        );
        let mut orig = Vec::new();
        for _ in 0..runs {
            orig.push(long_form(layout, true).await);
        }
        let orig = median(orig);
        if layout.len() == 1 {
            one_host = ours;
        }
        // The shape: chunk 1, then chunks 2..5 over H hosts, then the synthesis.
        let h = layout.len() as f64;
        let ideal = t * (1.0 + (4.0 / h).ceil() + 1.0);
        println!(
            "| {name} | {ideal:.2} | {ours:.2} | {:.2}x | {:.2} | {orig:.2} | {:.2}x faster |",
            one_host / ours,
            ideal / ours,
            orig / ours
        );
    }

    // Orchestrator overhead against an instant node.
    let instant = SimConfig {
        reply_words: 20,
        ..Default::default()
    };
    let (_h, nodes) = cluster(&[1], instant.clone()).await;
    let url = nodes[0].url().to_string();
    let c = ctx(nodes, 1);
    let client = Client::default();
    let req = ChatRequest {
        model: "llama3.2".into(),
        messages: vec![
            Message::system(synapticllamas::pipeline::prompts::system(
                c.agent("ChunkWriter"),
                &c.agent("ChunkWriter").required_fields,
            )),
            Message::user("Part 1 of 1. Focus: x"),
        ],
        stream: true,
        format: Some(serde_json::json!("json")),
        ..Default::default()
    };
    let n = 2000;
    let (mut raw, mut through) = (Vec::new(), Vec::new());
    for i in 0..n + 100 {
        let s = Instant::now();
        client
            .chat(
                &url,
                &req,
                Timeouts::generation(Duration::from_secs(10)),
                |_| {},
            )
            .await
            .unwrap();
        let a = s.elapsed().as_secs_f64() * 1000.0;
        let s = Instant::now();
        call(
            &c,
            c.agent("ChunkWriter"),
            "bench",
            "Part 1 of 1. Focus: x".to_string(),
            "llama3.2",
            None,
        )
        .await
        .unwrap();
        let b = s.elapsed().as_secs_f64() * 1000.0;
        if i >= 100 {
            raw.push(a);
            through.push(b);
        }
    }
    let mut added: Vec<f64> = through.iter().zip(&raw).map(|(b, a)| b - a).collect();
    println!();
    println!("Per request against an instant node ({n} requests, one at a time):");
    println!("| | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|");
    println!(
        "| raw HTTP request (baseline) | {:.3} | {:.3} |",
        pct(&mut raw.clone(), 0.5),
        pct(&mut raw.clone(), 0.99)
    );
    println!(
        "| through scheduler + agent call | {:.3} | {:.3} |",
        pct(&mut through.clone(), 0.5),
        pct(&mut through.clone(), 0.99)
    );
    println!(
        "| added by the orchestrator (paired difference) | {:.3} | {:.3} |",
        pct(&mut added.clone(), 0.5),
        pct(&mut added, 0.99)
    );

    // Scheduler throughput: acquire + release with no HTTP, 64 tasks over 3 hosts.
    let (_h3, nodes3) = cluster(&[1, 1, 1], instant.clone()).await;
    let sched = Scheduler::new(Client::default());
    let pool3 = Arc::new(Pool::new(nodes3.clone(), Policy::Pool));
    let total = 200_000;
    let started = Instant::now();
    let per = total / 64;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = sched.clone();
            let p = pool3.clone();
            tokio::spawn(async move {
                let none = std::collections::HashSet::new();
                let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                for _ in 0..per {
                    let l = s.acquire(&p, "llama3.2", &none, far).await.unwrap();
                    drop(l);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let sched_rate = (per * 64) as f64 / started.elapsed().as_secs_f64();
    // End to end with HTTP: 3 instant hosts, 8 requests per host at once.
    let c3 = ctx(nodes3, 8);
    let c3 = Arc::new(c3);
    let total_http = 6000;
    let started = Instant::now();
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let c = c3.clone();
            tokio::spawn(async move {
                for _ in 0..total_http / 24 {
                    call(
                        &c,
                        c.agent("ChunkWriter"),
                        "rps",
                        "Part 1 of 1. Focus: x".to_string(),
                        "llama3.2",
                        None,
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let http_rate = total_http as f64 / started.elapsed().as_secs_f64();
    println!();
    println!("| throughput (2 cores) | requests/s |");
    println!("|---|---|");
    println!("| scheduler alone (acquire + release, 64 tasks, 3 hosts) | {sched_rate:.0} |");
    println!("| agent calls through scheduler + HTTP to instant simulated hosts (same process) | {http_rate:.0} |");
}
