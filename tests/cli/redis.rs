//! Redis against a real `redis-server` on loopback (with and without a
//! password): shared host leases across instances and processes, a crashed
//! holder, Redis going away and coming back, shared node health, the RPC
//! registry with `rpc discover` and `rpc-register`, events seen by
//! `redis-cli SUBSCRIBE`, and the one-line errors for a wrong password or an
//! unreachable server.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{json, Value};
use synapticllamas::app::redis_tap::EventTap;
use synapticllamas::config::settings::Settings;
use synapticllamas::dashboard::{CoordinatorStatus, CoordinatorView, Hub, HubTap};
use synapticllamas::redis::events::{self, Publisher};
use synapticllamas::redis::{target, Link, LinkState, NodeView, SharedHealth, SharedLeases};
use synapticllamas::sim::SimConfig;
use tokio::sync::Semaphore;

use crate::redis_support::{wait_until, RedisServer};
use crate::support::*;

const PASSWORD: &str = "t0p-s3cret-redis-pw";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A link to `url` (as SYNAPTICLLAMAS_REDIS_URL would give it), connected,
/// with the lines it tells the user.
async fn link_to(url: &str) -> (Arc<Link>, Lines) {
    let lines: Lines = Arc::default();
    let l2 = lines.clone();
    let link = Link::new(move |s| l2.lock().unwrap().push(s));
    let t = target::resolve(&Settings::default(), |k| {
        (k == "SYNAPTICLLAMAS_REDIS_URL").then(|| url.to_string())
    })
    .unwrap();
    assert_eq!(link.enable(t).await, LinkState::Connected);
    (link, lines)
}

// ---------------------------------------------------------------- leases

const HOSTS: [(&str, u32); 3] = [("host-a", 1), ("host-b", 2), ("host-c", 1)];

