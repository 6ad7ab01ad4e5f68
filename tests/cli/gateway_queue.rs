//! The host rule across clients: every HTTP client and the shell's own queries
//! wait in one host-aware line. At most one request per physical host at a
//! time (the simulated hosts count what they had in flight), a client that
//! goes away frees its slot at once, a full line turns new requests away with
//! 503 and Retry-After while the admitted ones are all answered, and a stop
//! lets the requests in flight finish.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use synapticllamas::sim::{SimConfig, SimHost};

use crate::gateway_support::*;
use crate::support::*;

/// A host whose replies take about `words / tps` seconds.
fn paced(words: usize, tps: f64) -> std::sync::Arc<SimHost> {
    sim(SimConfig {
        reply_words: words,
        tokens_per_sec: tps,
        ..Default::default()
    })
}

/// `curl -N` streaming a generation, as a child process whose stdout lines arrive on a channel.
fn streaming_client(url: &str, prompt: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new("curl")
        .args(["-sS", "-N", "--noproxy", "*"])
        .arg(format!("{url}/api/generate"))
        .arg("-d")
        .arg(format!(r#"{{"model":"llama3.2","prompt":"{prompt}"}}"#))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs");
    let rx = lines_of(c.stdout.take().unwrap());
    (c, rx)
}

/// `streaming_client`, once the first line of its reply arrived (within 10 s).
fn begun_client(url: &str, prompt: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let (c, rx) = streaming_client(url, prompt);
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the reply to {prompt:?} has not begun: {e}"));
    (c, rx)
}

/// Every line a streaming client printed until it ended.
fn drain(rx: &std::sync::mpsc::Receiver<String>, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(serde_json::from_str(&l).unwrap()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(_) => panic!("the stream did not end within {limit:?}"),
        }
    }
}

#[test]
fn twelve_clients_on_three_hosts_never_put_two_requests_on_one_host() {
    let hosts: Vec<_> = (0..3).map(|_| paced(20, 150.0)).collect();
    let members: Vec<Member> = hosts
        .iter()
        .zip(["a", "b", "c"])
        .map(|(h, n)| (h, n, n))
        .collect();
    let home = home_with(&members);
    let g = Served::start(&home, &[]);
    let answers = concurrent_chats(&g.url, 12, 1);
    let distinct: std::collections::HashSet<&str> = answers
        .iter()
        .map(|a| a.split(" — ").next().unwrap_or_default())
        .collect();
    assert_eq!(distinct.len(), 12, "each client got its own answer");
    let stats: Vec<_> = hosts.iter().map(|h| h.stats()).collect();
    assert_eq!(
        stats.iter().map(|s| s.requests).sum::<u64>(),
        12,
        "{stats:?}"
    );
    for s in &stats {
        assert_eq!(
            s.max_in_flight, 1,
            "one request at a time per host: {stats:?}"
        );
        assert!(s.requests >= 2, "every host did its share: {stats:?}");
    }
}

#[test]
fn two_nodes_on_one_machine_never_run_at_once() {
    let shared = sim_ports(
        &[0, 0],
        SimConfig {
            reply_words: 20,
            tokens_per_sec: 200.0,
            ..Default::default()
        },
    );
    let home = home_with(&[(&shared, "gpu0", "one-box")]);
    let g = Served::start(&home, &[]);
    let cluster = get_json(&format!("{}/api/cluster", g.url));
    assert_eq!(cluster["hosts"].as_array().unwrap().len(), 1, "{cluster}");
    assert_eq!(cluster["hosts"][0]["nodes"].as_array().unwrap().len(), 2);
    let script = r#"
import sys, threading, ollama
url, done = sys.argv[1], []
def client(i):
    done.append(ollama.Client(host=url).generate(model="llama3.2", prompt=f"q{i}").done)
ts = [threading.Thread(target=client, args=(i,)) for i in range(6)]
for t in ts: t.start()
for t in ts: t.join()
assert done == [True] * 6, done
print("ok")
"#;
    python_ok(script, &[&g.url]);
    let s = shared.stats();
    assert_eq!(s.requests, 6);
    assert_eq!(s.max_in_flight, 1, "two listeners, one machine: {s:?}");
}

#[test]
fn a_client_that_goes_away_frees_its_slot_at_once() {
    let slow = paced(200, 20.0);
    let home = home_with(&[(&slow, "only", "box")]);
    let g = Served::start(&home, &[]);
    let (mut a, _a_lines) = begun_client(&g.url, "first");
    let (mut b, b_lines) = streaming_client(&g.url, "second");
    wait_until(
        "the second client waits in line",
        Duration::from_secs(5),
        || queue_depth(&g.url) == 1,
    );
    assert_eq!(slow.stats().requests, 1, "the second waits for the host");
    // A third client waits too, then gives up while still in line.
    let (mut c, _c_lines) = streaming_client(&g.url, "third");
    wait_until(
        "the third client waits in line",
        Duration::from_secs(5),
        || queue_depth(&g.url) == 2,
    );
    c.kill().unwrap();
    c.wait().unwrap();
    wait_until("the third leaves the line", Duration::from_secs(10), || {
        queue_depth(&g.url) == 1
    });

    // The first client goes away mid-reply (its reply would take about 10 s
    // more): the second starts on the host while the first's reply is
    // unfinished, so the slot was handed on when the client went, not when
    // the node finished. (That the hand-over takes no time at all is the
    // scheduler's `a_freed_slot_is_handed_on_without_any_time_passing`, on
    // a paused clock.)
    a.kill().unwrap();
    a.wait().unwrap();
    wait_until(
        "the second request reaches the host",
        Duration::from_secs(30),
        || slow.stats().requests >= 2,
    );
    assert_eq!(
        slow.stats().completed,
        0,
        "the second request started only once the first reply had ended on the node"
    );
    // The abandoned request was cancelled on the node too (only the second runs there).
    wait_until(
        "the first request ends on the node",
        Duration::from_secs(2),
        || slow.stats().in_flight == 1,
    );
    b_lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the second client's reply begins");
    b.kill().unwrap();
    b.wait().unwrap();
    wait_until(
        "three clients counted as gone",
        Duration::from_secs(5),
        || {
            let (_, m) = curl(&[&format!("{}/metrics", g.url)]);
            m.contains("synapticllamas_gateway_disconnects_total 3")
        },
    );
}

#[test]
fn a_full_line_gets_503_with_retry_after_and_no_admitted_request_is_lost() {
    let slow = paced(30, 30.0);
    let home = home_with(&[(&slow, "only", "box")]);
    let g = Served::start(&home, &["--max-queue", "2"]);
    let (_a, a_lines) = begun_client(&g.url, "one");
    let (_b, b_lines) = streaming_client(&g.url, "two");
    let (_c, c_lines) = streaming_client(&g.url, "three");
    wait_until("two requests wait", Duration::from_secs(5), || {
        queue_depth(&g.url) == 2
    });
    let (_, out) = curl(&[
        "-D",
        "-",
        &format!("{}/api/generate", g.url),
        "-d",
        r#"{"model":"llama3.2","prompt":"four"}"#,
    ]);
    let (headers, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(headers.starts_with("HTTP/1.1 503"), "{headers}");
    let retry: u64 = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(|v| v.trim().to_string())
        })
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v["error"],
        "server busy, please try again.  maximum pending requests exceeded"
    );
    // Every admitted request is answered in full.
    let first = drain(&a_lines, Duration::from_secs(30));
    for lines in [
        first,
        drain(&b_lines, Duration::from_secs(30)),
        drain(&c_lines, Duration::from_secs(30)),
    ] {
        assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
        assert!(lines.iter().all(|l| l.get("error").is_none()));
    }
    assert_eq!(slow.stats().requests, 3);
    assert_eq!(slow.stats().max_in_flight, 1);
    let (_, m) = curl(&[&format!("{}/metrics", g.url)]);
    assert!(m.contains("synapticllamas_gateway_rejected_total 1"), "{m}");
}

