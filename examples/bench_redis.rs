//! Shared host leases on loopback: the round trip of taking and releasing a
//! lease (`SharedLeases::try_acquire` + `RemoteLease::release`) against a plain
//! PING on the same connection, through a redis-server this benchmark starts on
//! 127.0.0.1 (Debian's redis-server; nothing persisted) and kills at the end.
//!
//! Then a 5-part long-form query over three simulated hosts (in-process,
//! loopback) through the scheduler with the host rule shared in Redis against
//! the same scheduler with it local, runs interleaved, medians compared.
//!
//! cargo run --release --example bench_redis -- [ROUNDS] [PER_BLOCK] [QUERIES]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use synapticllamas::config::choices::Route;
use synapticllamas::config::nodes_file::NodeEntry;
use synapticllamas::config::settings::Settings;
use synapticllamas::nodes::Node;
use synapticllamas::ollama::{Client, Timeouts};
use synapticllamas::pipeline::call::Ctx;
use synapticllamas::pipeline::detect::ContentType;
use synapticllamas::pipeline::observer::Collect;
use synapticllamas::pipeline::{agents, longform, outline};
use synapticllamas::redis::{target, Link, LinkState, SharedHealth, SharedLeases};
use synapticllamas::scheduler::{Policy, Pool, Scheduler};
use synapticllamas::sim::{SimConfig, SimHost};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ping,
    AcquireRelease,
    AcquireDrop,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Ping => "PING round trip (baseline)",
            Mode::AcquireRelease => "try_acquire + release (awaited)",
            Mode::AcquireDrop => "try_acquire + drop (release in background)",
        }
    }
}

async fn one(mode: Mode, link: &Link, leases: &SharedLeases, host: &str) -> f64 {
    let t = Instant::now();
    match mode {
        Mode::Ping => {
            link.call(Duration::from_secs(1), |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await
            .expect("PING");
        }
        Mode::AcquireRelease => {
            let l = leases.try_acquire(host, 1).await.expect("free");
            assert!(l.is_shared());
            l.release().await;
        }
        Mode::AcquireDrop => {
            let l = leases.try_acquire(host, 1).await;
            drop(l);
        }
    }
    t.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let per_block: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(250);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("redis://127.0.0.1:{port}/0");
    let t = target::resolve(&Settings::default(), |k| {
        (k == "SYNAPTICLLAMAS_REDIS_URL").then(|| url.clone())
    })
    .unwrap();
    let link = Link::new(|l| eprintln!("{l}"));
    assert_eq!(link.enable(t).await, LinkState::Connected);
    let leases = SharedLeases::new(link.clone());
    let modes = [Mode::Ping, Mode::AcquireRelease, Mode::AcquireDrop];
    for m in modes {
        for i in 0..200 {
            one(m, &link, &leases, &format!("warm-{i}")).await;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        for k in 0..modes.len() {
            let i = (k + r) % modes.len();
            // A fresh host per block in the drop mode: a background release may
            // still be on its way when the next acquisition comes.
            for j in 0..per_block {
                let host = format!("bench-host-{r}-{j}");
                samples[i].push(one(modes[i], &link, &leases, &host).await);
            }
        }
    }
    println!(
        "| operation ({rounds} rounds × {per_block}, blocks rotated) | p50 (ms) | p95 (ms) | p99 (ms) | p50 ÷ PING |"
    );
    println!("|---|---|---|---|---|");
    let mut p50s = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        let s = &mut samples[i];
        s.sort_by(f64::total_cmp);
        p50s.push(percentile(s, 0.5));
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.2}× |",
            m.label(),
            percentile(s, 0.5),
            percentile(s, 0.95),
            percentile(s, 0.99),
            percentile(s, 0.5) / p50s[0]
        );
    }
    let queries: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    long_form_with_and_without(&link, queries).await;
    let _ = server.kill();
    let _ = server.wait();
}

/// Three simulated hosts (250 tokens/s) as nodes on distinct physical hosts.
async fn three_hosts() -> (Vec<Arc<SimHost>>, Vec<Arc<Node>>) {
    let cfg = SimConfig {
        tokens_per_sec: 250.0,
        reply_words: 50,
        ..Default::default()
    };
    let mut hosts = Vec::new();
    let mut nodes = Vec::new();
    for h in 0..3 {
        let host = SimHost::start(
            format!("h{h}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[0],
            cfg.clone(),
        )
        .await
        .expect("a simulated host");
        nodes.push(Arc::new(Node::new(
            NodeEntry {
                url: host.url(),
                name: format!("h{h}"),
                priority: 0,
                host_id: Some(format!("host-{h}")),
                extra: Default::default(),
            },
            false,
        )));
        hosts.push(host);
    }
    (hosts, nodes)
}

fn ctx(sched: Arc<Scheduler>, nodes: Vec<Arc<Node>>) -> Ctx {
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

/// Median wall time of a long-form query with leases in Redis vs local.
async fn long_form_with_and_without(link: &Arc<Link>, queries: usize) {
    let (_hosts, nodes) = three_hosts().await;
    let shared = Scheduler::new(Client::default());
    shared.share_through(
        SharedLeases::new(link.clone()),
        SharedHealth::new(link.clone()),
    );
    let local = Scheduler::new(Client::default());
    let (with_redis, without) = (ctx(shared, nodes.clone()), ctx(local, nodes));
    async fn once(c: &Ctx) -> f64 {
        let started = Instant::now();
        let o = outline::templates(ContentType::Research, 5, "the original's parts");
        longform::run(
            c,
            "Explain the printing press",
            ContentType::Research,
            (&o.parts, false),
            None,
        )
        .await
        .expect("the query completes");
        started.elapsed().as_secs_f64()
    }
    // Warm both (connections, latency models).
    once(&with_redis).await;
    once(&without).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..queries {
        if i % 2 == 0 {
            a.push(once(&with_redis).await);
            b.push(once(&without).await);
        } else {
            b.push(once(&without).await);
            a.push(once(&with_redis).await);
        }
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (ma, mb) = (a[a.len() / 2], b[b.len() / 2]);
    println!();
    println!("| long-form query, 5 parts, 3 simulated hosts ({queries} runs each, interleaved) | median (s) |");
    println!("|---|---|");
    println!("| host rule local (baseline) | {mb:.3} |");
    println!("| host rule shared in Redis (leases, renewal, shared health) | {ma:.3} |");
    println!("| ratio | {:.3}× |", ma / mb);
}