/// Two instances, each with its own per-host rule (a local semaphore of
/// `capacity`, as the scheduler keeps) plus `leases`, run workers that take
/// hosts in turn. Returns the most requests ever in flight per host and how
/// many leases were granted without Redis.
async fn contend(instances: Vec<SharedLeases>) -> (HashMap<&'static str, u32>, u32) {
    let in_flight: Arc<HashMap<&str, AtomicU32>> =
        Arc::new(HOSTS.iter().map(|(h, _)| (*h, AtomicU32::new(0))).collect());
    let most: Arc<HashMap<&str, AtomicU32>> =
        Arc::new(HOSTS.iter().map(|(h, _)| (*h, AtomicU32::new(0))).collect());
    let local = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for leases in instances {
        let rule: Arc<HashMap<&str, Arc<Semaphore>>> = Arc::new(
            HOSTS
                .iter()
                .map(|(h, c)| (*h, Arc::new(Semaphore::new(*c as usize))))
                .collect(),
        );
        for w in 0..4 {
            let (leases, rule) = (leases.clone(), rule.clone());
            let (in_flight, most, local) = (in_flight.clone(), most.clone(), local.clone());
            tasks.push(tokio::spawn(async move {
                for r in 0..25 {
                    let (host, cap) = HOSTS[(w + r) % HOSTS.len()];
                    let _slot = rule[host].acquire().await.unwrap();
                    let lease = leases.acquire(host, cap).await;
                    if !lease.is_shared() {
                        local.fetch_add(1, Ordering::Relaxed);
                    }
                    let now = in_flight[host].fetch_add(1, Ordering::SeqCst) + 1;
                    most[host].fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    in_flight[host].fetch_sub(1, Ordering::SeqCst);
                    drop(lease);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let most = HOSTS
        .iter()
        .map(|(h, _)| (*h, most[h].load(Ordering::SeqCst)))
        .collect();
    (most, local.load(Ordering::Relaxed))
}

fn two_instances_never_exceed_capacity(server: &RedisServer) {
    let rt = runtime();
    rt.block_on(async {
        let (a, _) = link_to(&server.url()).await;
        let (b, _) = link_to(&server.url()).await;
        let (most, local) = contend(vec![SharedLeases::new(a), SharedLeases::new(b)]).await;
        assert_eq!(local, 0, "every lease was granted by Redis");
        for (host, cap) in HOSTS {
            assert!(
                most[host] <= cap,
                "{host}: {} in flight at once with capacity {cap}",
                most[host]
            );
        }
        assert_eq!(most["host-b"], 2, "host-b's two slots were both used");
    });
    // Releases go out in the background, within a round trip or so.
    let mut c = server.conn();
    for (host, _) in HOSTS {
        let key = synapticllamas::redis::leases::lease_key(host);
        wait_until(
            &format!("{host}: every lease released"),
            Duration::from_secs(5),
            || c.zcard::<_, u32>(&key).unwrap() == 0,
        );
    }
}

#[test]
fn two_instances_on_one_redis_never_exceed_host_capacity() {
    two_instances_never_exceed_capacity(&RedisServer::start());
}

#[test]
fn two_instances_on_a_password_protected_redis_never_exceed_host_capacity() {
    two_instances_never_exceed_capacity(&RedisServer::with_password(PASSWORD));
}

#[test]
fn without_shared_leases_the_same_run_overlaps_on_a_host() {
    // The control: each instance keeps only its own per-host rule.
    runtime().block_on(async {
        let (most, local) = contend(vec![SharedLeases::local(), SharedLeases::local()]).await;
        assert_eq!(local, 100 * 2);
        assert!(
            most["host-a"] >= 2 || most["host-c"] >= 2,
            "two instances overlapped on a one-slot host: {most:?}"
        );
    });
}

/// Run by `kill_9_of_a_holder_frees_its_hosts_within_the_ttl` in a child
/// process: take a lease on each host, say HELD, keep them until killed.
#[test]
#[ignore = "a child process of kill_9_of_a_holder_frees_its_hosts_within_the_ttl"]
fn lease_holder_child() {
    let url = std::env::var("SL_TEST_LEASE_URL").expect("run by the parent test");
    let ttl = Duration::from_millis(
        std::env::var("SL_TEST_LEASE_TTL_MS")
            .unwrap()
            .parse()
            .unwrap(),
    );
    runtime().block_on(async {
        let (link, _) = link_to(&url).await;
        let leases = SharedLeases::with_ttl(link, ttl);
        let mut held = Vec::new();
        for (host, _) in HOSTS {
            let l = leases.try_acquire(host, 1).await.expect("the host is free");
            assert!(l.is_shared());
            held.push(l);
        }
        println!("HELD {}", held.len());
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}

#[test]
fn kill_9_of_a_holder_frees_its_hosts_within_the_ttl() {
    let server = RedisServer::start();
    let ttl = Duration::from_millis(1500);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "redis::lease_holder_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SL_TEST_LEASE_URL", server.url())
        .env("SL_TEST_LEASE_TTL_MS", ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // The harness prints "test … ... " on the same line.
            Ok(l) if l.contains("HELD 3") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the child never held its leases");
            }
        }
    }
    runtime().block_on(async {
        let (link, _) = link_to(&server.url()).await;
        let leases = SharedLeases::with_ttl(link, ttl);
        // While the holder lives, its leases outlive their TTL (it renews them).
        let watch_until = Instant::now() + ttl * 2;
        while Instant::now() < watch_until {
            for (host, _) in HOSTS {
                assert!(
                    leases.try_acquire(host, 1).await.is_none(),
                    "{host} was free while the holder lived"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().unwrap(); // SIGKILL: no release happens
        child.wait().unwrap();
        // Every lease the holder had ends no later than one TTL from now, by
        // Redis's own clock (the score its last renewal set). That the
        // renewals come every TTL/3 and a lease no longer renewed expires a
        // TTL after the last one is `redis::leases`' paused-clock tests.
        let mut c = server.conn();
        let now_ms = redis_now_ms(&mut c);
        for (host, _) in HOSTS {
            let ends = lease_ends_ms(&mut c, host);
            assert!(!ends.is_empty(), "{host}: the holder's lease is not in Redis");
            for end in ends {
                assert!(
                    end <= now_ms + ttl.as_millis() as u64,
                    "{host}: a lease of the dead holder lives until {end} ms, more than a TTL ({ttl:?}) past {now_ms} ms"
                );
            }
        }
        // And the hosts are free again, without any release.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut mine = Vec::new();
        for (host, _) in HOSTS {
            loop {
                if let Some(l) = leases.try_acquire(host, 1).await {
                    mine.push(l);
                    break;
                }
                assert!(Instant::now() < deadline, "{host} was never free again after the kill");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}

/// Redis's clock (`TIME`), in milliseconds.
fn redis_now_ms(c: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(c).unwrap();
    secs * 1000 + micros / 1000
}

/// When each lease on `host` ends (its score: Redis time in ms).
fn lease_ends_ms(c: &mut redis::Connection, host: &str) -> Vec<u64> {
    let flat: Vec<String> = redis::cmd("ZRANGE")
        .arg(synapticllamas::redis::leases::lease_key(host))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(c)
        .unwrap();
    flat.chunks(2)
        .map(|p| p[1].parse::<f64>().unwrap() as u64)
        .collect()
}

#[test]
fn redis_going_away_mid_run_warns_once_continues_locally_and_sharing_resumes() {
    let mut server = RedisServer::start();
    let ttl = Duration::from_millis(1500);
    let rt = runtime();
    let (link, lines) = rt.block_on(link_to(&server.url()));
    let leases = SharedLeases::with_ttl(link.clone(), ttl);
    let counts: Arc<Mutex<(u32, u32)>> = Arc::default(); // (shared, local) grants
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (leases, counts, stop) = (leases.clone(), counts.clone(), stop.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let l = leases.acquire("busy-host", 1).await;
                {
                    let mut c = counts.lock().unwrap();
                    if l.is_shared() {
                        c.0 += 1
                    } else {
                        c.1 += 1
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(l);
            }
        })
    };
    wait_until("shared grants", Duration::from_secs(10), || {
        counts.lock().unwrap().0 >= 20
    });
    server.stop();
    let mut state = link.watch();
    wait_until("the link notices", Duration::from_secs(10), || {
        matches!(*state.borrow_and_update(), LinkState::Reconnecting(_))
    });
    // Acquisitions go on, granted locally.
    let before = counts.lock().unwrap().1;
    wait_until(
        "local grants while Redis is away",
        Duration::from_secs(10),
        || counts.lock().unwrap().1 >= before + 20,
    );
    // A lease taken while Redis is away…
    let held = rt.block_on(leases.try_acquire("held-host", 1)).unwrap();
    assert!(!held.is_shared());
    server.restart();
    wait_until("reconnected", Duration::from_secs(15), || {
        link.is_connected()
    });
    // …is registered again, so another instance sees the host as taken.
    let mut c = server.conn();
    let key = synapticllamas::redis::leases::lease_key("held-host");
    wait_until("the held lease is re-registered", ttl * 3, || {
        c.zcard::<_, u32>(&key).unwrap() == 1
    });
    let (other_link, _) = rt.block_on(link_to(&server.url()));
    let other = SharedLeases::with_ttl(other_link, ttl);
    assert!(rt.block_on(other.try_acquire("held-host", 1)).is_none());
    drop(held);
    rt.block_on(async {
        let got = tokio::time::timeout(Duration::from_secs(5), other.acquire("held-host", 1)).await;
        assert!(got.expect("freed after the drop").is_shared());
    });
    let shared_before = counts.lock().unwrap().0;
    wait_until("shared grants again", Duration::from_secs(10), || {
        counts.lock().unwrap().0 >= shared_before + 20
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(worker).unwrap();
    let lines = lines.lock().unwrap().clone();
    let went = lines.iter().filter(|l| l.contains("went away")).count();
    let back = lines.iter().filter(|l| l.contains("is back")).count();
    assert_eq!(went, 1, "one warning for the outage: {lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("host rule now per instance")),
        "{lines:#?}"
    );
    assert_eq!(back, 1, "{lines:#?}");
}

// ---------------------------------------------------------------- health

#[test]
fn a_node_cooled_by_one_instance_is_cooling_for_all_and_a_recovery_is_seen_by_all() {
    let server = RedisServer::with_password(PASSWORD);
    runtime().block_on(async {
        let (a, _) = link_to(&server.url()).await;
        let (b, _) = link_to(&server.url()).await;
        let (ha, hb) = (SharedHealth::new(a), SharedHealth::new(b));
        let node = "http://127.0.0.1:11434";
        assert_eq!(hb.view(node).await, NodeView::Unknown);
        // Shared coolings end at a `tokio::time::Instant` (the scheduler's clock).
        let cooled = tokio::time::Instant::now();
        ha.report_cooling(node, Duration::from_secs(5), 3, "connection refused");
        let mut seen = NodeView::Unknown;
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen == NodeView::Unknown && Instant::now() < deadline {
            seen = hb.view(node).await;
        }
        let NodeView::Cooling {
            until,
            failures,
            reason,
            ..
        } = seen
        else {
            panic!("B does not see the cooling: {seen:?}");
        };
        assert_eq!(failures, 3);
        assert_eq!(reason, "connection refused");
        assert!(
            until > cooled + Duration::from_secs(4)
                && until <= tokio::time::Instant::now() + Duration::from_secs(5)
        );
        // A shorter, milder report from B keeps the later end and the larger count.
        hb.report_cooling(node, Duration::from_millis(500), 1, "timeout");
        hb.report_recovered("http://other:1"); // queued after the cooling report
        let deadline = Instant::now() + Duration::from_secs(5);
        while hb.view("http://other:1").await == NodeView::Unknown {
            assert!(Instant::now() < deadline);
        }
        match ha.view(node).await {
            NodeView::Cooling {
                failures,
                until: u2,
                ..
            } => {
                assert_eq!(failures, 3);
                assert!(
                    u2 + Duration::from_millis(200) >= until,
                    "the end moved earlier"
                );
            }
            other => panic!("{other:?}"),
        }
        // A recovery seen by B is seen by A, as no older than it is.
        let recovered = Instant::now();
        hb.report_recovered(node);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let NodeView::Recovered { ago, .. } = ha.view(node).await {
                // (PTTL is whole milliseconds.)
                let age = recovered.elapsed() + Duration::from_millis(1);
                assert!(ago <= age, "seen {ago:?} ago, reported {age:?} ago");
                break;
            }
            assert!(Instant::now() < deadline, "A never saw the recovery");
        }
    });
}

// ---------------------------------------------------------------- binary

/// A home whose settings turn Redis on for `server` through the settings keys
/// (host, port, password), with SYNAPTICLLAMAS_REDIS_URL removed.
fn settings_home(server: &RedisServer, extra: Value) -> Home {
    let home = Home::new();
    let mut s = json!({
        "mode": "standard",
        "redis_logging_enabled": true,
        "redis_host": "127.0.0.1",
        "redis_port": server.port,
        "redis_password": server.password,
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    home.write_settings(s.to_string().as_bytes());
    home
}

fn from_settings(home: &Home, args: &[&str]) -> Command {
    let mut c = command(home, args);
    c.env_remove("SYNAPTICLLAMAS_REDIS_URL");
    c
}

fn with_url(home: &Home, args: &[&str], url: &str) -> Command {
    let mut c = command(home, args);
    c.env("SYNAPTICLLAMAS_REDIS_URL", url);
    c
}

#[test]
fn a_backend_registered_in_sollols_key_shape_is_found_by_rpc_discover() {
    let server = RedisServer::with_password(PASSWORD);
    let by_key = TcpListener::bind("127.0.0.1:0").unwrap();
    let by_metadata = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p1, p2) = (
        by_key.local_addr().unwrap().port(),
        by_metadata.local_addr().unwrap().port(),
    );
    let dead = dead_port();
    let mut c = server.conn();
    let info = json!({"has_gpu": true, "gpu_devices": ["cuda:0"], "gpu_vram_mb": [19200],
                      "cpu_ram_mb": 12000, "device_config": "cpu,cuda:0"});
    let _: () = c
        .set_ex(
            format!("sollol:rpc:node:127.0.0.1:{p1}"),
            info.to_string(),
            3600,
        )
        .unwrap();
    let _: () = c
        .set_ex(format!("sollol:rpc:node:127.0.0.1:{dead}"), "{}", 3600)
        .unwrap();
    let _: () = c
        .set(
            "sollol:router:metadata",
            json!({"nodes": [], "rpc_backends": [{"host": "127.0.0.1", "port": p2}]}).to_string(),
        )
        .unwrap();
    let home = settings_home(&server, json!({}));
    let r = run_with(from_settings(&home, &[]), "rpc discover\nnodes\n");
    r.ok()
        .err_has(&format!("🔗 Redis connected: redis://127.0.0.1:{}/0 (from the settings, password set)", server.port))
        .out_has(&format!("✅ Found: 127.0.0.1:{p1} (registered in Redis)"))
        .out_has(&format!("✅ Found: 127.0.0.1:{p2} (registered in Redis)"))
        .err_has(&format!(
            "127.0.0.1:{dead} is registered (sollol:rpc:node:127.0.0.1:{dead}) but does not accept connections: skipped"
        ))
        .out_has("🗄️  Redis: connected");
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(PASSWORD));
    let saved: Vec<String> = home.settings()["rpc_backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}:{}", b["host"].as_str().unwrap(), b["port"]))
        .collect();
    assert_eq!(
        saved,
        vec![format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}")]
    );
}

#[test]
fn rpc_register_keeps_its_key_alive_past_its_ttl_and_removes_it_when_stopped() {
    let mut server = RedisServer::start();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", backend.local_addr().unwrap().port());
    let key = format!("sollol:rpc:node:{addr}");
    let home = Home::new();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = with_url(&home, &["rpc-register", &addr, "--ttl", "1"], &server.url())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut c = server.conn();
        wait_until("the registration", Duration::from_secs(10), || {
            c.exists::<_, bool>(&key).unwrap()
        });
        let first = Instant::now();
        let value: String = c.get(&key).unwrap();
        let v: Value = serde_json::from_str(&value).unwrap();
        for k in [
            "has_gpu",
            "gpu_devices",
            "gpu_vram_mb",
            "cpu_ram_mb",
            "device_config",
            "memory_config",
            "total_parallel_workers",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
        // Three TTLs later it is still there, never older than one TTL.
        while first.elapsed() < Duration::from_secs(3) {
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
            assert!(
                pttl > 0 && pttl <= 1000,
                "PTTL {pttl} at {:?}",
                first.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if sig == libc::SIGTERM {
            // Redis restarted empty: the registration comes back by itself.
            server.restart();
            let mut c = server.conn();
            wait_until(
                "re-registered after a Redis restart",
                Duration::from_secs(15),
                || c.exists::<_, bool>(&key).unwrap(),
            );
        }
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "rpc-register did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "signal {sig}");
        let mut c = server.conn();
        assert!(!c.exists::<_, bool>(&key).unwrap(), "the key was removed");
    }
}

#[test]
fn rpc_register_rejects_a_bad_address_in_one_line() {
    let home = Home::new();
    let r = run_with(command(&home, &["rpc-register", "not a host"]), "");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("❌ rpc-register: `not a host` is not HOST[:PORT]"),
        "{}",
        r.stderr
    );
}

/// `redis-cli SUBSCRIBE` to `channels`; lines arrive on the receiver.
struct Subscriber {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Subscriber {
    fn start(server: &RedisServer, channels: &[&str]) -> Subscriber {
        let mut child = Command::new("redis-cli")
            .args(["-p", &server.port.to_string(), "SUBSCRIBE"])
            .args(channels)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli (Debian's redis-tools) runs");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut s = Subscriber {
            child,
            lines: rx,
            seen: Vec::new(),
        };
        // Three lines per confirmed subscription: subscribe, channel, count.
        s.read_until(Duration::from_secs(10), |seen| {
            seen.len() >= 3 * channels.len()
        });
        s
    }

    fn read_until(&mut self, limit: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("redis-cli saw only:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// (channel, payload) of every message so far.
    fn messages(seen: &[String]) -> Vec<(String, Value)> {
        seen.windows(3)
            .filter(|w| w[0] == "message")
            .filter_map(|w| Some((w[1].clone(), serde_json::from_str(&w[2]).ok()?)))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_cli_subscribe_receives_the_documented_events_from_the_shell() {
    let server = RedisServer::start();
    let mut sub = Subscriber::start(
        &server,
        &[
            events::LOGS_CHANNEL,
            events::RPC_BACKENDS_CHANNEL,
            events::METRICS_CHANNEL,
            events::ROUTING_CHANNEL,
        ],
    );
    let node = sim(SimConfig::default());
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = format!("127.0.0.1:{}", backend.local_addr().unwrap().port());
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&node.url(), "sim-a", "box-a")]));
    home.write_settings(
        json!({"mode": "standard", "model_sharding_enabled": true, "task_distribution_enabled": true})
            .to_string()
            .as_bytes(),
    );
    let script = format!("redis on\nrpc add {baddr}\nWhat is a lighthouse?\nrpc remove {baddr}\n");
    let r = run_with(with_url(&home, &[], &server.url()), &script);
    r.ok().out_has("FINAL ANSWER");
    let want = |m: &[(String, Value)]| {
        let on = |ch: &str, ty: &str| m.iter().any(|(c, v)| c == ch && v["event_type"] == ty);
        on(events::LOGS_CHANNEL, "connect")
            && on(events::RPC_BACKENDS_CHANNEL, "connect")
            && on(events::RPC_BACKENDS_CHANNEL, "disconnect")
            && on(events::METRICS_CHANNEL, "metric")
            && on(events::ROUTING_CHANNEL, "OLLAMA_NODE_SELECTED")
            && on(events::ROUTING_CHANNEL, "ROUTE_DECISION")
    };
    sub.read_until(Duration::from_secs(10), |seen| {
        want(&Subscriber::messages(seen))
    });
    let msgs = Subscriber::messages(&sub.seen);
    let find = |ch: &str, ty: &str| {
        msgs.iter()
            .find(|(c, v)| c == ch && v["event_type"] == ty)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // The original's llama.cpp log event shape.
    let connect = find(events::RPC_BACKENDS_CHANNEL, "connect");
    assert_eq!(connect["component"], "rpc_backend");
    assert_eq!(connect["level"], "info");
    assert_eq!(
        connect["message"],
        format!("RPC backend connected: {baddr}")
    );
    assert_eq!(connect["details"]["backend"], baddr.as_str());
    assert!(connect["timestamp"].as_f64().unwrap() > 1.6e9);
    let gone = find(events::RPC_BACKENDS_CHANNEL, "disconnect");
    assert_eq!(gone["level"], "warning");
    assert_eq!(gone["details"]["reason"], "removed from the configuration");
    let metric = find(events::METRICS_CHANNEL, "metric");
    assert_eq!(metric["component"], "system");
    assert!(metric["details"]["total_execution_time"].as_f64().is_some());
    // SOLLOL's routing event shape.
    let pick = find(events::ROUTING_CHANNEL, "OLLAMA_NODE_SELECTED");
    for k in [
        "timestamp",
        "instance_id",
        "hostname",
        "pid",
        "model",
        "backend",
        "node_url",
        "reason",
    ] {
        assert!(pick.get(k).is_some(), "{k} missing from {pick}");
    }
    assert_eq!(pick["backend"], "ollama");
    assert_eq!(pick["model"], "llama3.2");
    assert_eq!(pick["node_url"], node.url());
    let pid = pick["pid"].as_u64().expect("pid is a number");
    assert!(pick["instance_id"]
        .as_str()
        .unwrap()
        .contains(&format!("_{pid}_")));
    let ts = pick["timestamp"].as_str().unwrap();
    assert!(ts.len() == 26 && &ts[10..11] == "T", "ISO timestamp: {ts}");
    let route = find(events::ROUTING_CHANNEL, "ROUTE_DECISION");
    assert_eq!(route["model"], "llama3.2");
    assert_eq!(route["backend"], "ollama");
    // The stream keeps them too.
    let mut c = server.conn();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(events::ROUTING_STREAM)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let kinds: Vec<String> = entries
        .iter()
        .filter(|(_, fields)| fields.len() == 2 && fields[0] == "event")
        .filter_map(|(_, fields)| serde_json::from_str::<Value>(&fields[1]).ok())
        .map(|v| v["event_type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        kinds.contains(&"OLLAMA_NODE_SELECTED".to_string()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"ROUTE_DECISION".to_string()), "{kinds:?}");
}

#[test]
fn coordinator_start_restart_and_stop_reach_the_coordinator_channel() {
    let server = RedisServer::start();
    let mut sub = Subscriber::start(
        &server,
        &[events::COORDINATOR_CHANNEL, events::LOGS_CHANNEL],
    );
    runtime().block_on(async {
        let (link, _) = link_to(&server.url()).await;
        let publisher = Publisher::new(link);
        let hub = Hub::new();
        let tap: Arc<dyn HubTap> = EventTap::new(publisher.clone());
        hub.set_tap(Some(tap));
        let running =
            |pid: u32, backends: &[&str]| Some(crate::dashboard::coordinator(pid, backends));
        hub.set_coordinator(Some(CoordinatorView {
            url: "http://127.0.0.1:18080".into(),
            status: CoordinatorStatus::NotStarted,
            process: None,
        }));
        hub.set_coordinator(running(41, &["10.77.0.5:50052", "10.77.0.6:50052"]));
        hub.set_coordinator(running(41, &["10.77.0.5:50052", "10.77.0.6:50052"])); // no change
        hub.set_coordinator(running(42, &["10.77.0.5:50052"]));
        hub.set_coordinator(None);
        publisher.flush(Duration::from_secs(5)).await;
        assert_eq!(publisher.dropped(), 0);
    });
    let coord = |seen: &[String]| {
        Subscriber::messages(seen)
            .into_iter()
            .filter(|(c, _)| c == events::COORDINATOR_CHANNEL)
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    sub.read_until(Duration::from_secs(10), |seen| coord(seen).len() >= 4);
    let c = coord(&sub.seen);
    let kinds: Vec<&str> = c
        .iter()
        .map(|v| v["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "stop", "start", "stop"]);
    assert_eq!(
        c[0]["message"],
        "llama.cpp coordinator started on port 18080"
    );
    assert_eq!(c[0]["details"]["backend_count"], 2);
    assert_eq!(
        c[0]["details"]["model_path"],
        "/m/codellama-13b.Q4_K_M.gguf"
    );
    assert_eq!(c[1]["details"]["reason"], "restart");
    assert_eq!(c[2]["details"]["restart"], true);
    assert_eq!(c[2]["details"]["backend_count"], 1);
    assert_eq!(c[3]["details"]["reason"], "stopped");
    let loads: Vec<Value> = Subscriber::messages(&sub.seen)
        .into_iter()
        .filter(|(ch, v)| ch == events::LOGS_CHANNEL && v["event_type"] == "model_load")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(loads.len(), 2, "a model load per start");
    assert_eq!(loads[0]["component"], "model");
    assert_eq!(loads[0]["message"], "Model loaded: codellama-13b.Q4_K_M");
}

#[test]
fn publishing_never_waits_on_a_stalled_redis_it_drops_and_counts() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let (link, _) = link_to(&server.url()).await;
        let publisher = Publisher::new(link);
        unsafe { libc::kill(server.pid() as i32, libc::SIGSTOP) };
        for i in 0..3000 {
            publisher.log(events::LogEvent::new(
                events::Component::System,
                events::Level::Info,
                "metric",
                format!("event {i}"),
            ));
        }
        unsafe { libc::kill(server.pid() as i32, libc::SIGCONT) };
        assert!(
            publisher.dropped() >= 3000 - events::QUEUE as u64 - 1,
            "dropped {} of 3000 with a queue of {}",
            publisher.dropped(),
            events::QUEUE
        );
    });
}

#[test]
fn a_wrong_password_or_an_unreachable_redis_is_one_line_and_the_shell_goes_on() {
    let server = RedisServer::with_password(PASSWORD);
    let home = Home::new();
    let wrong = format!("redis://:not-{PASSWORD}@127.0.0.1:{}/0", server.port);
    let r = run_with(with_url(&home, &[], &wrong), "redis on\nstatus\nrefine 2\n");
    r.failed()
        .out_has("SYSTEM STATUS")
        .out_has("✅ Refinement rounds set to 2");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("Redis at"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].starts_with(&format!(
            "❌ Redis at redis://127.0.0.1:{}/0 (from SYNAPTICLLAMAS_REDIS_URL, password set) refused us:",
            server.port
        )),
        "{}",
        errors[0]
    );
    assert!(
        r.stdout.contains("| Redis ") && r.stdout.contains("error — "),
        "{}",
        r.stdout
    );
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(PASSWORD));

    // No password at all against one that needs it.
    let none = format!("redis://127.0.0.1:{}/0", server.port);
    let r = run_with(with_url(&home, &[], &none), "status\n");
    r.ok().out_has("SYSTEM STATUS");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("Redis at"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].starts_with("❌ ") && errors[0].contains("refused us"),
        "{}",
        errors[0]
    );

    // Nobody listening: a warning, and everything else works.
    let dead = format!("redis://127.0.0.1:{}/0", dead_port());
    let r = run_with(with_url(&home, &[], &dead), "redis on\nstatus\nnodes\n");
    r.ok()
        .out_has("SYSTEM STATUS")
        .out_has("🗄️  Redis: error — ");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("Redis at"))
        .collect();
    assert_eq!(
        errors.len(),
        2,
        "once at start-up, once for `redis on`:\n{}",
        r.stderr
    );
    assert!(errors
        .iter()
        .all(|l| l.starts_with("⚠️  Redis at") && l.contains("is unreachable")));

    // A URL that is not one: named, not echoed.
    let r = run_with(
        with_url(&home, &[], "http://user:pw-in-url@x/"),
        "redis on\n",
    );
    r.failed()
        .err_has("❌ redis: SYNAPTICLLAMAS_REDIS_URL: not a usable Redis URL");
    assert!(!r.stderr.contains("pw-in-url"));

    // The right password from the settings file.
    let ok = settings_home(&server, json!({}));
    let r = run_with(from_settings(&ok, &[]), "status\n");
    r.ok().out_has("connected — redis://127.0.0.1:");
    assert!(!format!("{}{}", r.stdout, r.stderr).contains(PASSWORD));
}

/// The `| Redis … |` row of the next `status`.
fn redis_row(s: &mut Session) -> String {
    s.send("status\n");
    let out = s.until("| Redis ", Duration::from_secs(20));
    out.lines().last().unwrap().to_string()
}

#[test]
fn the_shell_warns_once_when_redis_goes_away_and_rejoins_without_a_restart() {
    let mut server = RedisServer::start();
    let home = Home::new();
    let mut s = Session::spawn(with_url(&home, &[], &server.url()));
    s.send("redis on\n");
    assert!(redis_row(&mut s).contains("connected — "));
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !redis_row(&mut s).contains("reconnecting — ") {
        assert!(Instant::now() < deadline, "status never said reconnecting");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis_row(&mut s).contains("connected — ") {
        assert!(
            Instant::now() < deadline,
            "status never said connected again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, stderr, code) = s.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("went away").count(), 1, "{stderr}");
    assert!(stderr.contains("host rule now per instance"), "{stderr}");
    assert_eq!(stderr.matches("is back").count(), 1, "{stderr}");
}