#[test]
fn sigterm_lets_the_requests_in_flight_finish_then_exits_0() {
    let slow = paced(30, 40.0);
    let home = home_with(&[(&slow, "only", "box")]);
    let g = Served::start(&home, &[]);
    let (_a, lines) = begun_client(&g.url, "finish me");
    g.signal(libc::SIGTERM);
    let rest = drain(&lines, Duration::from_secs(30));
    assert_eq!(rest.last().unwrap()["done"], true, "{rest:?}");
    let (code, stderr) = g.wait(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("🛑 SIGTERM: no new connections; 1 request(s) in flight"),
        "{stderr}"
    );
    assert!(stderr.contains("👋 Gateway stopped"), "{stderr}");
    assert!(
        stderr.contains("POST /api/generate llama3.2 → only (box) 200"),
        "the request was logged: {stderr}"
    );
}

#[test]
fn a_reply_still_running_after_the_drain_deadline_ends_with_an_error_line() {
    let slow = paced(200, 10.0);
    let home = home_with(&[(&slow, "only", "box")]);
    let g = Served::start(&home, &["--drain", "1"]);
    let (_a, lines) = begun_client(&g.url, "too long");
    g.signal(libc::SIGINT);
    let rest = drain(&lines, Duration::from_secs(15));
    let last = rest.last().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down"),
        "{rest:?}"
    );
    let (code, stderr) = g.wait(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    // Cut at the drain deadline, not run to its end (about 20 s).
    assert_eq!(slow.stats().completed, 0, "the reply ran to its end");
    assert!(stderr.contains("ended with an error line"), "{stderr}");
}

#[test]
fn the_shells_queries_and_http_clients_share_one_queue() {
    let one = paced(30, 300.0);
    let home = home_with(&[(&one, "only", "box")]);
    let mut s = Session::spawn(command(&home, &[]));
    s.send("serve --port 0\n");
    let line = s.until("Gateway listening on ", Duration::from_secs(30));
    let url = line
        .lines()
        .last()
        .unwrap()
        .split("Gateway listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // HTTP clients keep the host busy while the shell asks its own question.
    let clients: Vec<_> = (0..4)
        .map(|i| streaming_client(&url, &format!("http client {i}")))
        .collect();
    s.send("What is a tide?\n");
    s.until("Type 'metrics'", Duration::from_secs(60));
    for (mut c, rx) in clients {
        let lines = drain(&rx, Duration::from_secs(60));
        assert_eq!(lines.last().unwrap()["done"], true);
        c.wait().unwrap();
    }
    let st = one.stats();
    assert!(
        st.requests >= 4 + 3,
        "the shell's agents and the clients all ran: {st:?}"
    );
    assert_eq!(st.max_in_flight, 1, "one queue for both: {st:?}");
    s.send("serve stop\n");
    s.until("✅ Gateway stopped", Duration::from_secs(30));
    let (ok, _) = curl(&["--max-time", "2", &format!("{url}/")]);
    assert!(!ok, "nothing listens after `serve stop`");
    s.send("exit\n");
    let (_, _, code) = s.finish();
    assert_eq!(code, 0);
}
