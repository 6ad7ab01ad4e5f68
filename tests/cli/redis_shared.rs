//! Several shells on the same machines keep the host rule and the health view
//! together through a real `redis-server`: at most one request per host across
//! both (and two at once without Redis, so the test can fail), a `kill -9`'d
//! shell's hosts free again within the lease TTL, Redis going away and coming
//! back costs no query, and a node one shell cooled is cooling for the other.
//! A shell and a gateway (`serve`) share the host rule the same way.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use redis::Commands;
use serde_json::json;
use synapticllamas::sim::{Fault, SimConfig, SimHost};

use crate::gateway_support::{concurrent_chats, Served};
use crate::redis_support::{wait_until, RedisServer};
use crate::support::*;

/// A home listing `hosts` (node-1.. on h1..), distributed mode, Redis on when
/// `redis` is given.
fn home_for(hosts: &[Arc<SimHost>], redis: Option<&RedisServer>) -> Home {
    let mut s = json!({"mode": "distributed", "agent_timeout": 60});
    if let Some(r) = redis {
        s["redis_logging_enabled"] = json!(true);
        s["redis_host"] = json!("127.0.0.1");
        s["redis_port"] = json!(r.port);
        s["redis_password"] = json!(r.password);
    }
    nodes_home(&hosts.iter().collect::<Vec<_>>(), s)
}

/// The shell, with Redis taken from the settings file only.
fn shell(home: &Home, args: &[&str]) -> Command {
    let mut c = command(home, args);
    c.env_remove("SYNAPTICLLAMAS_REDIS_URL");
    c
}

/// Two shells run `script` at the same moment; (stdout, stderr) of each, both ok.
fn two_shells_at_once(a: &Home, b: &Home, script: &str) {
    let runs: Vec<_> = [a, b]
        .iter()
        .map(|h| {
            let c = shell(h, &[]);
            let script = script.to_string();
            std::thread::spawn(move || run_with(c, &script))
        })
        .collect();
    for r in runs {
        let r = r.join().unwrap();
        r.ok().out_has("FINAL ANSWER");
    }
}

#[test]
fn two_shells_on_one_redis_keep_one_request_per_host_and_without_redis_they_do_not() {
    let server = RedisServer::start();
    let script = format!("{REPORT}\n{REPORT}\n");
    // With Redis: two shells, the same three hosts, the same moment.
    let hosts: Vec<_> = (0..3).map(|_| sim(paced_at(300.0))).collect();
    let (a, b) = (
        home_for(&hosts, Some(&server)),
        home_for(&hosts, Some(&server)),
    );
    two_shells_at_once(&a, &b, &script);
    let shared: Vec<u64> = hosts.iter().map(|h| h.stats().max_in_flight).collect();
    let served: u64 = hosts.iter().map(|h| h.stats().completed).sum();
    assert!(served >= 24, "both shells' requests were served ({served})");
    assert!(
        shared.iter().all(|m| *m <= 1),
        "with Redis, a host ran two requests at once: max in flight {shared:?}"
    );
    // Without Redis: the same run on fresh hosts overlaps on some host.
    let hosts: Vec<_> = (0..3).map(|_| sim(paced_at(300.0))).collect();
    let (a, b) = (home_for(&hosts, None), home_for(&hosts, None));
    two_shells_at_once(&a, &b, &script);
    let alone: Vec<u64> = hosts.iter().map(|h| h.stats().max_in_flight).collect();
    assert!(
        alone.iter().any(|m| *m >= 2),
        "without Redis the shells should have overlapped on a host: {alone:?}"
    );
}

#[test]
fn a_killed_shells_host_is_used_again_within_the_lease_ttl() {
    let server = RedisServer::start();
    // One slow host: the first shell holds its only slot for a long time.
    let host = sim(paced_at(20.0));
    let hosts = vec![host.clone()];
    let a = home_for(&hosts, Some(&server));
    let mut holder = shell(&a, &[]).spawn().expect("the first shell starts");
    // stdin stays open until the kill, so the shell has no reason to end.
    let mut stdin = holder.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, format!("{REPORT}\n").as_bytes()).unwrap();
    wait_until("the first shell's request", Duration::from_secs(20), || {
        host.stats().in_flight > 0
    });
    let mut c = server.conn();
    wait_until(
        "the first shell's lease in Redis",
        Duration::from_secs(20),
        || !lease_ends_ms(&mut c).is_empty(),
    );
    // SIGKILL: no release, the lease only expires.
    holder.kill().unwrap();
    holder.wait().unwrap();
    drop(stdin);
    // It ends no later than one lease TTL (10 s) from now, by Redis's clock:
    // the score its last renewal set.
    let now_ms = redis_now_ms(&mut c);
    for end in lease_ends_ms(&mut c) {
        assert!(
            end <= now_ms + LEASE_TTL.as_millis() as u64,
            "the dead shell's lease lives until {end} ms, more than a TTL past {now_ms} ms"
        );
    }
    let before = host.stats().requests;
    let b = home_for(&hosts, Some(&server));
    host.set_config(paced_at(2000.0));
    let second = std::thread::spawn(move || run_with(shell(&b, &["-i", "hello there"]), ""));
    wait_until(
        "the second shell's first request on the host",
        Duration::from_secs(60),
        || host.stats().requests > before,
    );
    let r = second.join().unwrap();
    r.ok();
}

