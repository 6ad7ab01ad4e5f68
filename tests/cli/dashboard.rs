//! The dashboard module against simulated hosts on 127.0.0.1: JSON endpoints,
//! Prometheus text, the event stream, the monitor.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use synapticllamas::config::nodes_file::NodeEntry;
use synapticllamas::dashboard::{
    self, BackendStatus, BackendView, CoordinatorStatus, CoordinatorView, Dashboard, Hub,
};
use synapticllamas::nodes::health::{probe_all, NoLoad};
use synapticllamas::nodes::Node;
use synapticllamas::ollama::types::GenerateRequest;
use synapticllamas::ollama::{Client, Timeouts};
use synapticllamas::report::Metrics;
use synapticllamas::sim::{SimConfig, SimHost};

use crate::support::*;

pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A node for a simulated host, on its own "machine" `host_id`.
pub fn node_for(sim: &SimHost, name: &str, host_id: &str) -> Arc<Node> {
    Arc::new(Node::new(
        NodeEntry {
            url: sim.url(),
            name: name.into(),
            priority: 0,
            host_id: Some(host_id.into()),
            extra: Default::default(),
        },
        true,
    ))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn start(hub: &Arc<Hub>) -> Dashboard {
    rt().block_on(dashboard::start(hub.clone(), LOCAL, 0))
        .expect("dashboard starts")
}

/// One generation through the client, recorded as the scheduler records it
/// and reported to the hub as the app does.
pub async fn request(client: &Client, hub: &Hub, node: &Node, model: &str) -> bool {
    let req = GenerateRequest {
        model: model.into(),
        prompt: "Why is the sky blue?".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let r = client
        .generate(
            node.url(),
            &req,
            Timeouts::generation(Duration::from_secs(10)),
            |_| {},
        )
        .await;
    let took = started.elapsed();
    let ok = r.is_ok();
    let tps = r.ok().and_then(|c| c.tokens_per_second());
    node.state().record_request(took, ok, tps);
    hub.observe_latency(node.name(), &node.host, took.as_secs_f64());
    ok
}

/// Two simulated hosts ("alpha" on box-a, "beta" on box-b) and a hub showing them.
/// Keep the hosts alive for as long as the nodes are used.
pub fn two_node_hub(vram_fraction: f64) -> (Vec<Arc<SimHost>>, Arc<Hub>, Arc<Node>, Arc<Node>) {
    let cfg = SimConfig {
        reply_words: 20,
        vram_fraction,
        ..Default::default()
    };
    let (a, b) = (sim(cfg.clone()), sim(cfg));
    let (na, nb) = (
        node_for(&a, "alpha", "box-a"),
        node_for(&b, "beta", "box-b"),
    );
    let hub = Arc::new(Hub::new());
    hub.set_nodes(vec![na.clone(), nb.clone()]);
    (vec![a, b], hub, na, nb)
}

/// A coordinator this process runs, on 127.0.0.1:18080.
pub(crate) fn coordinator(pid: u32, backends: &[&str]) -> CoordinatorView {
    CoordinatorView {
        url: "http://127.0.0.1:18080".into(),
        status: CoordinatorStatus::Running,
        process: Some(dashboard::CoordinatorProcess {
            pid: Some(pid),
            model: Some("/m/codellama-13b.Q4_K_M.gguf".into()),
            backends: backends.iter().map(|b| b.to_string()).collect(),
            log: None,
        }),
    }
}

/// An RPC backend as the page shows it.
pub(crate) fn backend(
    address: &str,
    status: BackendStatus,
    requests: u64,
    success_rate: Option<f64>,
    avg_latency_ms: Option<f64>,
) -> BackendView {
    BackendView {
        address: address.into(),
        status,
        checked_ms: None,
        requests,
        success_rate,
        avg_latency_ms,
    }
}

async fn get_json(url: String) -> Value {
    let r = http().get(&url).send().await.expect("GET answers");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("JSON body")
}

#[test]
fn json_endpoints_and_prometheus_reflect_simulated_nodes() {
    let (_hosts, hub, na, nb) = two_node_hub(0.5);
    hub.set_coordinator(Some(coordinator(42, &[])));
    hub.set_backends(vec![backend(
        "127.0.0.1:50052",
        BackendStatus::Up,
        3,
        Some(1.0),
        None,
    )]);
    hub.set_metrics(Metrics {
        total_execution_time: 1.5,
        hosts_used: 2,
        ..Default::default()
    });
    let client = Client::default();
    rt().block_on(async {
        for _ in 0..3 {
            assert!(request(&client, &hub, &na, "llama3.2").await);
        }
        assert!(request(&client, &hub, &nb, "qwen2.5:0.5b").await);
        assert!(!request(&client, &hub, &nb, "no-such-model").await);
        assert!(probe_all(&client, &[na.clone(), nb.clone()], true, &NoLoad)
            .await
            .iter()
            .all(|r| r.ok));
    });
    let d = start(&hub);
    let base = d.url();
    rt().block_on(async {
        let nodes = get_json(format!("{base}api/nodes")).await;
        let (ja, jb) = (&nodes[0], &nodes[1]);
        assert_eq!(ja["name"], "alpha");
        assert_eq!(ja["host"], "box-a");
        assert_eq!(ja["status"], "up");
        assert_eq!(ja["requests"], 3);
        assert_eq!(ja["errors"], 0);
        assert!(ja["avg_latency_ms"].as_f64().unwrap() > 0.0);
        assert!(ja["tokens_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(ja["models"], json!(["llama3.2:latest", "qwen2.5:0.5b"]));
        assert_eq!(ja["loaded"][0]["name"], "llama3.2:latest");
        assert!((ja["vram_share"].as_f64().unwrap() - 0.5).abs() < 1e-6);
        assert_eq!((jb["requests"].clone(), jb["errors"].clone()), (json!(2), json!(1)));

        let backends = get_json(format!("{base}api/backends")).await;
        assert_eq!(backends[0]["address"], "127.0.0.1:50052");
        assert_eq!(get_json(format!("{base}api/coordinator")).await["pid"], 42);
        assert_eq!(get_json(format!("{base}api/metrics")).await["hosts_used"], 2);

        let r = http().get(format!("{base}metrics")).send().await.unwrap();
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = r.text().await.unwrap();
        for line in [
            "synapticllamas_node_requests_total{node=\"alpha\",host=\"box-a\"} 3\n",
            "synapticllamas_node_errors_total{node=\"beta\",host=\"box-b\"} 1\n",
            "synapticllamas_node_up{node=\"alpha\",host=\"box-a\"} 1\n",
            "synapticllamas_request_latency_seconds_bucket{node=\"alpha\",host=\"box-a\",le=\"+Inf\"} 3\n",
            "synapticllamas_request_latency_seconds_count{node=\"beta\",host=\"box-b\"} 2\n",
            "synapticllamas_coordinator_up 1\n",
            "synapticllamas_rpc_backend_up{address=\"127.0.0.1:50052\"} 1\n",
        ] {
            assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
        }

        let page = http().get(&base).send().await.unwrap().text().await.unwrap();
        for id in ["nodes-section", "coordinator-section", "backends-section", "routing-section"] {
            assert!(page.contains(id), "page lacks {id}");
        }
        let js = http().get(format!("{base}dashboard.js")).send().await.unwrap();
        assert!(js.headers()["content-type"].to_str().unwrap().contains("javascript"));

        // Bound to loopback, a request for some other host name is refused (DNS rebinding).
        let r = http()
            .get(format!("{base}api/nodes"))
            .header("Host", "attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 421);
    });
    // Dropping the dashboard stops it too.
    let addr = d.addr();
    drop(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} still in use after drop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next `snapshot` event's JSON from an SSE body.
async fn next_snapshot(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(event.contains("event: snapshot"), "{event}");
                return serde_json::from_str(data).expect("snapshot is JSON");
            }
            continue; // a keep-alive comment
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("a snapshot within 10 s")
            .expect("the stream goes on")
            .expect("no error in the stream");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[test]
fn event_stream_pushes_a_snapshot_after_each_change() {
    let a = sim(SimConfig::default());
    let n = node_for(&a, "alpha", "box-a");
    let hub = Arc::new(Hub::new());
    hub.set_nodes(vec![n.clone()]);
    let d = start(&hub);
    let url = format!("{}api/events", d.url());
    rt().block_on(async {
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        let first = next_snapshot(&mut body, &mut buf).await;
        assert_eq!(first["nodes"][0]["requests"], 0);

        // A hub change (a task of a running query, a routing decision).
        hub.task_started("Researcher", "alpha");
        hub.routing("Researcher → alpha", "only host with the model loaded");
        let mut s = next_snapshot(&mut body, &mut buf).await;
        while s["routing"].as_array().unwrap().is_empty() {
            s = next_snapshot(&mut body, &mut buf).await;
        }
        assert_eq!(s["tasks"][0]["node"], "alpha");
        assert_eq!(s["routing"][0]["reason"], "only host with the model loaded");

        // A request recorded on the node, reported to the hub.
        assert!(request(&Client::default(), &hub, &n, "llama3.2").await);
        let s = next_snapshot(&mut body, &mut buf).await;
        assert_eq!(s["nodes"][0]["requests"], 1);

        // A counter changed behind the hub's back still shows, by polling
        // (that it takes one `POLL` is `dashboard::server`'s paused-clock test).
        n.state()
            .record_request(Duration::from_millis(5), false, None);
        let s = next_snapshot(&mut body, &mut buf).await;
        assert_eq!(s["nodes"][0]["errors"], 1);
    });
    // Stopping ends open streams and frees the port.
    let addr = rt().block_on(async {
        let addr = d.addr();
        tokio::time::timeout(Duration::from_secs(5), d.stop())
            .await
            .expect("stop returns despite an open event stream");
        addr
    });
    std::net::TcpListener::bind(addr).expect("the port is free after stop");
}

#[test]
fn monitor_reports_a_node_going_down_and_coming_back() {
    let port = dead_port();
    let a = sim_ports(&[port], SimConfig::default());
    let n = node_for(&a, "alpha", "box-a");
    let hub = Arc::new(Hub::new());
    hub.set_nodes(vec![n.clone()]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let monitor = {
        let _guard = rt().enter();
        dashboard::spawn_monitor(
            hub.clone(),
            Client::new(Duration::from_millis(500)),
            vec![n.clone()],
            Duration::from_millis(100),
            move |line| {
                let _ = tx.send(line);
            },
        )
    };
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a report within 10 s")
                .unwrap()
        })
    };
    // Up at first: nothing to report, but the state is fresh.
    let deadline = Instant::now() + Duration::from_secs(5);
    while n.state().models.is_empty() {
        assert!(Instant::now() < deadline, "the monitor never probed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rx.try_recv().is_err());

    a.kill();
    let down = next(&mut rx);
    assert!(down.starts_with("⚠️ node alpha is down"), "{down}");
    // Nothing listens any more: the node cools down (re-probed with a backoff).
    assert_eq!(hub.node_views()[0].status, "cooling");

    // The same address answers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let _b = loop {
        match rt().block_on(SimHost::start(
            "again",
            LOCAL,
            &[port],
            SimConfig::default(),
        )) {
            Ok(h) => break h,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot listen on {port} again: {e}"),
        }
    };
    assert_eq!(next(&mut rx), "✅ node alpha is back");
    assert_eq!(hub.node_views()[0].status, "up");
    let notices = hub.snapshot().notices;
    assert_eq!(notices.len(), 2, "{notices:?}");
    monitor.abort();
}
