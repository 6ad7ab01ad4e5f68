//! Shared host leases on loopback: the round trip of taking and releasing a
//! lease (`SharedLeases::try_acquire` + `RemoteLease::release`) against a plain
//! PING on the same connection, through a redis-server this benchmark starts on
//! 127.0.0.1 (Debian's redis-server; nothing persisted) and kills at the end.
//!
//! cargo run --release --example bench_redis -- [ROUNDS] [PER_BLOCK]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use synapticllamas::config::settings::Settings;
use synapticllamas::redis::{target, Link, LinkState, SharedLeases};

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
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
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
    let _ = server.kill();
    let _ = server.wait();
}