/// The shells' lease TTL (`redis::leases::DEFAULT_TTL`).
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Redis's clock (`TIME`), in milliseconds.
fn redis_now_ms(c: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(c).unwrap();
    secs * 1000 + micros / 1000
}

/// When each lease on the one host h1 ends (its score: Redis time in ms).
fn lease_ends_ms(c: &mut redis::Connection) -> Vec<u64> {
    let flat: Vec<String> = redis::cmd("ZRANGE")
        .arg(synapticllamas::redis::leases::lease_key("h1"))
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
fn redis_going_away_mid_session_costs_no_query_and_sharing_resumes() {
    let mut server = RedisServer::start();
    let hosts: Vec<_> = (0..3).map(|_| sim(paced_at(600.0))).collect();
    let home = home_for(&hosts, Some(&server));
    let mut s = Session::spawn(shell(&home, &[]));
    s.until_err("Redis connected", Duration::from_secs(10));
    s.send(&format!("{REPORT}\n"));
    s.until("Type 'metrics'", Duration::from_secs(60));
    server.stop();
    s.send(&format!("{REPORT}\n"));
    s.until("Type 'metrics'", Duration::from_secs(60));
    server.restart();
    s.until_err("is back", Duration::from_secs(20));
    s.send(&format!("{REPORT}\nstatus\n"));
    let status = s.until("Redis", Duration::from_secs(60));
    assert!(status.contains("connected"), "{status}");
    let (_, stderr, code) = s.finish();
    assert_eq!(code, 0, "every query succeeded\n{stderr}");
    assert_eq!(
        stderr.matches("host rule now per instance").count(),
        1,
        "one warning for the outage\n{stderr}"
    );
}

#[test]
fn a_node_one_shell_cooled_is_cooling_for_another() {
    let server = RedisServer::start();
    let bad = sim(SimConfig {
        fault: Fault::Http500,
        ..paced_at(800.0)
    });
    // The first shell knows only node-1: two errors in a row cool it.
    let a = home_for(std::slice::from_ref(&bad), Some(&server));
    let r = run_with(shell(&a, &[]), &format!("{REPORT}\n"));
    assert!(
        r.stderr.contains("node-1 cooled down"),
        "the first shell did not cool node-1:\n{}",
        r.stderr
    );
    // node-1 works again, but another shell started within its cool-down (5 s)
    // leaves it alone: the cooling is shared.
    bad.set_config(paced_at(800.0));
    let before = bad.stats().requests;
    let b = home_for(&[bad.clone(), sim(paced_at(800.0))], Some(&server));
    let r2 = run_with(shell(&b, &[]), &format!("{REPORT}\n"));
    r2.ok().out_has("FINAL ANSWER");
    // The shared cooling still held when the second run ended (else leaving
    // node-1 alone would prove nothing).
    let state: Option<String> = server
        .conn()
        .hget(format!("synapticllamas:health:{}", bad.url()), "state")
        .unwrap();
    assert_eq!(
        state.as_deref(),
        Some("cooling"),
        "the cool-down ended before the second run did; the check proves nothing"
    );
    assert_eq!(
        bad.stats().requests,
        before,
        "the second shell sent requests to a node the first one cooled\n{}",
        r2.stderr
    );
}

/// A shell's long-form query and six HTTP clients of a gateway (another
/// process) at the same moment, on the same three hosts; the highest number of
/// requests any host ran at once.
fn shell_and_gateway_at_once(redis: Option<&RedisServer>) -> Vec<u64> {
    let hosts: Vec<_> = (0..3).map(|_| sim(paced_at(300.0))).collect();
    let g = Served::start_with(shell(&home_for(&hosts, redis), &[]), &[]);
    let url = g.url.clone();
    let clients = std::thread::spawn(move || concurrent_chats(&url, 6, 4));
    // The gateway's clients are at work before the shell asks (a slow Python
    // start-up on a loaded machine would otherwise let the shell run alone).
    wait_until(
        "the gateway's clients reach a host",
        Duration::from_secs(60),
        || hosts.iter().any(|h| h.stats().in_flight > 0),
    );
    let home = home_for(&hosts, redis);
    let r = run_with(shell(&home, &[]), &format!("{REPORT}\n"));
    r.ok().out_has("FINAL ANSWER");
    clients.join().unwrap();
    hosts.iter().map(|h| h.stats().max_in_flight).collect()
}

#[test]
fn a_shell_and_a_gateway_on_one_redis_keep_one_request_per_host() {
    let server = RedisServer::start();
    let shared = shell_and_gateway_at_once(Some(&server));
    assert!(
        shared.iter().all(|m| *m <= 1),
        "with Redis, a host ran a shell's and a gateway's request at once: max in flight {shared:?}"
    );
    let alone = shell_and_gateway_at_once(None);
    assert!(
        alone.iter().any(|m| *m >= 2),
        "without Redis the shell and the gateway should have overlapped on a host: {alone:?}"
    );
}
