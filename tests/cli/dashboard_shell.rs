//! The dashboard and the background monitor as the shell runs them.

use std::time::Duration;

use serde_json::{json, Value};
use synapticllamas::sim::SimConfig;

use crate::support::*;

fn get(url: &str) -> (u16, String) {
    rt().block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = c.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn dashboard_serves_the_shells_nodes_and_counts_its_queries() {
    let (a, b) = (sim(SimConfig::default()), sim(SimConfig::default()));
    let home = Home::new();
    home.write_nodes(&node_file(&[
        entry(&a.url(), "alpha", "A"),
        entry(&b.url(), "beta", "B"),
    ]));
    home.write_settings(br#"{"mode": "distributed"}"#);
    let mut s = Session::spawn(command(&home, &[]));
    s.send("dashboard --port 0\n");
    let line = s.until("Dashboard: http://", Duration::from_secs(20));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "binds loopback by default: {url}"
    );
    let (status, page) = get(&format!("{url}/"));
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");
    let nodes: Value = serde_json::from_str(&get(&format!("{url}/api/nodes")).1).unwrap();
    assert!(
        nodes.to_string().contains("alpha") && nodes.to_string().contains("beta"),
        "{nodes}"
    );
    s.send("hello there\n");
    s.until("Type 'metrics'", Duration::from_secs(60));
    let metrics: Value = serde_json::from_str(&get(&format!("{url}/api/metrics")).1).unwrap();
    assert_eq!(metrics["pipeline"], "standard", "{metrics}");
    let prom = get(&format!("{url}/metrics")).1;
    let count: u64 = prom
        .lines()
        .filter(|l| l.starts_with("synapticllamas_node_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(count, 3, "Researcher, Critic, Editor:\n{prom}");
    s.send("status\ndashboard stop\n");
    s.until("Dashboard stopped", Duration::from_secs(20));
    let (_, _, code) = s.finish();
    assert_eq!(code, 0);
}

#[test]
fn dashboard_argument_errors() {
    let home = Home::new();
    run(&home, &[], "dashboard --bind nowhere\n")
        .failed()
        .err_has("`nowhere` is not an IP address");
    run(&home, &[], "dashboard stop\n")
        .failed()
        .err_has("not running");
    run(&home, &[], "dashboard --port x\n")
        .failed()
        .err_has("not a port number");
}

#[test]
fn monitor_notices_a_node_going_down() {
    let a = sim(SimConfig::default());
    let home = Home::new();
    home.write_nodes(&node_file(&[entry(&a.url(), "alpha", "A")]));
    home.write_settings(json!({"monitor_interval_secs": 1}).to_string().as_bytes());
    let mut s = Session::spawn(command(&home, &[]));
    s.send("nodes\n");
    s.until("1 node on 1 physical host", Duration::from_secs(20));
    a.kill();
    // The next probe (every second) notices it.
    s.until_err("node alpha is down", Duration::from_secs(20));
    let (_, _, code) = s.finish();
    assert_eq!(code, 0);
}

#[test]
fn monitor_notices_an_rpc_backend_going_down() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = backend.local_addr().unwrap().port();
    let home = Home::new();
    home.write_settings(
        json!({"monitor_interval_secs": 1, "rpc_backends": [{"host": "127.0.0.1", "port": port}]})
            .to_string()
            .as_bytes(),
    );
    let mut s = Session::spawn(command(&home, &[]));
    s.send("rpc list\n");
    s.until("Configured RPC Backends", Duration::from_secs(20));
    // The monitor has seen the backend up once its probes' connections are in
    // the listener's queue (two: one probe per second, so at least one of them
    // is the monitor's).
    backend.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    while probes < 2 {
        match backend.accept() {
            Ok(_) => probes += 1,
            Err(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the monitor did not probe the backend twice"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    drop(backend);
    s.until_err(
        &format!("RPC backend 127.0.0.1:{port} is down"),
        Duration::from_secs(20),
    );
    let (_, _, code) = s.finish();
    assert_eq!(code, 0);
}
